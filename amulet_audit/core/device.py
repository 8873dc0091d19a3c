"""Where the audit's models compute (`--device cpu|cuda|auto`).

One rule keeps every attack and defense device-agnostic: the audit's own arithmetic (attack iterates, random
draws, per-record statistics) works on CPU tensors, and the models' weights live on the chosen device. A module
an attack or defense calls is wrapped by `placed`, which moves each input batch to the device and the output back
to the input's device, so that gradients flow through both moves and the model's forward and backward passes run
where its weights are. Trainers (`training.loop`, `training.reference`, DP-SGD) move their batches themselves.
Random draws stay on the CPU generators seeded from the audit's seed, so a GPU run draws the same numbers as a CPU
run and its results differ only by floating-point rounding, except where a draw happens on the device (the Dropout
masks of reference models trained together through `torch.func.vmap`, DP-SGD's noise, which Opacus draws where the
gradients are), whose values then come from the device's generator, seeded the same way.

The device is one per process: the CLI sets it (`use`), and a worker process sets it from its job's inputs.
torch is imported inside the functions.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from amulet_audit.core.errors import InputError

CHOICES = ("auto", "cpu", "cuda")

_current = "cpu"


def resolve(choice: str) -> str:
    """The torch device name for `--device choice`: "cpu"; "cuda" (or "cuda:N") when torch sees that GPU; "auto":
    "cuda" when torch sees a GPU, else "cpu". Raises InputError (one sentence, the flag and the fix) for a GPU
    torch cannot use or an unknown name."""
    import torch

    text = str(choice).strip().lower()
    if text == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if text == "cpu":
        return "cpu"
    if text == "cuda" or text.startswith("cuda:"):
        index = text.partition(":")[2]
        if not gpu_name(text):
            raise InputError(f"--device {choice}: write a GPU as cuda or cuda:N (N its index, from 0).")
        if not torch.cuda.is_available():
            why = ("this torch build has no CUDA support" if torch.version.cuda is None
                   else "torch sees no CUDA GPU on this machine")
            raise InputError(f"--device {choice}: {why}; use --device cpu, or auto to use a GPU only where there "
                             "is one.")
        if index and int(index) >= torch.cuda.device_count():
            raise InputError(f"--device {choice}: this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                             f"numbered from 0; pick one of them.")
        return text
    raise InputError(f"--device {choice}: not a device; use one of {', '.join(CHOICES)} (or cuda:N).")


def gpu_name(text: str) -> bool:
    """Whether `text` names a GPU as torch spells it: "cuda", or "cuda:N" with N an index written without leading
    zeros."""
    return re.fullmatch(r"cuda(:(0|[1-9][0-9]*))?", text) is not None


def describe(device: str) -> str:
    """`device` for results and the report: "cpu", or the GPU's name after it ("cuda:0 (NVIDIA H200)")."""
    if device == "cpu":
        return "cpu"
    import torch

    index = torch.device(device).index or 0
    return f"cuda:{index} ({torch.cuda.get_device_name(index)})"


def use(device: str) -> None:
    """Make `device` (a name `resolve` returned) this process's device."""
    global _current
    _current = device


def current() -> str:
    """This process's device name ("cpu" unless `use` said otherwise)."""
    return _current


def on_cpu() -> bool:
    return _current == "cpu"


def to_device(t):
    """Tensor `t` on this process's device (itself when it is there already)."""
    return t if on_cpu() else t.to(_current)


def rng_devices() -> list[int]:
    """The CUDA devices whose generator `torch.random.fork_rng` must save and restore around draws made on this
    process's device: none on the CPU."""
    import torch

    return [] if not _current.startswith("cuda") else [torch.device(_current).index or 0]


def generator(seed: int):
    """A torch.Generator on this process's device, seeded with `seed`: for draws a library makes on the device
    (e.g. Opacus' noise, drawn where the gradients are)."""
    import torch

    return torch.Generator(device=_current).manual_seed(int(seed))


def placed(module: Any) -> Any:
    """`module` with its weights on this process's device, called with and returning tensors on the caller's
    device: on the CPU, `module` itself; else the module moved there (in place) inside a wrapper that moves each
    input batch there and the output back, gradients flowing through both moves. Placing a placed module returns
    it. A module without weights of its own (an estimator, an ONNX graph or a service read through a module) is
    returned as it is: it runs where its library runs."""
    import torch

    wrapper = _placed_class()
    if on_cpu() or isinstance(module, wrapper) or not isinstance(module, torch.nn.Module):
        return module
    if next(iter(module.parameters()), None) is None and next(iter(module.buffers()), None) is None:
        return module
    return wrapper(module.to(_current), _current)


def unplaced(module: Any) -> Any:
    """The module `placed` wrapped (itself when it is not wrapped)."""
    return module.inner if isinstance(module, _placed_class()) else module


def plain_state_dict(module) -> dict:
    """`module.state_dict()` under the names it has where it is not placed (each placed submodule's `inner.`
    dropped), so that digests of the weights do not depend on the device."""
    wrapper = _placed_class()
    state = module.state_dict()
    prefixes = sorted((name for name, sub in module.named_modules() if isinstance(sub, wrapper)), key=len, reverse=True)
    if not prefixes:
        return state

    def plain(key: str) -> str:
        for prefix in prefixes:
            inner = f"{prefix}.inner." if prefix else "inner."
            if key.startswith(inner):
                key = (f"{prefix}." if prefix else "") + key[len(inner):]
        return key

    return {plain(k): v for k, v in state.items()}


@functools.cache
def _placed_class():
    import torch

    class Placed(torch.nn.Module):
        """`inner` (weights on `device`) called with tensors from anywhere: each input moves to `device`, the output
        moves back to the first input's device. Train/eval mode and parameters are the inner module's."""

        def __init__(self, inner, device: str):
            super().__init__()
            self.inner = inner
            self.device = device

        def forward(self, x, *rest):
            out = self.inner(x.to(self.device), *(r.to(self.device) if isinstance(r, torch.Tensor) else r
                                                  for r in rest))
            return out.to(x.device) if isinstance(out, torch.Tensor) else out

    return Placed

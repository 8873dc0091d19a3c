"""Loading the model under audit (TorchScript, torch.export, state_dict + --arch, trusted pickle).

torch is imported inside the functions: `amulet-audit --help` and `validate` must start fast.
"""

from __future__ import annotations

import dataclasses
import importlib
import io
import math
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amulet_audit.core.errors import InputError
from amulet_audit.core.digest import architecture_digest, layer_kind, sha256_file
from amulet_audit.core.mode import mode_fixed, set_mode

# Formats whose model is a torch module with its own weights (the others are read through a module: an estimator,
# an ONNX graph, a prediction service).
TORCH_FORMATS = ("torchscript", "export", "state_dict", "pickle")

# Layers whose behaviour differs between train() and eval(); a traced module freezes them in one mode.
MODE_DEPENDENT = ("BatchNorm", "Dropout", "InstanceNorm", "AlphaDropout")


@dataclass
class ModelHandle:
    """The audited model, read-only. `module` is in eval mode and must never be trained."""

    path: Path
    sha256: str
    format: str  # torchscript | export | state_dict | pickle
    module: Any  # torch.nn.Module or ScriptModule
    architecture: str
    warnings: list[str] = field(default_factory=list)
    _source_bytes: bytes | None = None  # TorchScript archive, for faithful copies
    # How a defended model trains: (x, y, recipe, seed, cache, sensitive) -> trained module. None: plain training
    # (`amulet_audit.training.copies.train_copy`).
    trainer: Any = None
    # Train/eval-dependent layers ("Dropout at 2") whose mode the format fixed (a traced module, a torch.export
    # program): copies trained from this model run them as they were frozen, whatever the trainer asks.
    fixed_mode_layers: list[str] = field(default_factory=list)
    # The output convention (`amulet_audit.core.outputs.CONVENTIONS`) of the architecture, and how it was read;
    # `module` returns per-class scores whatever it is (`ops.scores.attach`), `raw` is the model as loaded when
    # `module` wraps it (None: `module` is the model as loaded). Fresh copies are copies of the raw architecture.
    output: str = "logits"
    output_note: str = ""
    raw: Any = None

    @property
    def parameters(self) -> int:
        return int(sum(p.numel() for p in self.module.parameters()))

    def architecture_digest(self) -> str:
        """Identifies the architecture, not the weights (`core.digest.architecture_digest`)."""
        suffix = f"|output={self.output}" if self.output != "logits" else ""  # copies train by the convention
        return architecture_digest(self.arch_module, f"{self.format}|{self.architecture}{suffix}")

    @property
    def arch_module(self):
        """The model as loaded (its raw output), whose architecture copies are made of."""
        return self.raw if self.raw is not None else self.module

    @property
    def trainable(self) -> bool:
        """Whether copies of the architecture can be trained: not for a label-only output (no gradient)."""
        return self.output != "labels"

    def placed(self) -> "ModelHandle":
        """This model with its weights on the process's device (`core.device.placed`; itself on the CPU): its
        `module` is then called with CPU tensors and returns CPU tensors, and `raw` keeps the model as loaded."""
        from amulet_audit.core.device import on_cpu, placed

        if on_cpu() or self.format not in TORCH_FORMATS:  # an estimator, ONNX graph or service runs where it runs
            return self
        return dataclasses.replace(self, module=placed(self.module), raw=self.arch_module)

    def fresh_copy(self, seed: int):
        """A re-initialised copy of the audited architecture on the CPU, in train mode, ready for `train_model`."""
        import torch

        torch.manual_seed(seed)
        if self.format == "torchscript":
            # deepcopy of a ScriptModule gives non-leaf parameters; a save/load round trip does not.
            copy = torch.jit.load(io.BytesIO(self._source_bytes), map_location="cpu")
        elif self.format == "export":
            copy = _exported_copy(self._source_bytes)
        else:
            import copy as _copy

            copy = _copy.deepcopy(self.arch_module).cpu()  # trainers move copies to the audit's device themselves
        reinitialise(copy, seed)
        return set_mode(copy, True)  # exported programs keep the mode fixed at export


    def functional_copy(self, seed: int, example) -> "FunctionalModel | None":
        """A re-initialised copy usable with `torch.func` (functional_call, vmap, per-sample gradients), or None.

        TorchScript modules refuse the stateless API, so a scripted copy is converted to an equivalent FX
        GraphModule (same tensor names) through torch.export's TorchScript converter, made and checked in eval
        mode (a Dropout converted in train mode is random, and no comparison could pass). Returns None when the
        copy would not train as the model does: a scripted model with Dropout/BatchNorm (the graph fixes their eval
        behaviour), or an architecture the converter refuses (e.g. a scripted GroupNorm: `prim::Loop` with a
        dynamic trip count); callers then fall back to another route (one model at a time, a loop over the batch)
        and say so. `example`: a small input batch (tensor).
        """
        import torch

        copy = self.fresh_copy(seed)
        params = {k: v.detach().clone() for k, v in copy.named_parameters()}
        buffers = {k: v.detach().clone() for k, v in copy.named_buffers()}
        if self.format != "torchscript":
            return FunctionalModel(copy, params, buffers)
        if set(mode_dependent_layers(getattr(self, "arch_module", self.module))) - set(self.fixed_mode_layers):
            return None  # scripted Dropout/BatchNorm: the eval-mode graph would not train them as the model does
        set_mode(copy, False)
        import warnings

        from torch._export.converter import TS2EPConverter

        import logging

        quiet = logging.getLogger("torch")  # the converter logs shape specialisations at WARNING
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                graph = TS2EPConverter(copy, (example,)).convert().module()
                probe = example[: min(len(example), 4)]
                with torch.no_grad():
                    same = torch.allclose(torch.func.functional_call(graph, {**params, **buffers}, (probe,)),
                                          copy(probe), atol=1e-5)
        except Exception:
            return None
        finally:
            quiet.setLevel(level)
        return FunctionalModel(graph, params, buffers) if same else None


_EXPORTED: dict[bytes, Any] = {}  # torch.export archive -> its module, loaded once (loading costs ~20 deep copies)


def _exported_copy(raw: bytes):
    """An independent copy of the torch.export program in `raw` (its module, with parameters of its own), which
    refuses .train()/.eval() as the loaded module does (a deep copy drops those per-instance methods)."""
    import copy
    import types
    import warnings

    if raw not in _EXPORTED:
        _EXPORTED.clear()  # one audited model at a time
        import torch

        _EXPORTED[raw] = torch.export.load(io.BytesIO(raw)).module()
    template = _EXPORTED[raw]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch's own pytree deprecation, raised while copying
        module = copy.deepcopy(template)
    for name in ("train", "eval"):
        if name in vars(template):
            setattr(module, name, types.MethodType(vars(template)[name].__func__, module))
    return module


@dataclass
class FunctionalModel:
    """A stateless view of a model copy: call `torch.func.functional_call(module, {**params, **buffers}, (x,))`.
    `params` are the trainable tensors (same names as the audited model's state_dict), `buffers` the rest."""

    module: Any
    params: dict
    buffers: dict


def reinitialise(module, seed: int) -> None:
    """Re-draw every parameter as PyTorch's default initialisation would (works on ScriptModules and on exported
    programs, whose layers are known by their recorded kinds, see `layers`)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    kinds = dict(layers(module))
    with torch.no_grad():
        for name, sub in module.named_modules():
            kind = kinds.get(name, layer_kind(sub))
            params = dict(sub.named_parameters(recurse=False))
            buffers = dict(sub.named_buffers(recurse=False))
            if any(k in kind for k in ("BatchNorm", "LayerNorm", "GroupNorm", "InstanceNorm")):
                if "weight" in params:
                    params["weight"].fill_(1.0)
                if "bias" in params:
                    params["bias"].zero_()
                if "running_mean" in buffers:
                    buffers["running_mean"].zero_()
                if "running_var" in buffers:
                    buffers["running_var"].fill_(1.0)
                if "num_batches_tracked" in buffers:
                    buffers["num_batches_tracked"].zero_()
                continue
            weight = params.get("weight")
            fan_in = None
            for pname, p in params.items():
                if p.dim() >= 2:
                    # kaiming_uniform(a=sqrt(5)): bound = 1/sqrt(fan_in), as nn.Linear / nn.ConvNd do
                    fan_in = p[0].numel()
                    bound = 1.0 / math.sqrt(fan_in)
                    p.uniform_(-bound, bound, generator=gen)
            for pname, p in params.items():
                if p.dim() < 2:
                    if pname == "bias" and weight is not None and weight.dim() >= 2:
                        bound = 1.0 / math.sqrt(weight[0].numel())
                        p.uniform_(-bound, bound, generator=gen)
                    elif "Embedding" in kind:
                        p.normal_(generator=gen)
                    else:
                        p.normal_(0.0, 0.02, generator=gen) if p.dim() == 1 and pname != "bias" else p.zero_()
            if "Embedding" in kind and weight is not None:
                weight.normal_(generator=gen)


def layers(module) -> list[tuple[str, str]]:
    """(path, kind) of every layer below the root, e.g. ("1", "BatchNorm1d"), for nn.Modules, TorchScript and
    torch.export programs. An exported graph keeps no layer objects: its layers are read from the nodes'
    `nn_module_stack` metadata (the modules the exporter traced through)."""
    if mode_fixed(module) and hasattr(module, "graph"):
        seen: dict[str, str] = {}
        for node in module.graph.nodes:
            for path, kind in (node.meta.get("nn_module_stack") or {}).values():
                name = kind if isinstance(kind, str) else getattr(kind, "__qualname__", str(kind))
                seen.setdefault(str(path), name.rsplit(".", 1)[-1])
        return [(path, kind) for path, kind in seen.items() if path]
    return [(name, layer_kind(sub)) for name, sub in module.named_modules() if name]


def mode_dependent_layers(module) -> list[str]:
    """"Kind at path" for each layer that behaves differently in training and in eval (MODE_DEPENDENT)."""
    return [f"{kind} at {path}" for path, kind in layers(module) if any(k in kind for k in MODE_DEPENDENT)]


def _traced_mode_layers(module) -> list[str]:
    """"Kind at path" for the BatchNorm/Dropout layers of a *traced* TorchScript module (frozen in their traced
    mode)."""
    found = []
    for name, sub in module.named_modules():
        if any(k in layer_kind(sub) for k in MODE_DEPENDENT):
            try:
                code = sub.code
            except Exception:
                continue
            if "training" not in code:
                found.append(f"{layer_kind(sub)} at {name}" if name else layer_kind(sub))
    return found


def load_model(path: str | Path, *, arch: str | None = None, trust_pickle: bool = False,
               trust_types: tuple[str, ...] = ()) -> ModelHandle:
    """Load the model at `path`. Every problem with the file or flags is an InputError. `trust_types`: the types
    a skops file may load beyond skops' defaults (--trust-type)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: model file not found; check the path.")
    if path.suffix.lower() == ".skops":
        from amulet_audit.inputs.sklearn_model import load_skops

        return load_skops(path, trusted=tuple(trust_types))
    if path.suffix.lower() == ".onnx":
        from amulet_audit.inputs.onnx_model import load_onnx

        return load_onnx(path)
    digest = sha256_file(path)
    raw = path.read_bytes()
    warnings: list[str] = []

    if path.suffix == ".pt2":
        try:
            program = torch.export.load(io.BytesIO(raw))
        except Exception as exc:
            raise InputError(f"{path}: not a torch.export program ({_first_line(exc)}); save it with torch.export.save.") from None
        module = program.module()
        fixed = mode_dependent_layers(module)
        if fixed:
            warnings.append(
                f"The model is a torch.export program with train/eval-dependent layers ({', '.join(fixed[:5])}), whose "
                "behaviour was fixed at export time: reference and defended copies train with them as exported, so "
                "they may not learn as the audited model did; prefer TorchScript (torch.jit.script) or --arch."
            )
        return ModelHandle(path, digest, "export", module, "torch.export program", warnings, raw,
                           fixed_mode_layers=fixed)

    if _is_torchscript(raw):
        try:
            module = torch.jit.load(io.BytesIO(raw), map_location="cpu")
        except Exception as exc:
            raise InputError(f"{path}: a TorchScript archive that does not load ({_first_line(exc)}); re-save it with torch.jit.save.") from None
        set_mode(module, False)
        traced = _traced_mode_layers(module)
        if traced:
            warnings.append(
                f"The model is a traced TorchScript module with train/eval-dependent layers ({', '.join(traced[:5])}); "
                "tracing froze them in eval mode, so reference and defended copies do not train as the audited model did "
                "and membership attacks built on them are weaker. Re-save with torch.jit.script, or give a state_dict with --arch."
            )
        return ModelHandle(path, digest, "torchscript", module, layer_kind(module), warnings, raw,
                           fixed_mode_layers=traced)

    try:
        obj = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as exc:
        if not _is_pickle_error(exc):
            raise InputError(
                f"{path}: not a model file amulet-audit can read ({_first_line(exc)}); save a TorchScript archive with torch.jit.save."
            ) from None
        if not trust_pickle:
            raise InputError(
                f"{path}: is a pickled whole module, and unpickling it can run arbitrary code; save it with "
                "torch.jit.save(torch.jit.script(model)) or give its state_dict with --arch, or pass --trust-pickle if you trust the file."
            ) from None
        try:
            obj = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=False)
        except Exception as exc:
            raise InputError(f"{path}: the pickled module does not load ({_first_line(exc)}); is its code importable here?") from None
        if not isinstance(obj, torch.nn.Module):
            raise InputError(f"{path}: the pickle holds a {type(obj).__name__}, not a torch.nn.Module.")
        set_mode(obj, False)
        return ModelHandle(path, digest, "pickle", obj, type(obj).__name__, warnings)

    if isinstance(obj, torch.nn.Module):  # pragma: no cover - weights_only never yields modules
        set_mode(obj, False)
        return ModelHandle(path, digest, "pickle", obj, type(obj).__name__, warnings)
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        if not arch:
            raise InputError(
                f"{path}: is a state_dict (weights only); pass --arch package.module:Class naming the architecture to load it into."
            )
        module = _build_arch(arch)
        try:
            module.load_state_dict(obj)
        except RuntimeError as exc:
            from amulet_audit.inputs.torch_errors import state_dict_mismatch

            raise InputError(f"{path}: the state_dict does not fit --arch {arch} ({state_dict_mismatch(module, obj, exc)}); "
                             "check the class.") from None
        set_mode(module, False)
        return ModelHandle(path, digest, "state_dict", module, arch, warnings)
    raise InputError(f"{path}: holds a {type(obj).__name__}, not a model; save a TorchScript archive with torch.jit.save.")


def _build_arch(arch: str):
    import torch

    mod_name, _, cls_name = arch.partition(":")
    if not mod_name or not cls_name:
        raise InputError(f"--arch {arch}: write it as package.module:Class.")
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        cls = getattr(importlib.import_module(mod_name), cls_name)
    except (ImportError, AttributeError) as exc:
        raise InputError(f"--arch {arch}: cannot import it ({_first_line(exc)}); is the module on PYTHONPATH?") from None
    try:
        module = cls()
    except TypeError as exc:
        raise InputError(f"--arch {arch}: the class must be constructible without arguments ({_first_line(exc)}).") from None
    if not isinstance(module, torch.nn.Module):
        raise InputError(f"--arch {arch}: is not a torch.nn.Module subclass.")
    return module


def _is_torchscript(raw: bytes) -> bool:
    if not raw.startswith(b"PK"):
        return False
    try:
        names = zipfile.ZipFile(io.BytesIO(raw)).namelist()
    except zipfile.BadZipFile:
        return False
    return any(n.endswith("/constants.pkl") or "/code/" in n for n in names)


def _is_pickle_error(exc: Exception) -> bool:
    import pickle

    # weights_only refuses pickled classes with "Unsupported global: GLOBAL module.Class"; other errors mean a corrupt file
    return isinstance(exc, pickle.UnpicklingError) and ("Unsupported global" in str(exc) or "GLOBAL" in str(exc))


def _first_line(exc: Exception) -> str:
    """The cause of `exc` (a TorchScript error's last error line, not its generic header), with the fix when the
    model's code asks for a GPU this machine lacks."""
    from amulet_audit.inputs.torch_errors import error_cause, gpu_advice, is_gpu_error

    if is_gpu_error(exc):
        import torch

        return f"{error_cause(exc)}: {gpu_advice(torch.cuda.is_available())}"
    return error_cause(exc)

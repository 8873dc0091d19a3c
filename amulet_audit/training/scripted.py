"""An eager `nn.Sequential` equal to a scripted one, so that copies of a TorchScript model can be trained K at a time.

TorchScript modules refuse `torch.func`, and torch.export's TorchScript converter cannot convert a scripted
BatchNorm in training mode (its batch-size check is a loop with a dynamic trip count) nor keep a Dropout random,
so `ModelHandle.functional_copy` gives no trainable functional copy of a scripted model with those layers. A
scripted `nn.Sequential` of torch's own layers keeps, for each layer, the class it was scripted from
(`original_name`) and its constructor arguments as attributes: the same layers can be built again in eager mode and
given the copy's tensors. The result is used only after it has given the scripted copy's outputs on an example
batch both in eval mode and in training mode (batch statistics; the same Dropout draws from the same seed).

torch is imported inside the functions, as in `reference.py`.
"""

from __future__ import annotations

from typing import Any

from amulet_audit.core.mode import set_mode
from amulet_audit.training.stacked import _PER_RECORD, _STACKED


def eager_sequential(model, seed: int, example) -> Any | None:
    """An eager `nn.Sequential` with the layers and the re-initialised tensors of `model.fresh_copy(seed)` (same
    names), in training mode, or None: when `model` is not TorchScript, its train/eval behaviour was frozen by
    tracing (`model.fixed_mode_layers`), its root or a layer is not a torch.nn layer `StackedLayers` runs (e.g. a
    custom module), or the rebuilt module's outputs on `example` (a small float input batch, (n, ...)) differ from
    the scripted copy's in eval or training mode."""
    import copy

    import torch

    if model.format != "torchscript" or model.fixed_mode_layers:
        return None
    scripted = model.fresh_copy(seed)
    try:
        eager = _build(scripted)
        eager.load_state_dict(scripted.state_dict())
    except Exception:  # an unknown layer or constructor argument: not rebuildable
        return None
    probe = example[: max(2, min(len(example), 8))]
    try:
        for training in (False, True):
            reference = model.fresh_copy(seed)  # the check's BatchNorm updates must not reach the returned module
            candidate = copy.deepcopy(eager)
            set_mode(reference, training)
            set_mode(candidate, training)
            with torch.no_grad(), torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                want = reference(probe)
                torch.manual_seed(seed)
                got = candidate(probe)
            if not (isinstance(want, torch.Tensor) and want.shape == got.shape and torch.allclose(got, want, atol=1e-5)):
                return None
    except Exception:  # a forward that fails on the example: leave the model to the other routes
        return None
    return set_mode(eager, True)


def _build(scripted):
    """The eager module for the scripted module `scripted` (a RecursiveScriptModule); raises ValueError for what is
    not a Sequential of the layers `_STACKED` and `_PER_RECORD` name."""
    import inspect
    from collections import OrderedDict

    import torch.nn as nn

    kind = getattr(scripted, "original_name", "")
    if kind == "Sequential":
        return nn.Sequential(OrderedDict((name, _build(sub)) for name, sub in scripted.named_children()))
    if kind not in _STACKED + _PER_RECORD:
        raise ValueError(f"no eager rebuild for a scripted {kind or type(scripted).__name__}")
    cls = getattr(nn, kind)
    kwargs = {}
    for name, arg in list(inspect.signature(cls.__init__).parameters.items())[1:]:
        if name in ("device", "dtype") or arg.kind in (arg.VAR_POSITIONAL, arg.VAR_KEYWORD):
            continue
        if name == "bias" and isinstance(arg.default, bool):
            kwargs[name] = getattr(scripted, "bias", None) is not None  # the constructor's flag, the module's tensor
        elif hasattr(scripted, name):
            kwargs[name] = getattr(scripted, name)
        elif arg.default is inspect.Parameter.empty:
            raise ValueError(f"a scripted {kind} does not keep its argument {name!r}")
    return cls(**kwargs)

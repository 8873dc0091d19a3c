"""Train/eval mode of a model or model copy, for every model format the audit accepts.

A `torch.export` program's module (`ExportedProgram.module()`, also the functional copy of a TorchScript model,
which torch.export's converter produces) has its Dropout/BatchNorm behaviour fixed at export time and raises
NotImplementedError on `.train()` / `.eval()`. Every place that switches a model's mode goes through `set_mode`,
which leaves such graphs as they are (also when they sit inside a wrapper, e.g. a fairness mixture).
"""

from __future__ import annotations

from typing import Any


def mode_fixed(module: Any) -> bool:
    """True when `module` cannot switch train/eval mode: a torch.export program's module, whose `train`/`eval`
    are replaced on the instance by methods that raise."""
    own = getattr(module, "__dict__", {})
    return "train" in own or "eval" in own


def set_mode(module: Any, training: bool) -> Any:
    """`module.train(training)` for `module` and every submodule whose mode can change; graphs whose mode is fixed
    (`mode_fixed`) keep theirs. Returns `module`."""
    if mode_fixed(module):
        return module
    if not any(mode_fixed(sub) for sub in module.modules()):
        module.train(training)
        return module
    module.training = training  # what nn.Module.train does, without reaching the fixed graphs inside
    for child in module.children():
        set_mode(child, training)
    return module

"""SHA-256 digests: of files, of a module's weights, and of a module's architecture (weights excluded)."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def weights_digest(module, label: str = "") -> str:
    """Hex SHA-256 of `label` and every parameter and buffer of `module` (name and bytes, in name order): equal
    exactly when the weights are equal."""
    from amulet_audit.core.device import plain_state_dict

    h = hashlib.sha256(label.encode())
    for name, t in sorted(plain_state_dict(module).items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def layer_kind(sub) -> str:
    """The layer's class name (`original_name` for TorchScript submodules, e.g. 'Linear')."""
    return getattr(sub, "original_name", None) or type(sub).__name__


def architecture_digest(module, label: str = "") -> str:
    """Hex SHA-256 that identifies an architecture and not its trained weights: `label` (e.g. format and class),
    each submodule's kind and code (TorchScript source, or the class and its `extra_repr` for plain modules), and
    every parameter and buffer's name, shape and dtype. Two models of one architecture with other weights agree;
    a changed activation, width or layer differs."""
    h = hashlib.sha256(label.encode())
    for name, sub in module.named_modules():
        h.update(f"|{name}:{layer_kind(sub)}".encode())
        try:
            code = sub.code  # ScriptModules: the forward's source, weights excluded
        except Exception:
            code = type(sub).__module__ + "." + type(sub).__qualname__ + ":" + sub.extra_repr()
        h.update(code.encode())
    for name, t in module.state_dict().items():
        h.update(f"|{name}:{tuple(t.shape)}:{t.dtype}".encode())
    return h.hexdigest()

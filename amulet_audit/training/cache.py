"""On-disk cache of trained models (reference, shadow, poisoned, defended), keyed by a content hash of
everything that determines the trained weights: architecture, initial seed, training recipe, data subset."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from amulet_audit.core.atomic import write_bytes_atomic
from amulet_audit.core.mode import set_mode


def default_root() -> Path:
    env = os.environ.get("AMULET_AUDIT_CACHE")
    if env:
        return Path(env)
    from amulet_audit import __version__

    # per release: a new release may train differently, so it never reads an older release's models
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "amulet-audit" / "models" / __version__


def content_key(*parts: Any) -> str:
    """SHA-256 over JSON-able parts; numpy arrays hash by dtype, shape and bytes."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            h.update(f"ndarray:{part.dtype}:{part.shape}:".encode())
            h.update(np.ascontiguousarray(part).tobytes())
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
        h.update(b"\x1f")
    return h.hexdigest()


class ModelCache:
    """State dicts stored as `<root>/<key[:2]>/<key>.pt` (loaded with weights_only=True). `root=None` disables."""

    def __init__(self, root: Path | None):
        self.root = root
        self.hits = 0
        self.misses = 0

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.pt"

    def load(self, key: str) -> dict | None:
        if self.root is None:
            self.misses += 1
            return None
        path = self._path(key)
        if not path.is_file():
            self.misses += 1
            return None
        import torch

        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # a corrupt entry is a miss, and is overwritten by the next save
            self.misses += 1
            return None
        self.hits += 1
        return state

    def save(self, key: str, state: dict) -> None:
        if self.root is None:
            return
        import io

        import torch

        buf = io.BytesIO()
        torch.save({k: v.detach().cpu() if hasattr(v, "detach") else v for k, v in state.items()}, buf)
        write_bytes_atomic(self._path(key), buf.getvalue())

    def get_or_train(self, key: str, module, train) -> Any:
        """Load `key` into `module`, or call `train(module)` and store the result. Returns the trained module."""
        state = self.load(key)
        if state is not None:
            module.load_state_dict(state)
            return set_mode(module, False)
        module = train(module)
        self.save(key, module.state_dict())
        return module

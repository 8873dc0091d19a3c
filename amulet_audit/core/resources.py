"""Where the packaged templates and policies live.

In an installed wheel they sit inside the package (`amulet_audit/templates`,
`amulet_audit/policies`); in a source checkout they are the top-level folders.
"""

from __future__ import annotations

from pathlib import Path

import amulet_audit

_PACKAGE_DIR = Path(amulet_audit.__file__).resolve().parent
_CHECKOUT_DIR = _PACKAGE_DIR.parent


def _packaged(name: str) -> Path:
    installed = _PACKAGE_DIR / name
    return installed if installed.is_dir() else _CHECKOUT_DIR / name


def templates_dir() -> Path:
    """The folder of the packaged Jinja2 report templates."""
    return _packaged("templates")


def policies_dir() -> Path:
    """The folder of the bundled regulation policies (`*.yaml`)."""
    return _packaged("policies")

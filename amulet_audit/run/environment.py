"""What the audit ran on, for the reproducibility appendix."""

from __future__ import annotations

import platform
import sys
from importlib.metadata import PackageNotFoundError, version

PACKAGES = ("amulet-audit", "torch", "numpy", "scipy", "pandas", "scikit-learn", "fairlearn", "opacus", "pydantic",
            "jinja2", "weasyprint", "matplotlib", "pyarrow")


def environment() -> dict:
    packages = {}
    for name in PACKAGES:
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            continue
    return {
        "python": platform.python_version(),
        "torch": packages.get("torch", ""),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "executable": sys.executable,
        "packages": packages,
    }

"""The package's imports point one way (DESIGN.md, "Package layout"): a module imports only from its own package
or from packages of a lower layer, including imports inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "amulet_audit"

# Lowest first. Packages on one line share a layer and must not import each other.
LAYERS = [
    ("core",),
    ("results",),
    ("inputs", "policy"),
    ("training",),
    ("ops",),
    ("risks", "defenses"),
    ("plan",),
    ("run",),
    ("report",),
    ("testing",),  # conformance checks as a pytest helper, on a tiny model and data set
    ("cli",),
    ("__main__",),
]
RANK = {pkg: i for i, layer in enumerate(LAYERS) for pkg in layer}


def package_of(module: str) -> str:
    """`amulet_audit.risks.membership` -> `risks`; the package root itself (`__version__`) counts as core."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] != "__init__" else "core"


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported amulet_audit module) for every import statement in the file, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("amulet_audit")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("amulet_audit"):
            if node.module == "amulet_audit":  # `from amulet_audit import core` names a package
                found += [(node.lineno, f"amulet_audit.{a.name}") if a.name in RANK else (node.lineno, "amulet_audit")
                          for a in node.names]
            else:
                found.append((node.lineno, node.module))
    return found


def violations(root: Path = PACKAGE) -> list[str]:
    out = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent)
        importer = package_of(".".join(rel.with_suffix("").parts))
        if importer not in RANK:
            out.append(f"{rel}: package '{importer}' has no layer")
            continue
        for line, module in imports(path):
            target = package_of(module)
            if target == importer:
                continue
            if target not in RANK or RANK[target] >= RANK[importer]:
                out.append(f"{rel}:{line} ({importer}) imports {module} ({target}), which is not a lower layer")
    return out


def test_imports_point_down_the_layers():
    assert violations() == []


def test_the_check_catches_an_upward_import_inside_a_function(tmp_path):
    pkg = tmp_path / "amulet_audit"
    (pkg / "risks").mkdir(parents=True)
    (pkg / "run").mkdir()
    (pkg / "risks" / "x.py").write_text("def f():\n    from amulet_audit.run.runner import run_audit\n")
    (pkg / "run" / "runner.py").write_text("from amulet_audit.risks import x\n")
    (pkg / "risks" / "y.py").write_text("import amulet_audit.defenses.dp_sgd\n")
    found = violations(pkg)
    assert len(found) == 2
    assert any("risks/x.py:2" in v and "amulet_audit.run.runner" in v for v in found)
    assert any("risks/y.py:1" in v and "defenses" in v for v in found)


@pytest.mark.parametrize("layer", [p for layer in LAYERS for p in layer if p not in ("cli", "__main__")])
def test_every_layer_is_a_package(layer):
    assert (PACKAGE / layer / "__init__.py").exists()

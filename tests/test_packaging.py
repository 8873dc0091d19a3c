"""The wheel ships templates and policies and works outside the checkout."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig

import pytest

from conftest import ROOT


@pytest.mark.slow
def test_installed_wheel_finds_its_templates_and_policies(tmp_path, tabular):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", dist, ROOT],
                   check=True, capture_output=True)
    wheel = next(dist.glob("amulet_audit-*.whl"))
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    assert "amulet_audit/policies/eu_ai_act.yaml" in names
    assert any(n.startswith("amulet_audit/templates/") and n.endswith(".j2") for n in names)

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    # dependencies come from the project's environment (its site-packages as a plain path, so the
    # editable install of the checkout is not picked up); amulet-audit itself only from the wheel
    site = next((venv / "lib").glob("python*/site-packages"))
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([venv / "bin" / "python", "-m", "pip", "install", "-q", "--no-deps", wheel], check=True, capture_output=True)

    where = subprocess.run([venv / "bin" / "python", "-c", "import amulet_audit; print(amulet_audit.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path, check=True).stdout
    assert str(venv) in where and str(ROOT) not in where
    cli = venv / "bin" / "amulet-audit"
    listed = subprocess.run([cli, "policies"], capture_output=True, text=True, cwd=tmp_path)
    assert listed.returncode == 0 and "eu_ai_act" in listed.stdout
    # a small bundled policy: what is tested is that the wheel finds its policies and templates
    done = subprocess.run([cli, tabular, "--policy", "nyc_ll144", "--out", tmp_path / "out", "--profile", "quick", "--quiet",
                           "--no-pdf", "--exit-zero"], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "out" / "results.json").read_text())["policy"]["path"].startswith(str(venv))
    assert "<svg" in (tmp_path / "out" / "report.html").read_text()

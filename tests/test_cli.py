"""The command line as users and CI see it: exit codes, messages, outputs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from conftest import AMULET, ONE_DEFENSE


def run(*args, cwd=None):
    return subprocess.run([*AMULET, *map(str, args)], capture_output=True, text=True, cwd=cwd)


def test_help_does_not_import_heavy_libraries():
    code = ("import sys; from amulet_audit.cli import main; main(['--help']); main(['validate', 'eu_ai_act']); "
            "heavy = [m for m in ('torch', 'opacus', 'weasyprint', 'matplotlib', 'fairlearn') if m in sys.modules]; "
            "assert not heavy, heavy")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "usage: amulet-audit MODEL --policy POLICY" in done.stdout


def test_python_dash_m_is_the_same_program():
    done = subprocess.run([sys.executable, "-m", "amulet_audit", "policies"], capture_output=True, text=True)
    assert done.returncode == 0 and "eu_ai_act" in done.stdout and "Regulation (EU) 2024/1689" in done.stdout


def test_validate_good_and_bad(tmp_path, tabular):
    ok = run("validate", "eu_ai_act", "--data", tabular.with_name("model.data.yaml"))
    assert ok.returncode == 0, ok.stderr
    assert "1,500 training" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("policy: broken\ntitle: t\nrequirements:\n  - id: x\n    risk: evasion\n    metric: robust_accuracy\n"
                   "    threshold: {min: 0.5}\n    severty: high\n")
    out = run("validate", bad)
    assert out.returncode == 2 and "severty" in out.stderr and "line 8" in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_schema_export_is_json():
    out = run("validate", "--schema")
    assert out.returncode == 0 and json.loads(out.stdout)["title"] == "amulet-audit policy"


def test_audit_writes_three_files_and_fails_on_a_biased_model(tmp_path, tabular):
    out_dir = tmp_path / "report"
    done = run(tabular, "--policy", ONE_DEFENSE, "--out", out_dir, "--profile", "quick", "--quiet")
    assert done.returncode == 1, done.stderr  # the synthetic model is biased by construction
    assert {p.name for p in out_dir.iterdir()} == {"report.html", "report.pdf", "results.json", "manifest.json"}
    result = json.loads((out_dir / "results.json").read_text())
    rows = {r["id"]: r for r in result["requirements"]}
    assert rows["bias-impact-ratio"]["verdict"] == "fail"
    assert result["verdict"] == "fail"
    assert result["model"]["sha256"] and result["data"]["sha256"] and result["policy"]["sha256"]
    # schema 2: each requirement points to the run that measured it, with its interval method and metric direction
    runs = {r["id"]: r for r in result["runs"]}
    assert result["schema_version"] == "2.0" and all(r["run"] in runs for r in result["requirements"])
    assert runs[rows["bias-impact-ratio"]["run"]]["attack"] == "group_fairness"
    assert rows["bias-impact-ratio"]["metric_info"] == {"higher_is_worse": False, "unit": "ratio"}
    assert all(r["ci_method"] for r in result["requirements"] if r["value"] is not None)
    # --device auto (the default) computes on a GPU where torch sees one, else on the CPU, and says which
    assert result["environment"]["device"].startswith("cuda:" if torch.cuda.is_available() else "cpu")
    # --exit-zero reports without failing; --no-pdf writes no PDF
    again = run(tabular, "--policy", ONE_DEFENSE, "--out", tmp_path / "r2", "--profile", "quick", "--quiet", "--exit-zero", "--no-pdf")
    assert again.returncode == 0
    assert not (tmp_path / "r2" / "report.pdf").exists()


def test_same_seed_same_numbers_other_seed_other_sample(tmp_path, tabular):
    results = []
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        run(tabular, "--policy", ONE_DEFENSE, "--out", tmp_path / name, "--profile", "quick", "--quiet", "--no-pdf", "--seed", seed)
        r = json.loads((tmp_path / name / "results.json").read_text())
        results.append([(q["value"], q["ci"]) for q in r["requirements"]])
    assert results[0] == results[1]
    assert results[0] != results[2]


def test_render_reproduces_the_report_from_results(tmp_path, tabular):
    run(tabular, "--policy", ONE_DEFENSE, "--out", tmp_path / "a", "--profile", "quick", "--quiet", "--no-pdf")
    done = run("render", tmp_path / "a" / "results.json", "--out", tmp_path / "b", "--no-pdf")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "b" / "report.html").stat().st_size > 1000
    broken = tmp_path / "broken.json"
    broken.write_text('{"schema_version": "1.0", "verdict": "pass"}')
    bad = run("render", broken, "--out", tmp_path / "c")
    assert bad.returncode == 2 and "broken.json" in bad.stderr and not (tmp_path / "c" / "report.html").exists()


@pytest.mark.parametrize("case", ["pickle", "garbage", "missing", "no_spec", "bad_spec", "wrong_shape", "bad_policy", "bad_flag",
                                  "no_gpu", "bad_device"])
def test_bad_input_is_exit_2_with_one_line_and_nothing_written(tmp_path, tabular, case):
    spec = tabular.with_name("model.data.yaml")
    model, extra = tabular, ["--data", spec]
    policy = "eu_ai_act"
    if case == "pickle":
        model = tmp_path / "m.pt"
        torch.save(torch.nn.Linear(6, 2), model)
    elif case == "garbage":
        model = tmp_path / "m.pt"
        model.write_bytes(b"\x00garbage")
    elif case == "missing":
        model = tmp_path / "absent.pt"
    elif case == "no_spec":
        model = tmp_path / "m.pt"
        model.write_bytes(tabular.read_bytes())
        extra = []
    elif case == "bad_spec":
        bad = tabular.parent / "bad-income.data.yaml"
        bad.write_text(spec.read_text().replace("target: label", "target: income"))
        extra = ["--data", bad]
    elif case == "wrong_shape":
        model = tmp_path / "m.pt"
        torch.jit.save(torch.jit.script(torch.nn.Linear(5, 2)), model)
    elif case == "bad_policy":
        policy = "eu_ai_akt"
    elif case == "bad_flag":
        extra += ["--profile", "fast"]
    elif case == "no_gpu":
        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU")
        extra += ["--device", "cuda"]
    elif case == "bad_device":
        extra += ["--device", "gpu0"]
    done = run(model, "--policy", policy, *extra, "--out", tmp_path / "out", "--quiet")
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    message = done.stderr.strip().splitlines()[-1]
    expected = {"pickle": "--trust-pickle", "garbage": "not a model file", "missing": "not found", "no_spec": "--data",
                "bad_spec": "income", "wrong_shape": "does not accept", "bad_policy": "did you mean the bundled 'eu_ai_act'",
                "bad_flag": "fast", "no_gpu": "--device cuda: ", "bad_device": "--device gpu0: not a device"}[case]
    assert expected in message, message

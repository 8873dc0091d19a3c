"""What the labels mean and how the data is read: the declared class order, the training-accuracy sanity check,
labels that differ between the splits, CSV files as spreadsheet programs write them, and error messages that name
the wrong file and the real cause."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from amulet_audit.core.errors import InputError
from amulet_audit.inputs.data import load_data
from amulet_audit.inputs.model import load_model
from amulet_audit.inputs.torch_errors import error_cause
from amulet_audit.plan.preflight import check_class_order
from conftest import AMULET, context


def run(*args):
    return subprocess.run([*AMULET, *map(str, args)], capture_output=True, text=True)


# --- text labels whose order is not the sorted order ------------------------------------------------------------


@pytest.fixture(scope="module")
def label_order(tmp_path_factory):
    """Loan decisions as words; the owner's model was trained with approved = 1 (sorted order would say 0).
    Returns (folder, expected): holdout accuracy and selection rates computed with the model's own mapping."""
    folder = tmp_path_factory.mktemp("label-order")
    rng = np.random.default_rng(11)
    n = 1000  # 500 holdout records: the quick profile's evasion run measures accuracy on all of them
    sex = rng.choice(["female", "male"], n)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    x[:, 3] += 0.9 * (sex == "female")  # a proxy for sex
    approved = rng.random(n) < 1 / (1 + np.exp(-(1.4 * x[:, 0] - 0.8 * x[:, 1] + 0.5 * x[:, 2] - 0.7 * x[:, 3] + 0.3)))
    split = np.where(np.arange(n) < n // 2, "train", "holdout")
    df = pd.DataFrame(x, columns=["f0", "f1", "f2", "f3"])
    df["sex"], df["decision"], df["split"] = sex, np.where(approved, "approved", "denied"), split
    df.to_csv(folder / "data.csv", index=False)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    tr = split == "train"
    X, Y = torch.tensor(x[tr]), torch.tensor(approved[tr].astype(np.int64))  # 1 = approved
    for _ in range(150):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(X), Y).backward()
        opt.step()
    model.eval()
    torch.jit.save(torch.jit.script(model), folder / "model.pt")
    with torch.no_grad():
        pred = model(torch.tensor(x)).argmax(1).numpy()
    ho = ~tr
    expected = {"accuracy": float((pred[ho] == approved[ho]).mean()),
                "selection_rate": {g: float((pred[ho & (sex == g)] == 1).mean()) for g in ("female", "male")}}
    spec = {"name": "label-order", "source": {"format": "csv", "path": "data.csv"},
            "features": ["f0", "f1", "f2", "f3"], "target": "decision", "positive_label": "approved",
            "sensitive": ["sex"], "training": {"epochs": 5, "lr": 0.01}}
    for name, classes in (("none", None), ("right", ["denied", "approved"]), ("inverted", ["approved", "denied"])):
        (folder / f"{name}.data.yaml").write_text(yaml.safe_dump({**spec, **({"classes": classes} if classes else {})}))
    (folder / "policy.yaml").write_text(yaml.safe_dump({"policy": "labels", "title": "Accuracy and four-fifths rule",
        "requirements": [
            {"id": "accuracy", "risk": "evasion", "attack": {"name": "fgsm", "params": {"eps": 0.05}},
             "metric": "clean_accuracy", "threshold": {"min": 0.60}},
            {"id": "impact-ratio", "risk": "discrimination", "metric": "impact_ratio", "threshold": {"min": 0.80}}]}))
    return folder, expected


def test_text_labels_without_classes_are_refused_naming_the_column_and_the_fix(label_order):
    folder, _ = label_order
    with pytest.raises(InputError) as err:
        load_data(folder / "none.data.yaml")
    msg = str(err.value)
    assert "none.data.yaml" in msg and "'decision'" in msg and "'approved', 'denied'" in msg
    assert "classes: [denied, approved]" in msg and "guess" in msg
    done = run("validate", folder / "policy.yaml", "--data", folder / "none.data.yaml")
    assert done.returncode == 2 and "'decision'" in done.stderr and "Traceback" not in done.stderr


def test_declared_class_order_gives_the_models_own_accuracy_and_fairness_direction(label_order, tmp_path):
    from amulet_audit.core import registry
    from amulet_audit.ops.forward import clean_accuracy

    folder, expected = label_order
    data = load_data(folder / "right.data.yaml")
    model = load_model(folder / "model.pt")
    assert data.classes == ["denied", "approved"] and data.positive_index == 1
    assert clean_accuracy(model.module, data) == pytest.approx(expected["accuracy"], abs=1e-9)
    assert 0.68 < expected["accuracy"] < 0.85  # inverted, it would be 1 - that
    out = registry.attack_class("group_fairness")().run(context(model, data))
    groups = {g["group"]: g for g in out.details["by_attribute"]["sex"]["groups"]}
    for g in ("female", "male"):
        assert groups[g]["selection_rate"] == pytest.approx(expected["selection_rate"][g], abs=1e-9)
    rates = expected["selection_rate"]
    assert rates["female"] < rates["male"]  # the favourable decision goes to men more often
    assert out.metrics["impact_ratio"].value == pytest.approx(rates["female"] / rates["male"], abs=1e-9)

    done = run(folder / "model.pt", "--policy", folder / "policy.yaml", "--data", folder / "right.data.yaml",
               "--out", tmp_path / "out", "--profile", "quick", "--quiet", "--no-pdf", "--exit-zero")
    assert done.returncode == 0, done.stderr
    rows = {r["id"]: r for r in json.loads((tmp_path / "out" / "results.json").read_text())["requirements"]}
    assert rows["accuracy"]["value"] == pytest.approx(expected["accuracy"], abs=1e-9)
    assert rows["accuracy"]["verdict"] == "pass"
    assert rows["impact-ratio"]["value"] == pytest.approx(rates["female"] / rates["male"], abs=1e-9)


def test_inverted_class_order_stops_the_audit_before_any_attack(label_order, tmp_path):
    folder, _ = label_order
    done = run(folder / "model.pt", "--policy", folder / "policy.yaml", "--data", folder / "inverted.data.yaml",
               "--out", tmp_path / "out", "--profile", "quick", "--quiet", "--no-pdf")
    assert done.returncode == 2, done.stderr
    msg = done.stderr.strip().splitlines()[-1]
    assert "inverted.data.yaml" in msg and "class order may be inverted" in msg and "`classes`" in msg
    assert "classes: [denied, approved]" in msg  # the order the predictions agree with
    assert "expect_low_training_accuracy" in msg
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_low_training_accuracy_can_be_declared_expected(label_order, tmp_path):
    folder, _ = label_order
    spec = yaml.safe_load((folder / "inverted.data.yaml").read_text())
    model = load_model(folder / "model.pt")
    with pytest.raises(InputError, match="below the majority-class rate"):
        check_class_order(model, load_data(folder / "inverted.data.yaml"))
    (folder / "expected.data.yaml").write_text(yaml.safe_dump({**spec, "expect_low_training_accuracy": True}))
    check_class_order(model, load_data(folder / "expected.data.yaml"))  # no error
    check_class_order(model, load_data(folder / "right.data.yaml"))


class _Echo(torch.nn.Module):
    """Predicts the class index written in feature f0 (logits [1 - f0, f0])."""

    def forward(self, x):
        return torch.stack([1 - x[:, 0], x[:, 0]], 1) * 10


@pytest.mark.parametrize("wrong, refused", [(3, False), (35, False), (60, True), (100, True)])
def test_class_order_check_refuses_clearly_inverted_models_not_under_fitted_ones(tmp_path, wrong, refused):
    """100 training records, 70 'no' (the majority-class rate is 0.70); the model errs on `wrong` of them."""
    from amulet_audit.inputs.model import load_model

    y = np.array(["no"] * 70 + ["yes"] * 30)
    pred = (y == "yes").astype(float)
    pred[:wrong] = 1 - pred[:wrong]
    pd.DataFrame({"f0": np.r_[pred, pred], "y": np.r_[y, y], "split": ["train"] * 100 + ["holdout"] * 100}
                 ).to_parquet(tmp_path / "d.parquet")
    (tmp_path / "d.data.yaml").write_text(yaml.safe_dump({"name": "n", "source": {"format": "parquet", "path": "d.parquet"},
                                                          "features": ["f0"], "target": "y", "classes": ["no", "yes"]}))
    torch.jit.save(torch.jit.script(_Echo()), tmp_path / "m.pt")
    model, data = load_model(tmp_path / "m.pt"), load_data(tmp_path / "d.data.yaml")
    if refused:
        with pytest.raises(InputError, match=f"accuracy on its own training records is {1 - wrong / 100:.3f}, below"):
            check_class_order(model, data)
    else:  # 0.97; and an under-fitted 0.65, below 0.70 but within chance of it (not a sign of inversion)
        check_class_order(model, data)


class _Echo3(torch.nn.Module):
    """Predicts the class index written in feature f0 (0, 1 or 2), as one-hot logits."""

    def forward(self, x):
        return torch.nn.functional.one_hot(x[:, 0].round().long().clamp(0, 2), 3).float() * 10


@pytest.mark.parametrize("declared, refused", [(["low", "mid", "high"], False), (["low", "high", "mid"], True),
                                               (["mid", "low", "high"], True)])
def test_class_order_check_refuses_a_partly_wrong_order(tmp_path, declared, refused):
    """Three classes, 40 low, 30 mid, 30 high; the model knows every training record. Two classes swapped in the data
    spec leave the training accuracy at or above the majority rate (0.40), yet another order fits far better."""
    from amulet_audit.inputs.model import load_model

    y = np.array(["low"] * 40 + ["mid"] * 30 + ["high"] * 30)
    f0 = np.select([y == "low", y == "mid"], [0.0, 1.0], 2.0)
    pd.DataFrame({"f0": np.r_[f0, f0], "y": np.r_[y, y], "split": ["train"] * 100 + ["holdout"] * 100}
                 ).to_parquet(tmp_path / "d.parquet")
    (tmp_path / "d.data.yaml").write_text(yaml.safe_dump({"name": "n", "source": {"format": "parquet", "path": "d.parquet"},
                                                          "features": ["f0"], "target": "y", "classes": declared}))
    torch.jit.save(torch.jit.script(_Echo3()), tmp_path / "m.pt")
    model, data = load_model(tmp_path / "m.pt"), load_data(tmp_path / "d.data.yaml")
    if refused:
        with pytest.raises(InputError, match=r"with the declared class order but 1\.000 with another.*"
                                             r"classes: \[low, mid, high\]"):
            check_class_order(model, data)
    else:
        check_class_order(model, data)


def test_positive_label_and_data_labels_must_be_classes(label_order, tmp_path):
    folder, _ = label_order
    spec = yaml.safe_load((folder / "right.data.yaml").read_text())
    for changes, expected in (({"positive_label": "accepted"}, "'accepted' is not a value of 'decision'"),
                              ({"classes": ["denied", "granted"]}, "'approved' that classes [denied, granted]"),
                              ({"classes": ["denied", "denied"]}, "more than once")):
        path = folder / "variant.data.yaml"
        path.write_text(yaml.safe_dump({**spec, **changes}))
        with pytest.raises(InputError, match="variant.data.yaml") as err:
            load_data(path)
        assert expected in str(err.value), str(err.value)


def test_unquoted_yes_no_in_the_spec_mean_the_text_labels(tmp_path):
    """YAML reads `classes: [no, yes]` as [false, true]; they stand for the data's labels "no" and "yes"."""
    pd.DataFrame({"f0": [0.1, 0.2, 0.3, 0.4], "y": ["yes", "no", "no", "yes"],
                  "split": ["train", "train", "holdout", "holdout"]}).to_parquet(tmp_path / "d.parquet")
    (tmp_path / "d.data.yaml").write_text("name: n\nsource: {format: parquet, path: d.parquet}\nfeatures: [f0]\n"
                                          "target: y\nclasses: [no, yes]\npositive_label: yes\n")
    data = load_data(tmp_path / "d.data.yaml")
    assert data.classes == ["no", "yes"] and data.positive_index == 1 and data.y_train.tolist() == [1, 0]


def test_numeric_and_boolean_labels_need_no_classes(tmp_path):
    df = pd.DataFrame({"f0": [0.1, 0.2, 0.3, 0.4], "y": [1, 0, 0, 1], "b": [True, False, True, False],
                       "s": ["1", "0", "1", "0"], "split": ["train", "train", "holdout", "holdout"]})
    df.to_parquet(tmp_path / "d.parquet")
    for target, classes in (("y", ["0", "1"]), ("b", ["False", "True"]), ("s", ["0", "1"])):
        (tmp_path / "d.data.yaml").write_text(yaml.safe_dump({"name": "n", "source": {"format": "parquet", "path": "d.parquet"},
                                                              "features": ["f0"], "target": target}))
        data = load_data(tmp_path / "d.data.yaml")
        assert data.classes == classes
        assert data.y_train.tolist() == [1, 0]


# --- labels that differ between the splits ----------------------------------------------------------------------


def _adult_like(folder, *, holdout_suffix=".", prefix=""):
    """A raw-Adult-style CSV (", " separators) whose holdout labels carry a suffix; a spec; a policy."""
    rng = np.random.default_rng(3)
    lines = ["age, hours, sex, income, split"]
    for i in range(200):
        hold = i >= 100
        label = rng.choice(["<=50K", ">50K"])
        label = (prefix + label + holdout_suffix) if hold else label
        lines.append(f"{rng.normal():.4f}, {rng.normal():.4f}, {rng.choice(['Male', 'Female'])}, {label}, "
                     f"{'holdout' if hold else 'train'}")
    (folder / "adult_like.csv").write_text("\n".join(lines) + "\n")
    (folder / "model.data.yaml").write_text(yaml.safe_dump({
        "name": "adult-like", "source": {"format": "csv", "path": "adult_like.csv"}, "features": ["age", "hours"],
        "target": "income", "classes": ["<=50K", ">50K"], "positive_label": ">50K", "sensitive": ["sex"]}))
    return folder / "model.data.yaml"


def test_labels_in_only_one_split_are_named_by_validate_and_the_audit_before_the_model(tmp_path):
    spec = _adult_like(tmp_path)
    done = run("validate", "eu_ai_act", "--data", spec)
    assert done.returncode == 2
    msg = done.stderr.strip().splitlines()[-1]
    for part in ("model.data.yaml", "column 'income'", "only in the holdout split ('<=50K.', '>50K.')",
                 "the training split has '<=50K', '>50K'", "trailing '.'"):
        assert part in msg, msg
    (tmp_path / "model.pt").write_bytes(b"not a model")  # never loaded: the data problem comes first
    audit = run(tmp_path / "model.pt", "--policy", "eu_ai_act", "--out", tmp_path / "out", "--quiet", "--no-pdf")
    assert audit.returncode == 2 and audit.stderr.strip().splitlines()[-1] == msg


def test_leading_spaces_and_case_in_one_split_are_named(tmp_path):
    df = pd.DataFrame({"f0": np.arange(8.0), "y": ["yes", "no", "yes", "no", " yes", " no", "Yes", "no"],
                       "split": ["train"] * 4 + ["holdout"] * 4})
    df.to_parquet(tmp_path / "d.parquet")
    (tmp_path / "d.data.yaml").write_text(yaml.safe_dump({"name": "n", "source": {"format": "parquet", "path": "d.parquet"},
                                                          "features": ["f0"], "target": "y", "classes": ["no", "yes"]}))
    with pytest.raises(InputError) as err:
        load_data(tmp_path / "d.data.yaml")
    assert "(' no', ' yes', 'Yes')" in str(err.value) and "spaces" in str(err.value)


def test_split_values_that_differ_by_spaces_or_case_are_named_not_dropped(tmp_path):
    df = pd.DataFrame({"f0": np.arange(6.0), "y": [0, 1, 0, 1, 0, 1],
                       "split": ["train", "train", "Train ", "holdout", "holdout", "validation"]})
    df.to_parquet(tmp_path / "d.parquet")
    (tmp_path / "d.data.yaml").write_text(yaml.safe_dump({"name": "n", "source": {"format": "parquet", "path": "d.parquet"},
                                                          "features": ["f0"], "target": "y"}))
    with pytest.raises(InputError, match=r"key 'split.train'.*'Train ', which differs from 'train'.*1 record"):
        load_data(tmp_path / "d.data.yaml")
    df[df.split != "Train "].to_parquet(tmp_path / "d.parquet")  # a third split of other records is fine
    assert len(load_data(tmp_path / "d.data.yaml").y_train) == 2


def test_a_declared_class_absent_from_one_split_is_accepted_an_undeclared_one_is_not(tmp_path):
    df = pd.DataFrame({"f0": np.arange(7.0), "y": ["a", "b", "c", "a", "b", "a", "b"],
                       "split": ["train"] * 4 + ["holdout"] * 3})
    df.to_parquet(tmp_path / "d.parquet")
    spec = {"name": "n", "source": {"format": "parquet", "path": "d.parquet"}, "features": ["f0"], "target": "y",
            "classes": ["a", "b", "c"]}
    (tmp_path / "d.data.yaml").write_text(yaml.safe_dump(spec))
    assert load_data(tmp_path / "d.data.yaml").classes == ["a", "b", "c"]
    (tmp_path / "d.data.yaml").write_text(yaml.safe_dump({**spec, "classes": None}))
    with pytest.raises(InputError, match=r"only in the training split \('c'\).*list every class under `classes`"):
        load_data(tmp_path / "d.data.yaml")


# --- CSV dialects -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def table():
    rng = np.random.default_rng(5)
    n = 60
    df = pd.DataFrame({"income": np.round(rng.normal(30, 10, n), 3), "age": rng.integers(18, 90, n),
                       "score": np.round(rng.normal(size=n), 5)})
    df["region"] = rng.choice(["Zürich", "Île-de-France", "Málaga"], n)
    df["note"] = rng.choice(['a "quoted"; b, c', "plain", "x\ty"], n)  # separators and quotes inside values
    df["label"] = rng.choice(["no", "yes"], n)
    df["split"] = np.where(np.arange(n) < n // 2, "train", "holdout")
    return df


def _load(folder, name, source_extra=None):
    spec = {"name": "dialect", "source": {"format": "csv", "path": name, **(source_extra or {})},
            "features": ["income", "age", "score"], "target": "label", "classes": ["no", "yes"],
            "sensitive": ["region"]}
    (folder / f"{name}.data.yaml").write_text(yaml.safe_dump(spec, allow_unicode=True))
    return load_data(folder / f"{name}.data.yaml")


def _writers(df):
    def text(sep=",", decimal=".", crlf=False):
        return df.to_csv(sep=sep, decimal=decimal, index=False, lineterminator="\r\n" if crlf else "\n")

    return {
        "semicolon-decimal-comma.csv": (text(";", ","), "utf-8"),
        "bom.csv": (text(), "utf-8-sig"),
        "crlf.csv": (text(crlf=True), "utf-8"),
        "cp1252.csv": (text(), "cp1252"),
        "tab-utf16.txt": (text("\t", ","), "utf-16"),  # Excel's "Unicode text"
        "excel-sep-line.csv": ("sep=;\r\n" + text(";", ",", crlf=True), "cp1252"),
        "old-mac-cr.csv": (text().replace("\n", "\r"), "latin-1"),
    }


def test_spreadsheet_csv_dialects_load_like_the_plain_file(tmp_path, table):
    table.to_csv(tmp_path / "plain.csv", index=False)
    plain = _load(tmp_path, "plain.csv")
    for name, (content, encoding) in _writers(table).items():
        (tmp_path / name).write_bytes(content.encode(encoding))
        data = _load(tmp_path, name)
        np.testing.assert_allclose(data.x_train, plain.x_train, rtol=1e-7, err_msg=name)
        np.testing.assert_allclose(data.x_holdout, plain.x_holdout, rtol=1e-7, err_msg=name)
        assert data.y_train.tolist() == plain.y_train.tolist(), name
        assert data.sensitive_holdout["region"].tolist() == plain.sensitive_holdout["region"].tolist(), name
        assert data.feature_names == plain.feature_names


def test_declared_options_and_decimal_comma_with_declared_separator(tmp_path, table):
    table.to_csv(tmp_path / "plain.csv", index=False)
    plain = _load(tmp_path, "plain.csv")
    (tmp_path / "de.csv").write_bytes(table.to_csv(sep=";", decimal=",", index=False).encode("cp1252"))
    for extra in ({"sep": ";"}, {"sep": ";", "decimal": ",", "encoding": "cp1252"}):
        data = _load(tmp_path, "de.csv", extra)
        np.testing.assert_allclose(data.x_train, plain.x_train, rtol=1e-7)
        assert "decimal ','" in data.reading
    # quoted values in a comma-separated file: the declared marks apply inside the quotes
    (tmp_path / "q.csv").write_text('income,age,score,region,label,split\n"1,5",2,"1,234",a,no,train\n'
                                    '"2,25",3,"12,500",b,yes,holdout\n')
    assert _load(tmp_path, "q.csv", {"decimal": ","}).x_train[0, 0] == 1.5
    data = _load(tmp_path, "q.csv", {"thousands": ","})
    assert data.x_train[0, 2] == 1234.0 and data.x_holdout[0, 2] == 12500.0
    (tmp_path / "tab.tsv").write_text(table.to_csv(sep="\t", index=False))
    assert _load(tmp_path, "tab.tsv", {"sep": "\\t"}).x_train.shape == plain.x_train.shape


def test_decimal_comma_with_dot_thousands_is_detected_in_a_semicolon_file(tmp_path):
    rows = ["income;age;score;region;label;split", "-2.711,163;3;0,5;a;no;train", "345,584;4;1.000,25;b;yes;holdout",
            "12.345.678,5;5;-0,75;a;yes;train", "0,5;6;2,5;b;no;holdout"]
    (tmp_path / "de.csv").write_text("\n".join(rows) + "\n")
    auto = _load(tmp_path, "de.csv")
    declared = _load(tmp_path, "de.csv", {"sep": ";", "decimal": ",", "thousands": "."})
    np.testing.assert_array_equal(auto.x_train, declared.x_train)
    np.testing.assert_array_equal(auto.x_holdout, declared.x_holdout)
    assert auto.x_train[:, 0].tolist() == pytest.approx([-2711.163, 12345678.5])
    assert auto.x_holdout[0, 2] == pytest.approx(1000.25)
    assert "decimal ',' (detected), thousands '.' (detected)" in auto.reading
    # a '.' without a decimal comma in the column stays a decimal point
    (tmp_path / "pt.csv").write_text("income;age;score;region;label;split\n1.5;3;0.5;a;no;train\n2.25;4;1.000;b;yes;holdout\n")
    assert _load(tmp_path, "pt.csv").x_holdout[0, 2] == 1.0


@pytest.mark.parametrize("name, content, extra, expected", [
    ("semi.csv", "income;age;score;region;label;split\n1,5;3;2;a;no;train\n", {"sep": ","},
     ["column 'split' is not in semi.csv", "the header 'income;age;score;region;label;split' holds ';'",
      'set source.sep: ";"']),
    ("latin.csv", "income,age,score,region,label,split\n1,2,3,Zo\xeb,no,train\n", {"encoding": "utf-8"},
     ["key 'source.encoding'", "latin.csv is not valid utf-8", "byte 0xeb on line 2"]),
    ("quoted.csv", 'income,age,score,region,label,split\n"1,5",2,3,a,no,train\n"2,5",2,3,a,yes,holdout\n', None,
     ["column 'income' is not numeric in quoted.csv", "decimal comma", 'source.decimal: ","']),
    ("book.csv", b"PK\x03\x04rest-of-a-workbook", None, ["key 'source.format'", "Excel"]),
    ("thousands.csv", 'income,age,score,region,label,split\n"1,234",2,3,a,no,train\n"12,500",2,3,a,yes,holdout\n', None,
     ["column 'income' is not numeric in thousands.csv", 'source.thousands: ","', 'source.decimal: ","']),
    ("dots.csv", 'income,age,score,region,label,split\n"-2.711,163",2,3,a,no,train\n"345,5",2,3,a,yes,holdout\n', None,
     ["column 'income' is not numeric in dots.csv", "'-2.711,163'", 'decimal: "," and thousands: "." under source']),
])
def test_csv_errors_name_the_file_and_the_fix(tmp_path, name, content, extra, expected):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_bytes(content.encode("latin-1"))
    with pytest.raises(InputError) as err:
        _load(tmp_path, name, extra)
    for part in expected:
        assert part in str(err.value), str(err.value)


def test_csv_options_are_checked_in_the_spec(tmp_path):
    (tmp_path / "d.data.yaml").write_text(yaml.safe_dump({"name": "n", "source": {"format": "parquet", "path": "d.parquet",
                                                                                  "sep": ";"}, "features": ["f0"], "target": "y"}))
    with pytest.raises(InputError, match="apply to csv sources only"):
        load_data(tmp_path / "d.data.yaml")
    (tmp_path / "d.data.yaml").write_text(yaml.safe_dump({"name": "n", "source": {"format": "csv", "path": "d.csv",
                                                                                  "encoding": "utf-9"}, "features": ["f0"], "target": "y"}))
    with pytest.raises(InputError, match="unknown encoding 'utf-9'"):
        load_data(tmp_path / "d.data.yaml")


# --- error messages: the wrong file and the real cause ----------------------------------------------------------


class _ToGpu(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(6, 2)

    def forward(self, x):
        return self.fc(x) + torch.zeros(2, device="cuda")


class _FixedBatch(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(6, 2)

    def forward(self, x):
        return self.fc(x.view(2, -1, 6)).view(-1, 2)  # runs on batches of an even size only


class _Checks(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(6, 2)

    def forward(self, x):
        if bool(x.min() > -1e9):
            raise ValueError("inputs must be normalised with the training statistics")
        return self.fc(x)


def test_torchscript_runtime_error_is_quoted_by_its_cause_not_its_header():
    with pytest.raises(Exception) as err:
        torch.jit.script(torch.nn.Linear(5, 2))(torch.randn(2, 6))
    assert str(err.value).startswith("The following operation failed in the TorchScript interpreter")
    assert error_cause(err.value) == "RuntimeError: mat1 and mat2 shapes cannot be multiplied (2x6 and 5x2)"


@pytest.mark.parametrize("case", ["shape", "gpu", "model_error", "fixed_batch"])
def test_a_model_that_fails_on_the_data_is_named_with_its_real_cause(tmp_path, tabular, case):
    module = {"shape": lambda: torch.nn.Linear(5, 2), "gpu": _ToGpu, "model_error": _Checks, "fixed_batch": _FixedBatch}[case]()
    model = tmp_path / "m.pt"
    torch.jit.save(torch.jit.script(module), model)
    done = run(model, "--policy", "eu_ai_act", "--data", tabular.with_name("model.data.yaml"), "--out",
               tmp_path / "out", "--quiet", "--no-pdf")
    assert done.returncode == 2, done.stderr
    msg = done.stderr.strip().splitlines()[-1]
    assert str(model) in msg and "Traceback" not in done.stderr and "The following operation failed" not in msg
    if case == "shape":
        assert "does not accept the data's records of shape [6]" in msg and "mat1 and mat2 shapes" in msg
    elif case == "gpu":
        assert "moves tensors to a GPU" in msg and "re-save the model so that it runs on the CPU" in msg
        assert "input_shape" not in msg
    elif case == "fixed_batch":
        assert "runs on a batch of 2 records but not on a batch of 1" in msg and "batch size is fixed" in msg
    else:
        assert "inputs must be normalised with the training statistics" in msg
        assert "input_shape" not in msg and "does not accept" not in msg


def test_classes_listing_more_than_the_data_and_the_model_hold_names_the_spec_key(tmp_path, table):
    from amulet_audit.cli import _check_model_fits

    table.to_csv(tmp_path / "plain.csv", index=False)
    spec = {"name": "extra", "source": {"format": "csv", "path": "plain.csv"}, "features": ["income", "age", "score"],
            "target": "label", "classes": ["no", "yes", "maybe"]}
    (tmp_path / "extra.data.yaml").write_text(yaml.safe_dump(spec))
    data = load_data(tmp_path / "extra.data.yaml")
    torch.jit.script(torch.nn.Linear(3, 2)).save(str(tmp_path / "two.pt"))
    with pytest.raises(InputError) as err:
        _check_model_fits(load_model(tmp_path / "two.pt"), data)
    msg = str(err.value)
    assert msg.startswith(f"{tmp_path / 'extra.data.yaml'}: key 'classes' lists 3 classes")
    assert 'the data holds 2 labels (["no", "yes"]) and the model' in msg and "has 2 outputs" in msg
    assert "no record is [maybe]" in msg
    torch.jit.script(torch.nn.Linear(3, 3)).save(str(tmp_path / "three.pt"))
    _check_model_fits(load_model(tmp_path / "three.pt"), data)  # a class without records is fine for a 3-output model

"""Data specs and model files: formats, safety, faithful re-initialised copies, clear errors."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
import yaml

from amulet_audit.core.errors import InputError
from amulet_audit.inputs.data import load_data
from amulet_audit.inputs.model import load_model
from amulet_audit.training.loop import train_model


def _spec(tmp_path, **changes):
    spec = yaml.safe_load((tmp_path / "model.data.yaml").read_text())
    for key, value in changes.items():
        spec[key] = value
    out = tmp_path / "variant.data.yaml"
    out.write_text(yaml.safe_dump(spec))
    return out


@pytest.fixture()
def folder(tabular, tmp_path):
    for name in ("data.csv", "model.data.yaml", "model.pt"):
        (tmp_path / name).write_bytes((tabular.parent / name).read_bytes())
    return tmp_path


def test_csv_spec_loads_members_holdout_features_and_groups(folder):
    data = load_data(folder / "model.data.yaml")
    assert data.x_train.shape == (1500, 6) and data.x_holdout.shape == (1500, 6)
    assert data.classes == ["no", "yes"] and data.positive_index == 1
    assert data.feature_names == [f"f{i}" for i in range(6)]
    assert set(data.sensitive_holdout["sex"]) == {"F", "M"}
    assert len(data.sha256) == 64 and "data.csv" in data.files


def test_parquet_and_npz_sources(folder):
    import pandas as pd

    pd.read_csv(folder / "data.csv").to_parquet(folder / "data.parquet")
    data = load_data(_spec(folder, source={"format": "parquet", "path": "data.parquet"}))
    assert data.x_train.shape == (1500, 6)
    df = pd.read_csv(folder / "data.csv")
    img = np.clip(np.random.default_rng(0).random((len(df), 1, 2, 3)), 0, 1).astype(np.float32)
    np.savez(folder / "d.npz", X=img, y=(df["label"] == "yes").astype(int).to_numpy(), split=df["split"].to_numpy().astype(str))
    data = load_data(_spec(folder, source={"format": "npz", "path": "d.npz"}, features={"array": "X"}, target="y",
                           classes=None, positive_label=1, sensitive=[], input_shape=[1, 2, 3], input_range=[0.0, 1.0]))
    assert data.x_holdout.shape == (1500, 1, 2, 3) and data.classes == ["0", "1"] and data.input_range == (0.0, 1.0)


@pytest.mark.parametrize("changes, expected", [
    ({"target": "income"}, ["'target'", "column 'income' is not in data.csv"]),
    ({"features": ["f0", "sex"]}, ["'features'", "column 'sex' is not numeric", "encode"]),
    ({"positive_label": ">50K"}, ["positive_label", "'>50K' is not a value"]),
    ({"split": {"column": "split", "train": "training", "holdout": "holdout"}}, ["split.train", "empty"]),
    ({"sensitive": ["gender"]}, ["'sensitive'", "column 'gender'"]),
    ({"source": {"format": "csv", "path": "missing.csv"}}, ["source.path", "not found"]),
    ({"trianing": {"epochs": 3}}, ["unknown key 'trianing'"]),
    ({"input_shape": [2, 2]}, ["input_shape", "holds 4 values"]),
])
def test_bad_data_specs_name_the_key(folder, changes, expected):
    path = _spec(folder, **changes)
    with pytest.raises(InputError) as err:
        load_data(path)
    for part in expected:
        assert part in str(err.value), str(err.value)


def test_nan_features_are_refused_naming_the_column(folder):
    import pandas as pd

    df = pd.read_csv(folder / "data.csv")
    df.loc[3, "f2"] = np.nan
    df.to_csv(folder / "data.csv", index=False)
    with pytest.raises(InputError, match=r"1 record\(s\) have NaN.*f2"):
        load_data(folder / "model.data.yaml")


class TinyNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(6, 8)
        self.bn = torch.nn.BatchNorm1d(8)
        self.drop = torch.nn.Dropout(0.2)
        self.out = torch.nn.Linear(8, 2)

    def forward(self, x):
        return self.out(self.drop(torch.relu(self.bn(self.fc(x)))))


def test_state_dict_needs_arch_and_loads_with_it(tmp_path, monkeypatch):
    net = TinyNet().eval()
    torch.save(net.state_dict(), tmp_path / "w.pt")
    with pytest.raises(InputError, match="--arch"):
        load_model(tmp_path / "w.pt")
    monkeypatch.syspath_prepend(str(tmp_path.parent))
    handle = load_model(tmp_path / "w.pt", arch="test_inputs:TinyNet")
    x = torch.randn(4, 6)
    assert torch.allclose(handle.module(x), net(x))
    assert handle.format == "state_dict"


class TinyNoBatchNorm(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(6, 4)
        self.out = torch.nn.Linear(4, 2)
        self.extra = torch.nn.Linear(2, 2)


def test_state_dict_that_does_not_fit_arch_names_the_keys_and_shapes(tmp_path, monkeypatch):
    torch.save(TinyNet().state_dict(), tmp_path / "w.pt")
    monkeypatch.syspath_prepend(str(tmp_path.parent))
    with pytest.raises(InputError) as err:
        load_model(tmp_path / "w.pt", arch="test_inputs:TinyNoBatchNorm")
    msg = str(err.value)
    assert "does not fit --arch test_inputs:TinyNoBatchNorm" in msg and "\n" not in msg
    assert "2 keys in the class but not in the file: extra.weight, extra.bias" in msg
    assert "5 keys in the file but not in the class: bn.weight, bn.bias, bn.running_mean and 2 more" in msg
    assert "fc.weight is 8x6 in the file and 4x6 in the class" in msg and "Error(s)" not in msg


def test_pickled_module_is_refused_unless_trusted(tmp_path):
    torch.save(TinyNet(), tmp_path / "m.pt")
    with pytest.raises(InputError) as err:
        load_model(tmp_path / "m.pt")
    assert "pickled" in str(err.value) and "--trust-pickle" in str(err.value) and "arbitrary code" in str(err.value)
    assert load_model(tmp_path / "m.pt", trust_pickle=True).format == "pickle"


def test_garbage_file_is_bad_input(tmp_path):
    (tmp_path / "m.pt").write_bytes(b"not a model at all")
    with pytest.raises(InputError, match="not a model file"):
        load_model(tmp_path / "m.pt")


def test_traced_module_with_batchnorm_is_flagged_scripted_is_not(tmp_path):
    net = TinyNet().eval()
    torch.jit.save(torch.jit.trace(net, torch.randn(4, 6)), tmp_path / "traced.pt")
    torch.jit.save(torch.jit.script(net), tmp_path / "scripted.pt")
    traced = load_model(tmp_path / "traced.pt")
    assert any("traced" in w and "torch.jit.script" in w for w in traced.warnings)
    assert load_model(tmp_path / "scripted.pt").warnings == []


def test_export_program_loads(tmp_path):
    net = TinyNet().eval()
    torch.export.save(torch.export.export(net, (torch.randn(4, 6),), dynamic_shapes={"x": {0: torch.export.Dim("batch")}}), tmp_path / "m.pt2")
    handle = load_model(tmp_path / "m.pt2")
    x = torch.randn(3, 6)
    assert handle.format == "export" and torch.allclose(handle.module(x), net(x), atol=1e-6)


def test_fresh_copy_of_torchscript_is_reinitialised_trainable_and_audited_model_untouched(folder):
    handle = load_model(folder / "model.pt")
    data = load_data(folder / "model.data.yaml")
    before = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in handle.module.parameters())).hexdigest()
    copy = handle.fresh_copy(seed=1)
    assert all(p.is_leaf for p in copy.parameters())
    assert not torch.allclose(next(copy.parameters()), next(handle.module.parameters()))
    trained = train_model(copy, data.x_train, data.y_train, data.spec.training, seed=1, epochs=5)
    acc = (trained(torch.as_tensor(data.x_holdout)).argmax(1).numpy() == data.y_holdout).mean()
    assert acc > 0.75
    after = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in handle.module.parameters())).hexdigest()
    assert before == after
    assert handle.sha256 == hashlib.sha256((folder / "model.pt").read_bytes()).hexdigest()


def test_training_is_deterministic_for_a_seed(folder):
    handle = load_model(folder / "model.pt")
    data = load_data(folder / "model.data.yaml")
    a = train_model(handle.fresh_copy(3), data.x_train, data.y_train, data.spec.training, seed=3, epochs=2)
    b = train_model(handle.fresh_copy(3), data.x_train, data.y_train, data.spec.training, seed=3, epochs=2)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)

"""Every advertised model format and output convention with the bundled policies and every defense.

A tiny model (a few hundred records, four features, a Dropout layer) is saved as scripted TorchScript, traced
TorchScript, a torch.export program (`.pt2`) and a state_dict loaded with `--arch`, and audited at the quick profile
(every bundled policy on the scripted logits model, `eu_ai_act` on every other cell): never exit 3, every requirement has a value or a one-sentence reason, and every
defense the policy lists either ran or says why it could not. The model builders are a list, so other output
conventions (probabilities, a single logit, labels) join the matrix as one entry each.

Then the per-architecture facts of DP-SGD (Opacus trains Dropout, GroupNorm, LayerNorm and embeddings and refuses
BatchNorm) and the training defenses on an exported program, whose train/eval mode is fixed at export.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from amulet_audit.core.attack import PROFILES
from amulet_audit.core.defense import DefenseContext, DefenseNotApplicable
from amulet_audit.core.mode import mode_fixed, set_mode
from amulet_audit.inputs.data import load_data
from amulet_audit.inputs.model import load_model
from amulet_audit.policy import bundled_policies, load_policy

FEATURES = 4
N_RECORDS = 320

# The architectures, as a module `--arch` imports (written beside the model as tiny_arch.py).
ARCH_SOURCE = '''
import torch


class TinyLogits(torch.nn.Module):
    """Per-class logits, with a Dropout layer (train/eval-dependent)."""

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Dropout(0.1),
                                       torch.nn.Linear(16, 2))

    def forward(self, x):
        return self.net(x)


class TinyLogSoftmax(TinyLogits):
    """Log-probabilities: the same body with a final LogSoftmax."""

    def forward(self, x):
        return torch.log_softmax(self.net(x), dim=1)


class TinySoftmax(TinyLogits):
    """Probabilities: the same body with a final Softmax, as serving code often ships it."""

    def forward(self, x):
        return torch.softmax(self.net(x), dim=1)


class TinySingleLogit(torch.nn.Module):
    """One logit for two classes (the logit of class 1), as trained with binary cross-entropy with logits."""

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Dropout(0.1),
                                       torch.nn.Linear(16, 1))

    def forward(self, x):
        return self.net(x)


class TinyLabels(TinyLogits):
    """Labels only: the predicted class index, as a float column (no scores, no useful gradient)."""

    def forward(self, x):
        return self.net(x).argmax(dim=1, keepdim=True).to(x.dtype)


class TinyBatchNorm(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.BatchNorm1d(16), torch.nn.ReLU(),
                                       torch.nn.Linear(16, 2))

    def forward(self, x):
        return self.net(x)
'''

# Output conventions of the matrix: (name, class in ARCH_SOURCE). Add a convention by adding its class.
CONVENTIONS = [("logits", "TinyLogits"), ("log_probabilities", "TinyLogSoftmax"), ("probabilities", "TinySoftmax"),
               ("single_logit", "TinySingleLogit"), ("labels", "TinyLabels")]
FORMATS = ["scripted", "traced", "export", "state_dict"]
# Plain logits in every format; the other conventions in the two that differ most (TorchScript and an exported
# graph), which keeps the matrix to a couple of minutes on two cores.
MATRIX = [(c, k, f) for c, k in CONVENTIONS for f in (FORMATS if c == "logits" else ["scripted", "export"])]


def _arch(folder: Path, name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"tiny_arch_{abs(hash(str(folder)))}", folder / "tiny_arch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)


def write_data(folder: Path, *, seed: int = 0, epochs: int = 3) -> Path:
    """data.csv (N_RECORDS records, half members; sensitive `sex`, a proxy shifted for group M) and its data spec,
    with a short training recipe so that every trained copy costs little. Returns the spec path."""
    import pandas as pd

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sex = rng.choice(["F", "M"], N_RECORDS)
    x = rng.normal(size=(N_RECORDS, FEATURES)).astype(np.float32)
    x[:, 0] += (sex == "M") * 0.8
    y = (x[:, 0] + x[:, 1] + rng.normal(scale=0.7, size=N_RECORDS) > 0.4).astype(np.int64)
    df = pd.DataFrame(x, columns=[f"f{i}" for i in range(FEATURES)])
    df["sex"], df["label"] = sex, y
    df["split"] = np.where(np.arange(N_RECORDS) < N_RECORDS // 2, "train", "holdout")
    df.to_csv(folder / "data.csv", index=False)
    (folder / "tiny_arch.py").write_text(ARCH_SOURCE)
    spec = {"name": "tiny", "source": {"format": "csv", "path": "data.csv"},
            "split": {"column": "split", "train": "train", "holdout": "holdout"},
            "features": [f"f{i}" for i in range(FEATURES)], "target": "label", "positive_label": 1,
            "sensitive": ["sex"], "training": {"epochs": epochs, "batch_size": 32, "optimizer": "adam", "lr": 0.01}}
    path = folder / "spec.data.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def save_model(folder: Path, cls_name: str, fmt: str) -> tuple[Path, list[str]]:
    """Train `cls_name` on the folder's members and save it as `fmt`; returns the model path (its data spec is the
    sidecar) and the extra command-line arguments it needs."""
    from amulet_audit.inputs.data import TrainingRecipe
    from amulet_audit.training.loop import train_model

    df = __import__("pandas").read_csv(folder / "data.csv")
    members = df[df.split == "train"]
    torch.manual_seed(0)
    model = _arch(folder, cls_name)()
    # trained as such a model is: the body on logits for a final (Log)Softmax or labels, a single logit with BCE
    single = cls_name == "TinySingleLogit"
    train_model(model if single else model.net, members[[f"f{i}" for i in range(FEATURES)]].to_numpy(np.float32),
                members.label.to_numpy(), TrainingRecipe(epochs=30, batch_size=32, lr=0.01), seed=0,
                output="single_logit" if single else "logits")
    model.eval()
    example = torch.zeros(8, FEATURES)
    stem = folder / f"{cls_name}_{fmt}"
    extra: list[str] = []
    if fmt == "scripted":
        path = stem.with_suffix(".pt")
        torch.jit.save(torch.jit.script(model), path)
    elif fmt == "traced":
        path = stem.with_suffix(".pt")
        torch.jit.save(torch.jit.trace(model, example), path)
    elif fmt == "export":
        path = stem.with_suffix(".pt2")
        torch.export.save(torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},)), path)
    else:
        path = stem.with_suffix(".pt")
        torch.save(model.state_dict(), path)
        extra = ["--arch", f"tiny_arch:{cls_name}"]
    path.with_name(path.stem + ".data.yaml").write_text((folder / "spec.data.yaml").read_text())
    return path, extra


@pytest.fixture(scope="module")
def matrix_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("formats")
    write_data(folder)
    return folder


def _audit(model: Path, extra: list[str], policy: str, out: Path, capsys) -> tuple[int, dict, str]:
    from amulet_audit.cli import main

    code = main([str(model), "--policy", policy, "--out", str(out), "--profile", "quick", "--no-pdf", "--quiet",
                 "--exit-zero", *extra])
    err = capsys.readouterr().err
    results = json.loads((out / "results.json").read_text()) if (out / "results.json").is_file() else {}
    return code, results, err


def _one_sentence(text: str) -> bool:
    body = text.strip().rstrip(".")
    return bool(body) and "\n" not in body and "Traceback" not in body


@pytest.mark.slow
@pytest.mark.parametrize("convention,cls_name,fmt", MATRIX)
def test_every_format_with_every_bundled_policy(fmt, convention, cls_name, matrix_folder, tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(matrix_folder))  # --arch tiny_arch:Class
    model, extra = save_model(matrix_folder, cls_name, fmt)
    # every bundled policy on the scripted logits model, and elsewhere the one that runs every risk and every defense
    # (a format- or convention-specific fault shows there: copies, defenses, the mode fixed in the file, the loss);
    # test_policies_bundled runs each bundled policy on a real model too
    stems = sorted(bundled_policies()) if (fmt, convention) == ("scripted", "logits") else ["eu_ai_act"]
    for stem in stems:
        code, results, err = _audit(model, extra, stem, tmp_path / stem, capsys)
        where = f"{fmt}/{convention} with {stem}"
        assert code == 0, f"{where}: exit {code}: {err}"
        assert results["model_output"] == convention, where  # detected from the outputs, recorded
        rows = results["requirements"]
        assert len(rows) == len(load_policy(stem).policy.requirements), where
        for row in rows:
            assert row["value"] is not None or _one_sentence(row.get("reason") or ""), f"{where}: {row['id']}: {row}"
        listed = {d.name for d in (load_policy(stem).policy.interactions.refs() if load_policy(stem).policy.interactions else [])}
        ran = {d["name"]: d for d in results.get("defenses", [])}
        assert set(ran) == listed, where
        for name, d in ran.items():
            if d["not_applicable"]:
                assert _one_sentence(d["not_applicable"]), f"{where}: {name}: {d['not_applicable']}"
            else:
                assert d["model_sha256"] and d["requirements"], f"{where}: {name} neither ran nor said why"
        if stem == "eu_ai_act" and convention != "labels":  # a label-only model has no gradient to train with
            # the tiny model has Dropout only: every listed defense applies to it, in every format
            assert not any(d["not_applicable"] for d in ran.values()), f"{where}: {ran}"
            if fmt in ("traced", "export"):  # the mode fixed in the file matters, and the evidence says so
                assert all("training_mode" in d["details"] for d in ran.values() if d["name"] != "output_perturbation")


# ---- unit tests: DP-SGD per architecture, and the training defenses on an exported program ----

LAYER_MODELS = {
    "dropout": lambda: torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Dropout(0.2),
                                           torch.nn.Linear(16, 2)),
    "groupnorm": lambda: torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.GroupNorm(4, 16), torch.nn.ReLU(),
                                             torch.nn.Linear(16, 2)),
    "layernorm": lambda: torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.LayerNorm(16), torch.nn.ReLU(),
                                             torch.nn.Linear(16, 2)),
    "batchnorm": lambda: torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.BatchNorm1d(16), torch.nn.ReLU(),
                                             torch.nn.Linear(16, 2)),
}


class EmbeddingNet(torch.nn.Module):
    """A categorical first feature (its integer part, 0..3) through an embedding, the rest through a Linear."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(4, 3)
        self.out = torch.nn.Linear(3 + 3, 2)

    def forward(self, x):
        code = x[:, 0].floor().clamp(0, 3).long()
        return self.out(torch.cat([self.embed(code), x[:, 1:]], dim=1))


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    return write_data(tmp_path_factory.mktemp("dp"))


def _handle(folder: Path, module: torch.nn.Module, fmt: str, name: str):
    module.eval()
    if fmt == "scripted":
        path = folder / f"{name}.pt"
        torch.jit.save(torch.jit.script(module), path)
    elif fmt == "export":
        path = folder / f"{name}.pt2"
        torch.export.save(torch.export.export(module, (torch.zeros(8, FEATURES),),
                                              dynamic_shapes=({0: torch.export.Dim("batch")},)), path)
    else:
        path = folder / f"{name}.pt"
        torch.save(module, path)
        return load_model(path, trust_pickle=True)
    return load_model(path)


def _apply(defense, handle, spec: Path):
    ctx = DefenseContext(model=handle, data=load_data(spec), seed=0, profile=PROFILES["quick"])
    return defense.apply(ctx)


@pytest.mark.parametrize("layer,fmt", [("dropout", "scripted"), ("dropout", "module"), ("groupnorm", "scripted"),
                                       ("layernorm", "module"), ("embedding", "module"), ("embedding", "scripted")])
def test_dp_sgd_trains_architectures_opacus_supports(layer, fmt, small):
    from amulet_audit.defenses.dp_sgd import DPSGD
    from amulet_audit.ops.forward import clean_accuracy

    torch.manual_seed(0)
    module = EmbeddingNet() if layer == "embedding" else LAYER_MODELS[layer]()
    handle = _handle(small.parent, module, fmt, f"{layer}_{fmt}")
    out = _apply(DPSGD(epochs=2), handle, small)
    assert out.details["spent_epsilon"] <= out.details["target_epsilon"] + 1e-6
    assert out.model.sha256 != handle.sha256 and 0.0 <= clean_accuracy(out.model.module, load_data(small)) <= 1.0
    # a scripted Dropout trains in training mode (one record at a time), not in the converted graph's eval mode
    if layer == "dropout" and fmt == "scripted":
        assert out.details["per_example_gradients"] == "a loop over the batch"


@pytest.mark.parametrize("fmt", ["scripted", "export", "module"])
def test_dp_sgd_refuses_batchnorm_and_names_the_layer(fmt, small):
    from amulet_audit.defenses.dp_sgd import DPSGD

    torch.manual_seed(0)
    handle = _handle(small.parent, LAYER_MODELS["batchnorm"](), fmt, f"bn_{fmt}")
    with pytest.raises(DefenseNotApplicable, match=r"BatchNorm1d at 1\b") as err:
        _apply(DPSGD(epochs=1), handle, small)
    assert "mixes the records of a batch" in str(err.value)


def test_dp_sgd_replaces_batchnorm_for_an_arch_model_and_records_it(small, monkeypatch):
    from amulet_audit.defenses.dp_sgd import DPSGD

    monkeypatch.syspath_prepend(str(small.parent))
    torch.manual_seed(0)
    net = _arch(small.parent, "TinyBatchNorm")().eval()
    torch.save(net.state_dict(), small.parent / "bn_weights.pt")
    handle = load_model(small.parent / "bn_weights.pt", arch="tiny_arch:TinyBatchNorm")
    with pytest.raises(DefenseNotApplicable, match="replace_batchnorm: true"):
        _apply(DPSGD(epochs=1), handle, small)
    out = _apply(DPSGD(epochs=1, replace_batchnorm=True), handle, small)
    assert "BatchNorm1d at net.1 -> GroupNorm(2, 16)" in out.details["architecture_change"]
    kinds = {type(m).__name__ for m in out.model.module.modules()}
    assert "GroupNorm" in kinds and "BatchNorm1d" not in kinds
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in handle.module.modules())  # the audited model is unchanged
    # on a format whose layers cannot be swapped, the reason says so
    scripted = _handle(small.parent, net, "scripted", "bn_script")
    with pytest.raises(DefenseNotApplicable, match="Python class") as err:
        _apply(DPSGD(epochs=1, replace_batchnorm=True), scripted, small)
    assert "a TorchScript model's layers cannot be swapped" in str(err.value)
    from amulet_audit.core.component import model_phrase

    assert model_phrase("export") == "an exported program" and model_phrase("other") == "an other model"


@pytest.mark.parametrize("name", ["adversarial_training", "dp_sgd", "fairness_mitigation"])
def test_training_defenses_on_an_exported_program(name, small):
    """An exported program refuses .train()/.eval(): the defense completes without calling them, and its evidence
    says that the exported Dropout kept its export-time (eval) behaviour."""
    from amulet_audit.core import registry

    torch.manual_seed(0)
    handle = _handle(small.parent, LAYER_MODELS["dropout"](), "export", "dropout_export")
    assert mode_fixed(handle.module) and handle.fixed_mode_layers == ["Dropout at 2"]
    params = {"fairness_mitigation": {"max_iter": 2}}.get(name, {"epochs": 1})
    out = _apply(registry.defense_class(name)(**params), handle, small)
    assert "Dropout at 2" in out.details["training_mode"]
    x = torch.as_tensor(load_data(small).x_holdout[:5])
    assert out.model.module(x).shape == (5, 2)


def test_set_mode_leaves_exported_graphs_inside_a_wrapper(small):
    handle = _handle(small.parent, LAYER_MODELS["dropout"](), "export", "dropout_export2")
    wrapper = torch.nn.Sequential(handle.module, torch.nn.Dropout(0.5))
    set_mode(wrapper, True)
    assert wrapper.training and wrapper[1].training  # the plain layer switched; the exported graph was not asked
    set_mode(wrapper, False)
    assert not wrapper[1].training


@pytest.mark.parametrize("scale", ["absolute", "range", "std"])
def test_evasion_in_relative_units_on_an_exported_program(scale, small):
    """The attack wraps the model to work in each feature's units; an exported program inside the wrapper keeps
    its fixed mode (asking it to switch would raise)."""
    from amulet_audit.core import registry

    from conftest import context

    torch.manual_seed(0)
    handle = _handle(small.parent, LAYER_MODELS["dropout"](), "export", "dropout_export3")
    out = registry.attack_class("pgd")(eps=0.1, steps=3, scale=scale).run(context(handle, load_data(small)))
    assert not out.not_applicable and 0.0 <= out.metrics["robust_accuracy"].value <= 1.0


def test_only_set_mode_switches_train_and_eval():
    """An exported program raises on .train()/.eval(): every mode switch in the package goes through
    `core.mode.set_mode`, which leaves such graphs alone. A direct call anywhere else fails this test."""
    import ast

    package = Path(__file__).resolve().parents[1] / "amulet_audit"
    calls = []
    for path in sorted(package.rglob("*.py")):
        if path.relative_to(package).as_posix() == "core/mode.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("train", "eval") and len(node.args) <= 1 and not node.keywords):
                calls.append(f"{path.relative_to(package)}:{node.lineno}")
    assert calls == []


@pytest.mark.parametrize("layer", ["groupnorm", "layernorm", "batchnorm"])
def test_exported_copies_are_initialised_by_their_layer_kinds(layer, small):
    """An exported graph keeps no layer classes; its copies still start as PyTorch initialises each layer (a norm
    layer's scale 1 and shift 0), the same start as a scripted copy of the same architecture."""
    torch.manual_seed(0)
    net = LAYER_MODELS[layer]()
    exported = _handle(small.parent, net, "export", f"{layer}_export_init")
    scripted = _handle(small.parent, net, "scripted", f"{layer}_script_init")
    a, b = exported.fresh_copy(3).state_dict(), scripted.fresh_copy(3).state_dict()
    assert torch.equal(a["1.weight"], torch.ones(16)) and torch.equal(a["1.bias"], torch.zeros(16))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

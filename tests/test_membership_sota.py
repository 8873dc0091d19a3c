"""LiRA and RMIA on real models: they find members of an overfit model that LOSS misses at low false-positive
rates, and find nothing in a DP-SGD model; their formulas on hand-checked inputs; the report's combined ROC."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import norm

from amulet_audit.inputs.data import load_data
from amulet_audit.inputs.model import load_model
from amulet_audit.risks.membership import (
    RMIA, LiRA, LossAttack, lira_scores, logit_confidence, rmia_scores, true_class_probability,
)

from conftest import context, make_tabular

OVERFIT = dict(n=1200, n_members=200, epochs=200, hidden=256, seed=1, noise=2.0)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small models train fastest on one thread; more only contend on a shared 2-core machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def overfit(tmp_path_factory):
    """An MLP that memorised 200 noisy members, its data, and a cache shared by the attacks run on it."""
    from amulet_audit.training.cache import ModelCache

    folder = tmp_path_factory.mktemp("overfit")
    path = make_tabular(folder, **OVERFIT)
    ctx = context(load_model(path), load_data(path.with_name("model.data.yaml")))
    ctx.cache = ModelCache(folder / "cache")
    return ctx


@pytest.fixture(scope="module")
def overfit_results(overfit):
    return {name: attack.run(overfit) for name, attack in
            (("loss", LossAttack()), ("lira", LiRA()), ("rmia", RMIA()))}


def _dp_model(ctx, folder, epsilon: float):
    """The overfit model's architecture trained with DP-SGD (Opacus, make_private_with_epsilon) on the same members."""
    import warnings

    import torch
    from opacus import PrivacyEngine

    data = ctx.data
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, OVERFIT["hidden"]), torch.nn.ReLU(), torch.nn.Linear(OVERFIT["hidden"], 2))
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.as_tensor(data.x_train), torch.as_tensor(data.y_train)),
        batch_size=50, generator=torch.Generator().manual_seed(0))
    epochs = 20
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        engine = PrivacyEngine(accountant="rdp")
        model, optimizer, loader = engine.make_private_with_epsilon(
            module=net, optimizer=torch.optim.SGD(net.parameters(), lr=0.5), data_loader=loader,
            target_epsilon=epsilon, target_delta=1e-3, epochs=epochs, max_grad_norm=1.0)
        for _ in range(epochs):
            for xb, yb in loader:
                if len(yb) == 0:
                    continue
                optimizer.zero_grad()
                torch.nn.functional.cross_entropy(model(xb), yb).backward()
                optimizer.step()
        spent = engine.get_epsilon(1e-3)
    assert spent <= epsilon + 1e-6
    # a clean copy of the trained weights: Opacus leaves its hooks on the wrapped module
    module = torch.nn.Sequential(torch.nn.Linear(6, OVERFIT["hidden"]), torch.nn.ReLU(), torch.nn.Linear(OVERFIT["hidden"], 2))
    module.load_state_dict(model._module.state_dict())
    module.eval()
    path = folder / "dp.pt"
    torch.jit.save(torch.jit.script(module), path)
    return load_model(path)


@pytest.mark.slow
def test_lira_finds_members_of_an_overfit_model_and_not_of_a_dp_sgd_model(overfit, overfit_results, tmp_path):
    import dataclasses

    lira = overfit_results["lira"]
    dp_ctx = dataclasses.replace(overfit, model=_dp_model(overfit, tmp_path, epsilon=1.0))
    dp = LiRA().run(dp_ctx)
    assert dp.details["reference_models_from_cache"] == 8  # the same reference models as for the overfit model
    high, low = lira.metrics["tpr_at_fpr_0.01"], dp.metrics["tpr_at_fpr_0.01"]
    assert high.value >= 0.08 and high.value > low.value + 0.05  # many members identified with 1% false alarms
    # 200 non-members cannot bound the 1%-FPR threshold from above (that takes 368): no lower end above 0 is valid
    assert high.ci[0] == 0.0 and high.ci[1] > low.ci[1]
    assert low.value <= 0.04
    auc = dp.metrics["auc"]
    assert auc.ci[0] <= 0.5 <= auc.ci[1]  # DP-SGD at epsilon 1: no detectable membership signal
    assert lira.metrics["auc"].ci[0] > 0.6


@pytest.mark.slow
def test_lira_and_rmia_beat_loss_at_one_percent_fpr_on_the_overfit_model(overfit_results):
    tpr = {name: out.metrics["tpr_at_fpr_0.01"].value for name, out in overfit_results.items()}
    assert tpr["lira"] > tpr["loss"] + 0.04, tpr
    assert tpr["rmia"] > tpr["loss"] + 0.04, tpr
    for out in overfit_results.values():
        assert out.metrics["auc"].value > 0.6


@pytest.mark.slow
def test_evidence_records_the_setup_and_only_row_indices(overfit, overfit_results):
    data = overfit.data
    lira, rmia = overfit_results["lira"].details, overfit_results["rmia"].details
    assert lira["reference_models"] == 8 and lira["online"] is True and lira["variance"] == "global"
    assert lira["in_models_per_record"] == 4 and lira["out_models_per_record"] == 4
    assert lira["reference_trainer"] == "vectorised"  # TorchScript trains through its functional copy
    assert rmia["reference_models"] == 2 and rmia["population_records"] == 800
    assert rmia["reference_models_from_cache"] == 2  # LiRA's first pair, reused
    for details in (lira, rmia, overfit_results["loss"].details):
        json.dumps(details, allow_nan=False)
        exposed = details["most_exposed"]
        assert len(exposed) == 10 and all(set(e) == {"split", "row", "score"} for e in exposed)
        for e in exposed:
            assert 0 <= e["row"] < len(data.y_train if e["split"] == "train" else data.y_holdout)
        scores = [e["score"] for e in exposed]
        assert scores == sorted(scores, reverse=True)
    for details in (lira, rmia):  # at their top, the reference-model attacks flag mostly real members
        assert sum(e["split"] == "train" for e in details["most_exposed"]) >= 7


def test_lira_online_score_is_the_gaussian_likelihood_ratio():
    rng = np.random.default_rng(0)
    masks = np.array([[1, 0, 1], [0, 1, 1], [1, 1, 0], [0, 0, 0]], dtype=bool)  # (K=4, n=3)
    ref = rng.normal(size=(4, 3))
    target = np.array([0.3, -1.0, 2.0])
    got = lira_scores(target, ref, masks, online=True, variance="per_example")
    for i in range(3):
        vin, vout = ref[masks[:, i], i], ref[~masks[:, i], i]
        sd_in = vin.std(ddof=1) if len(vin) > 1 else None
        sd_out = vout.std(ddof=1) if len(vout) > 1 else None
        if sd_in is None or sd_out is None:
            continue  # a single model on one side falls back to the pooled variance
        want = norm.logpdf(target[i], vin.mean(), sd_in) - norm.logpdf(target[i], vout.mean(), sd_out)
        assert got[i] == pytest.approx(want)
    offline = lira_scores(target, ref, masks, online=False, variance="global")
    mu = [ref[~masks[:, i], i].mean() for i in range(3)]
    assert np.all(np.isfinite(offline))
    # offline depends on the target only through (target - mu_out): shifting the target up raises the score
    assert np.all(lira_scores(target + 1.0, ref, masks, online=False, variance="global") > offline)
    assert offline[0] == pytest.approx(-norm.logsf(target[0], mu[0], _pooled_sd(ref, ~masks)))


def _pooled_sd(ref, sel):
    dev = [(ref[sel[:, i], i] - ref[sel[:, i], i].mean()) for i in range(ref.shape[1])]
    return np.sqrt(sum((d ** 2).sum() for d in dev) / sum(len(d) - 1 for d in dev))


def test_rmia_score_is_the_fraction_of_population_records_dominated():
    rng = np.random.default_rng(1)
    k, n, m = 4, 7, 30
    ref_x, ref_z = rng.uniform(0.05, 1, size=(k, n)), rng.uniform(0.05, 1, size=(k, m))
    target_x, target_z = rng.uniform(0.05, 1, size=n), rng.uniform(0.05, 1, size=m)
    in_x = np.array([[1, 0] * 3 + [1]] * 2 + [[0, 1] * 3 + [0]] * 2, dtype=bool)
    in_z = np.zeros((k, m), dtype=bool)
    a, gamma = 0.3, 1.5
    for online in (True, False):
        got = rmia_scores(target_x, ref_x, in_x, target_z, ref_z, in_z, online=online, a=a, gamma=gamma)
        out_z = ref_z.mean(axis=0)
        pr_z = 0.5 * ((1 + a) * out_z + (1 - a))
        for i in range(n):
            out_x = ref_x[~in_x[:, i], i].mean()
            pr_x = 0.5 * (ref_x[in_x[:, i], i].mean() + out_x) if online else 0.5 * ((1 + a) * out_x + (1 - a))
            lr = (target_x[i] / pr_x) / (target_z / pr_z)
            assert got[i] == pytest.approx(np.mean(lr >= gamma))


def test_confidences_are_computed_stably_from_logits():
    z = np.array([[1000.0, 0.0, -5.0], [0.2, 0.1, -0.3], [-800.0, 800.0, 0.0]])
    y = np.array([0, 2, 0])
    phi = logit_confidence(z, y)
    assert np.all(np.isfinite(phi))
    assert phi[0] == pytest.approx(1000.0 - np.log1p(np.exp(-5.0))) and phi[2] == pytest.approx(-1600.0)
    p = np.exp(z[1]) / np.exp(z[1]).sum()
    assert phi[1] == pytest.approx(np.log(p[2] / (1 - p[2])))
    assert true_class_probability(z, y)[1] == pytest.approx(p[2])
    assert logit_confidence(np.stack([z, z]), y).shape == (2, 3)


@pytest.mark.slow
def test_report_shows_every_membership_run_on_one_roc_chart(overfit_results):
    from amulet_audit.report import document
    from amulet_audit.report.nodes import Chart, Table
    from amulet_audit.results.model import MetricInfo, RequirementResult, Run, Threshold, Verdict

    reqs, runs = [], {}
    for i, (name, out) in enumerate(overfit_results.items(), 1):
        runs[f"r{i}"] = Run(id=f"r{i}", attack=name, details=out.details)
        for metric in ("auc", "tpr_at_fpr_0.01"):
            m = out.metrics[metric]
            reqs.append(RequirementResult(
                id=f"{name}-{metric}", risk="membership_inference", attack=name, metric=metric, value=m.value,
                ci=list(m.ci), n=m.n, threshold=Threshold(op="<=", value=0.6), verdict=Verdict.FAIL, run=f"r{i}",
                metric_info=MetricInfo(higher_is_worse=True, unit="fraction")))
    section = document._section("membership_inference", reqs, runs)
    charts = [(ev.heading, b) for ev in section.evidence for b in ev.blocks if isinstance(b, Chart)]
    assert len(charts) == 1  # one chart for the section, not one per run
    combined = section.evidence[0]
    assert combined.heading == "all membership attacks compared" and len(combined.requirement_ids) == 6
    table = combined.blocks[1]
    assert [row[0] for row in table.rows] == ["loss", "lira", "rmia"]
    assert [row[2] for row in table.rows] == ["—", "8", "2"] and table.rows[1][3] == "online"
    assert combined.blocks[0].svg.count('stroke-dasharray') >= 2  # the runs are told apart by line style too
    for ev in section.evidence[1:]:
        exposed = [b for b in ev.blocks if isinstance(b, Table) and b.columns[0] == "Rank"]
        assert len(exposed) == 1 and len(exposed[0].rows) == 10

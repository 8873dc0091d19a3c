"""scikit-learn and gradient-boosted models saved with skops: loading (untrusted types refused), the capability table
and its reasons, trained copies as fitted clones (seeded, weighted), LiRA against a plain re-implementation, and the
credit_gbm example audited end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import AMULET, ROOT, context

pytest.importorskip("skops")

EXAMPLE = ROOT / "examples" / "credit_gbm" / "train.py"
TRUST = "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"


@pytest.fixture(scope="module")
def gbm(tmp_path_factory):
    """The credit_gbm example, small: 600 records (300 members, 300 holdout), 40 trees. Returns its folder."""
    out = tmp_path_factory.mktemp("credit_gbm")
    done = subprocess.run([sys.executable, EXAMPLE, "--out", out, "--n", "600", "--trees", "40"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture(scope="module")
def gbm_inputs(gbm):
    from amulet_audit.inputs.data import load_data
    from amulet_audit.inputs.model import load_model
    from amulet_audit.ops.scores import attach

    data = load_data(gbm / "model.data.yaml")
    return attach(load_model(gbm / "model.skops", trust_types=(TRUST,)), data), data


def _cli(*args):
    return subprocess.run([*AMULET, *map(str, args)], capture_output=True, text=True)


def test_untrusted_types_are_refused_with_the_fix(gbm, tmp_path):
    from amulet_audit.core.errors import InputError
    from amulet_audit.inputs.model import load_model

    with pytest.raises(InputError, match="--trust-type " + TRUST.replace(".", r"\.")):
        load_model(gbm / "model.skops")
    done = _cli(gbm / "model.skops", "--policy", "nyc_ll144", "--out", tmp_path / "r", "--quiet", "--no-pdf")
    assert done.returncode == 2
    err = done.stderr.strip()
    assert err.count("\n") == 0 and "model.skops" in err and TRUST in err and "--trust-type" in err
    assert "Traceback" not in done.stderr and not (tmp_path / "r" / "results.json").exists()


def test_handle_reads_scores_through_the_common_path(gbm_inputs):
    from amulet_audit.core.component import MODEL_KINDS, model_capabilities
    from amulet_audit.ops.forward import logits

    model, data = gbm_inputs
    assert model.format == "skops" and model.output == "log_probabilities"
    assert "predict_proba" in model.output_note and "LogSoftmax" not in model.output_note
    assert model.architecture == "Pipeline(StandardScaler, HistGradientBoostingClassifier)"
    assert model.parameters > 40  # tree nodes of 40 trees
    assert model_capabilities(model) == MODEL_KINDS["sklearn"]["offers"] == {"scores", "labels", "trained_copies"}
    proba = model.estimator.predict_proba(data.x_holdout[:50])
    assert np.allclose(np.exp(logits(model.module, data.x_holdout[:50])), proba, atol=1e-9)
    with pytest.raises(TypeError, match="clone"):
        model.fresh_copy(0)


def test_gradient_attacks_and_defenses_say_why_not(gbm_inputs):
    from amulet_audit.core.attack import PROFILES
    from amulet_audit.core.defense import DefenseContext, DefenseNotApplicable
    from amulet_audit.core import registry

    model, data = gbm_inputs
    pgd = registry.attack_class("pgd")(eps=0.1, steps=2).run(context(model, data))
    reason = pgd.metrics["robust_accuracy"].reason
    # the reason names the gradient-free attack that runs instead (score-based square, or label-only hopskipjump)
    assert "a tree ensemble has none" in reason and ("square" in reason or "hopskipjump" in reason), reason
    assert pgd.metrics["clean_accuracy"].value > 0.6  # predictions still give the clean accuracy
    for name in ("dp_sgd", "adversarial_training"):
        with pytest.raises(DefenseNotApplicable, match="a tree ensemble has none"):
            registry.defense_class(name)().apply(DefenseContext(model=model, data=data, seed=0, profile=PROFILES["quick"]))
    # model inversion needs gradients too; LiRA, RMIA, poisoning, extraction and property inference do not
    inversion = registry.attack_class("model_inversion")().run(context(model, data))
    assert "a tree ensemble has none" in inversion.not_applicable


def test_copy_is_a_seeded_clone_and_honours_sample_weight(gbm_inputs):
    from amulet_audit.training.copies import train_copy
    from amulet_audit.ops.forward import logits, predict

    model, data = gbm_inputs
    x, y = data.x_train, data.y_train
    recipe = data.spec.training
    plain = train_copy(model, x, y, recipe, seed=3)
    again = train_copy(model, x, y, recipe, seed=3)
    assert plain.estimator is not model.estimator
    assert plain.estimator[-1].random_state == 3 and bool((plain.fingerprint == again.fingerprint).all())
    assert np.array_equal(logits(plain, data.x_holdout), logits(again, data.x_holdout))
    # weight 0 on every class-1 record: the weighted copy has only class 0 to learn (routed to the pipeline's
    # last step as histgradientboostingclassifier__sample_weight)
    w = (y == 0).astype(float)
    weighted = train_copy(model, x, y, recipe, seed=3, sample_weight=w)
    assert (predict(weighted, data.x_holdout) == 0).mean() > 0.99 > (predict(plain, data.x_holdout) == 0).mean()
    # an estimator whose fit takes no sample_weight is refused, naming it
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline

    import dataclasses

    knn = dataclasses.replace(model, estimator=make_pipeline(KNeighborsClassifier()).fit(x, y),
                              architecture="Pipeline(KNeighborsClassifier)")
    with pytest.raises(ValueError, match="takes no sample_weight"):
        train_copy(knn, x, y, recipe, seed=0, sample_weight=w)


def test_copies_are_cached_as_skops_bytes(gbm_inputs, tmp_path):
    from amulet_audit.training.cache import ModelCache
    from amulet_audit.training.copies import train_copy

    model, data = gbm_inputs
    cache = ModelCache(tmp_path)
    first = train_copy(model, data.x_train, data.y_train, data.spec.training, seed=1, cache=cache)
    second = train_copy(model, data.x_train, data.y_train, data.spec.training, seed=1, cache=cache)
    assert cache.hits == 1 and bool((first.fingerprint == second.fingerprint).all())
    assert not list(tmp_path.rglob("*.pkl"))


def _plain_offline_lira(model, data, seed: int, k: int) -> float:
    """Offline LiRA (Carlini et al., S&P 2022) written out: every member and holdout record attacked; reference
    models are clones fitted on complementary random halves of them (random_state = seed + model index); each
    record's OUT confidences log(p_y / (1 - p_y)) give a Gaussian (its own mean and deviation); the score is
    -log Pr[Z > target confidence]. Returns the AUC."""
    from scipy.stats import norm
    from sklearn.base import clone
    from sklearn.metrics import roc_auc_score

    from amulet_audit.training.reference import half_masks

    x = np.concatenate([data.x_train, data.x_holdout])
    y = np.concatenate([data.y_train, data.y_holdout])
    member = np.r_[np.ones(len(data.x_train)), np.zeros(len(data.x_holdout))]
    masks = half_masks(len(x), k, seed)  # the same random halves

    def confidence(est):
        p = np.clip(est.predict_proba(x)[np.arange(len(y)), y], 1e-300, 1.0)
        return np.log(p) - np.log(np.clip(1.0 - p, 1e-300, None))

    ref = []
    for i in range(k):
        est = clone(model.estimator).set_params(histgradientboostingclassifier__random_state=seed + i)
        ref.append(confidence(est.fit(x[masks[i]], y[masks[i]])))
    ref = np.array(ref)
    out = ~masks
    mu = (ref * out).sum(0) / out.sum(0)
    sd = np.sqrt(np.maximum((((ref - mu) ** 2) * out).sum(0) / (out.sum(0) - 1), 1e-8))
    scores = -norm.logsf(confidence(model.estimator), loc=mu, scale=sd)
    return float(roc_auc_score(member, scores))


def test_lira_matches_a_plain_reimplementation(gbm_inputs):
    from amulet_audit.core import registry

    model, data = gbm_inputs
    out = registry.attack_class("lira")(online=False, variance="per_example", n_reference=8).run(context(model, data))
    assert out.details["reference_trainer"] == "estimator clones"
    ours = out.metrics["auc"].value
    plain = _plain_offline_lira(model, data, seed=0, k=8)
    assert abs(ours - plain) < 0.005, (ours, plain)
    assert ours > 0.55  # a boosted model fitted to 300 records leaks membership


def _audit(gbm, out, policy):
    done = _cli(gbm / "model.skops", "--policy", policy, "--out", out, "--profile", "quick", "--quiet", "--no-pdf",
                "--trust-type", TRUST)
    assert done.returncode in (0, 1), done.stderr
    return json.loads((out / "results.json").read_text())


def _complete(result):
    """Every requirement is a value or a reason."""
    for r in result["requirements"]:
        assert r["value"] is not None or r.get("reason"), r["id"]
        assert r["verdict"] != "not_applicable" or r.get("reason"), r["id"]


def test_credit_gbm_nyc_ll144_audit_is_complete(gbm, tmp_path):
    result = _audit(gbm, tmp_path / "r", "nyc_ll144")
    _complete(result)
    assert result["model"]["format"] == "skops" and result["model"]["parameters"] > 0
    rows = {r["id"]: r for r in result["requirements"]}
    assert rows["ll144-impact-ratio"]["value"] is not None
    assert result["copy_fidelity"]["faithful"] and result["copy_fidelity"]["agreement"] > 0.95


@pytest.mark.slow
def test_credit_gbm_eu_ai_act_audit_is_complete(gbm, tmp_path):
    result = _audit(gbm, tmp_path / "r", "eu_ai_act")
    _complete(result)
    rows = {r["id"]: r for r in result["requirements"]}
    runs = {r["id"]: r for r in result["runs"]}
    evasion = [r for r in rows.values() if r["risk"] == "evasion" and r["metric"] == "robust_accuracy"]
    # a tree ensemble has no gradients: PGD and APGD do not apply, the score-based square attack measured instead
    assert evasion and all(r["value"] is not None and runs[r["run"]]["attack"] == "square" for r in evasion)
    assert all("a tree ensemble has none" in r["warnings"][0] for r in evasion)
    lira = rows["membership-privacy-lira"]
    assert lira["value"] is not None and runs[lira["run"]]["details"]["reference_trainer"] == "estimator clones"
    for risk in ("poisoning", "model_extraction", "distribution_inference"):
        assert any(r["value"] is not None for r in rows.values() if r["risk"] == risk), risk


def test_lightgbm_through_its_sklearn_interface(gbm, gbm_inputs, tmp_path):
    """A LightGBM classifier saved with skops: refused until its three types are trusted, then read and copied."""
    lightgbm = pytest.importorskip("lightgbm")
    from skops.io import dump

    from amulet_audit.core.errors import InputError
    from amulet_audit.inputs.model import load_model
    from amulet_audit.ops.forward import logits
    from amulet_audit.ops.scores import attach
    from amulet_audit.training.copies import train_copy

    _, data = gbm_inputs
    est = lightgbm.LGBMClassifier(n_estimators=20, num_leaves=7, verbose=-1, random_state=0)
    dump(est.fit(data.x_train, data.y_train), tmp_path / "lgbm.skops")
    with pytest.raises(InputError) as refused:
        load_model(tmp_path / "lgbm.skops")
    trust = ("collections.OrderedDict", "lightgbm.basic.Booster", "lightgbm.sklearn.LGBMClassifier")
    assert all(t in str(refused.value) for t in trust[1:])
    model = attach(load_model(tmp_path / "lgbm.skops", trust_types=trust), data)
    assert model.architecture == "LGBMClassifier" and model.parameters == 20 * (2 * 7 - 1)
    assert np.allclose(np.exp(logits(model.module, data.x_holdout)), est.predict_proba(data.x_holdout), atol=1e-9)
    copy = train_copy(model, data.x_train, data.y_train, data.spec.training, seed=0)
    assert np.allclose(logits(copy, data.x_holdout), logits(model.module, data.x_holdout))  # same data, same seed


def test_an_estimator_fitted_on_columns_in_another_order_is_refused(gbm, tmp_path):
    """The audit feeds the data spec's features in the spec's order: an estimator fitted on a DataFrame whose
    columns are in another order would be audited as another function, so it is refused naming its order; one
    fitted in the spec's order reads its columns by name."""
    import pandas as pd
    import yaml
    from sklearn.linear_model import LogisticRegression
    from skops.io import dump

    spec = yaml.safe_load((gbm / "model.data.yaml").read_text())
    frame = pd.read_parquet(gbm / spec["source"]["path"])
    train = frame[frame[spec["split"]["column"]] == spec["split"]["train"]]
    features = spec["features"]
    y = train[spec["target"]].map({c: i for i, c in enumerate(spec["classes"])}) if spec.get("classes") else train[spec["target"]]
    for name, columns in (("reversed", features[::-1]), ("same", features)):
        model = LogisticRegression(max_iter=500).fit(train[columns], np.asarray(y, dtype=np.int64))
        dump(model, gbm / f"{name}.skops")
    spec_path = gbm / "model.data.yaml"
    done = _cli(gbm / "reversed.skops", "--data", spec_path, "--policy", "nyc_ll144", "--out", tmp_path / "r",
                "--profile", "quick", "--quiet", "--no-pdf")
    assert done.returncode == 2 and "key 'features' lists the columns in another order" in done.stderr, done.stderr
    assert features[-1] in done.stderr and "Traceback" not in done.stderr
    done = _cli(gbm / "same.skops", "--data", spec_path, "--policy", "nyc_ll144", "--out", tmp_path / "s",
                "--profile", "quick", "--quiet", "--no-pdf")
    assert done.returncode in (0, 1), done.stderr
    assert "feature names" not in done.stderr  # read by name: no scikit-learn warning per call

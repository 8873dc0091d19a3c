"""The component contract: every registered attack, defense and metric passes the named conformance checks;
the checks catch what they claim to; parameters, needs and budgets are enforced by the base classes; a broken
plugin stops the CLI with exit 2 naming its distribution."""

from __future__ import annotations

from numbers import Real

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from amulet_audit.core import registry
from amulet_audit.core.attack import PROFILES, Attack, AttackContext, AttackResult, rate
from amulet_audit.core.conformance import contract_problems
from amulet_audit.core.defense import Defense, DefenseContext, DefenseNotApplicable
from amulet_audit.core.params import Boolean, Interval, Options, ParameterError
from amulet_audit.testing import check_component, parametrize_conformance, tiny_inputs

ROOT = Path(__file__).resolve().parents[1]


@parametrize_conformance()
def test_every_registered_component_passes_the_conformance_checks(check):
    check()


def _ctx(model=None, data=None, **kw):
    m, d = tiny_inputs()
    return AttackContext(model=model or m, data=data or d, seed=0, profile=PROFILES["quick"], **kw)


def _failures(component, inputs=None) -> dict[str, str]:
    out = {}
    for name, check in check_component(component, inputs):
        try:
            check()
        except AssertionError as exc:
            out[name] = str(exc)
    return out


# --- the checks can fail ------------------------------------------------------------------------------------------

class _Accuracy(Attack):
    """A minimal attack: clean accuracy on the holdout records."""

    name = "probe_accuracy"
    risk = "evasion"
    metrics = ("clean_accuracy",)
    defaults = {"samples": 50}
    parameter_constraints = {"samples": Interval(int, 10, None)}

    def _run(self, ctx):
        from amulet_audit.ops.forward import predict

        n = self.get_params()["samples"]
        ok = predict(ctx.model.module, ctx.data.x_holdout[:n]) == ctx.data.y_holdout[:n]
        return AttackResult({"clean_accuracy": rate(ok, np.arange(n), confidence=ctx.confidence)}, {"n": n})


class _Unseeded(_Accuracy):
    def _run(self, ctx):
        out = super()._run(ctx)
        out.details["noise"] = float(np.random.default_rng().random())  # not from ctx.seed
        return out


class _Meddler(_Accuracy):
    def _run(self, ctx):
        ctx.data.x_holdout[-1, 0] += 1.0  # alters the audit data (a record it does not read)
        return super()._run(ctx)


class _Unreported(_Accuracy):
    metrics = ("clean_accuracy", "robust_accuracy")


class _OverridesRun(_Accuracy):
    def run(self, ctx):  # skips validation and needs
        return self._run(ctx)


class _NeedsIgnored(_Accuracy):
    needs = frozenset({"sensitive"})

    def run(self, ctx):
        return self._run(ctx)


def _own_inputs():
    model, data = tiny_inputs()
    return model, dataclasses.replace(data, x_holdout=data.x_holdout.copy())


def test_a_conforming_attack_passes_and_each_violation_fails_its_own_check():
    assert _failures(_Accuracy) == {}
    assert set(_failures(_Unseeded)) == {"same_seed_same_result"}
    assert set(_failures(_Meddler, _own_inputs())) == {"model_and_data_unchanged"}
    assert set(_failures(_Unreported)) == {"metrics_reported"}
    failed = _failures(_OverridesRun)
    assert {"contract_declared", "invalid_params_refused"} <= set(failed)
    assert "overrides run()" in failed["contract_declared"]
    assert "needs_honoured" in _failures(_NeedsIgnored)


def test_a_rate_metric_must_carry_its_binomial_interval():
    class Widened(_Accuracy):
        def _run(self, ctx):
            out = super()._run(ctx)
            m = out.metrics["clean_accuracy"]
            out.metrics["clean_accuracy"] = dataclasses.replace(m, ci=(m.ci[0] / 2, min(1.0, m.ci[1] * 1.1)))
            return out

    assert "kind 'rate'" in _failures(Widened)["measurements_valid"]


def test_a_statistic_metric_must_not_claim_a_binomial_interval():
    """TPR at a fixed FPR is a share of the members, but its threshold is estimated from the non-members: a binomial
    interval over the members alone (what a `rate` would carry) ignores that, and the check refuses it."""
    class BinomialTpr(_Accuracy):
        name = "probe_binomial_tpr"
        risk = "membership_inference"
        metrics = ("tpr_at_fpr_0.01",)

        def _run(self, ctx):
            return AttackResult({"tpr_at_fpr_0.01": super()._run(ctx).metrics["clean_accuracy"]}, {})

    assert registry.metrics()["tpr_at_fpr_0.01"].obj.kind == "statistic"
    assert "kind 'statistic' records a binomial interval" in _failures(BinomialTpr)["measurements_valid"]


def test_declarations_are_checked_without_running():
    class Broken(Attack):
        name = "broken"
        risk = "no_such_risk"
        metrics = ("clean_accuracy",)
        needs = frozenset({"telepathy"})
        defaults = {"a": 1, "b": True}
        parameter_constraints = {"a": Interval(int, 2, None), "c": Boolean()}
        budgets = {"quick": {"k": 1}, "standard": {"k": 2}}

    problems = "; ".join(contract_problems(Broken))
    for expected in ("unknown risk 'no_such_risk'", "does not implement _run", "b, c", "telepathy",
                     "one dict per profile"):
        assert expected in problems, expected


# --- parameters ---------------------------------------------------------------------------------------------------

def test_every_attack_and_defense_validates_its_parameters_before_any_work():
    model, data = tiny_inputs()
    for name, reg in registry.attacks().items():
        with pytest.raises(ParameterError) as exc:
            reg.obj(no_such_parameter=1).run(_ctx())
        assert f"'{name}' has no parameter 'no_such_parameter'" in str(exc.value)
    for name, reg in registry.defenses().items():
        with pytest.raises(ParameterError, match=f"'{name}' has no parameter"):
            reg.obj(no_such_parameter=1).apply(DefenseContext(model=model, data=data, seed=0, profile=PROFILES["quick"]))


def test_one_error_form_names_the_component_the_parameter_and_the_allowed_values():
    from amulet_audit.risks.evasion import PGD

    with pytest.raises(ParameterError) as exc:
        PGD(norm="l3", steps=0).run(_ctx())
    msg = str(exc.value)
    assert "'pgd' parameter 'norm' must be one of l2, linf, got 'l3'" in msg
    assert "'pgd' parameter 'steps' must be an integer in [1, 10000], got 0" in msg
    assert exc.value.problems and isinstance(exc.value, ValueError)


@pytest.mark.parametrize("value", [1, 0, 0.0, 1.0, "true", None])
def test_booleans_accept_only_true_and_false(value):
    from amulet_audit.risks.evasion import PGD
    from amulet_audit.risks.membership import LiRA

    assert not Boolean().check(value)
    assert Boolean().check(True) and Boolean().check(False)
    for cls, key in ((PGD, "random_start"), (LiRA, "online")):
        with pytest.raises(ParameterError, match=f"'{key}' must be true or false"):
            cls(**{key: value}).run(_ctx())


def test_options_do_not_mix_up_booleans_numbers_and_unhashable_values():
    assert not Options(frozenset({0, 1})).check(True)
    assert not Options(frozenset({True, False})).check(1)
    assert not Options(frozenset({"linf", "l2"})).check(["linf"])
    assert Options(frozenset({"linf", "l2"})).check("l2")


def test_no_builtin_declares_a_boolean_as_options():
    for reg in [*registry.attacks().values(), *registry.defenses().values()]:
        for key, c in reg.obj.parameter_constraints.items():
            assert not (isinstance(c, Options) and c.values <= {True, False}), f"{reg.name}.{key}: use Boolean()"


# --- needs --------------------------------------------------------------------------------------------------------

def test_a_label_only_model_makes_attacks_that_need_scores_gradients_or_copies_not_applicable():
    model, data = tiny_inputs()
    labels = dataclasses.replace(model)
    labels.output = "labels"
    refused = []
    for name, reg in registry.attacks().items():
        attack = reg.obj()
        if attack.needs_for(attack.get_params()) & {"scores", "gradients", "trained_copies"}:
            out = attack.run(_ctx(model=labels))
            assert out.not_applicable.startswith("this needs the model's") and "labels only" in out.not_applicable, name
            assert not out.metrics
            refused.append(name)
    assert {"loss", "lira", "rmia", "attribute_inference"} <= set(refused)
    # group fairness reads predicted labels only
    assert not registry.attack_class("group_fairness")().run(_ctx(model=labels)).not_applicable


def test_extraction_needs_scores_only_when_it_reads_probabilities():
    from amulet_audit.risks.extraction import Extraction

    assert "scores" in Extraction().needs_for(Extraction().get_params())
    assert "scores" not in Extraction(access="labels").needs_for(Extraction(access="labels").get_params())


def test_a_missing_sensitive_attribute_or_positive_label_is_one_sentence():
    model, data = tiny_inputs()
    bare = dataclasses.replace(data, sensitive_train={}, sensitive_holdout={})
    for name in ("attribute_inference", "property_inference", "group_fairness"):
        assert registry.attack_class(name)().run(_ctx(data=bare)).not_applicable == "the data spec names no sensitive attribute"
    no_positive = dataclasses.replace(data, spec=data.spec.model_copy(update={"positive_label": None}))
    assert "positive_label" in registry.attack_class("group_fairness")().run(_ctx(data=no_positive)).not_applicable
    with pytest.raises(DefenseNotApplicable, match="no sensitive attribute"):
        registry.defense_class("fairness_mitigation")().apply(
            DefenseContext(model=model, data=bare, seed=0, profile=PROFILES["quick"]))


# --- budgets ------------------------------------------------------------------------------------------------------

def test_budgets_are_declared_per_profile_and_read_through_one_accessor():
    from amulet_audit.defenses.dp_sgd import DPSGD
    from amulet_audit.risks.membership import LiRA, RMIA

    assert [LiRA.budget(PROFILES[p], "n_reference") for p in PROFILES] == [8, 16, 64]
    assert RMIA.budget("quick") == {"n_reference": 2, "population": 1000}
    assert DPSGD.budget("thorough", "epoch_cap") is None  # no cap: the recipe's epochs
    with pytest.raises(KeyError, match="no budget for profile 'huge'"):
        LiRA.budget("huge", "n_reference")
    declared = [reg.obj for reg in [*registry.attacks().values(), *registry.defenses().values()] if reg.obj.budgets]
    assert len(declared) >= 7


# --- plugins ------------------------------------------------------------------------------------------------------

def _plugin(site: Path, module_source: str, group: str = "amulet_audit.attacks", name: str = "probe") -> Path:
    """A distribution 'fake-plugin 0.1' on `site` whose entry point `name` in `group` is fake_plugin_mod:Probe."""
    info = site / "fake_plugin-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{group}]\n{name} = fake_plugin_mod:Probe\n")
    (site / "fake_plugin_mod.py").write_text(module_source)
    return site


@pytest.fixture
def fresh_registry():
    for f in (registry.attacks, registry.metrics, registry.defenses):
        f.cache_clear()
    yield
    for f in (registry.attacks, registry.metrics, registry.defenses):
        f.cache_clear()


def _with_plugin(monkeypatch, site: Path):
    """Install the distribution on `site` for this test: importlib.metadata finds entry points on sys.path."""
    monkeypatch.syspath_prepend(str(site))


def test_a_plugin_that_breaks_the_contract_exits_2_naming_its_distribution(tmp_path, monkeypatch, capsys, fresh_registry):
    from amulet_audit.cli import main

    source = ("from amulet_audit.core.attack import Attack\n"
              "class Probe(Attack):\n"
              "    name, risk, metrics = 'probe', 'evasion', ('clean_accuracy',)\n"
              "    def run(self, ctx):\n"
              "        return None\n")
    _with_plugin(monkeypatch, _plugin(tmp_path / "site", source))
    assert main(["validate", "eu_ai_act"]) == 2
    err = capsys.readouterr().err
    assert "attack 'probe' from fake-plugin 0.1" in err and "overrides run()" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_a_plugin_that_fails_to_import_exits_2_naming_its_distribution(tmp_path):
    site = _plugin(tmp_path / "site", "import missing_dependency_of_the_plugin\n", group="amulet_audit.defenses")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    proc = subprocess.run([sys.executable, "-m", "amulet_audit", "validate", "eu_ai_act"], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "'probe'" in proc.stderr and "fake-plugin 0.1" in proc.stderr and "failed to import" in proc.stderr
    assert "missing_dependency_of_the_plugin" in proc.stderr and "Traceback" not in proc.stderr



def test_the_runner_holds_third_party_components_to_the_contract():
    """A plugin that modifies the audited model, fails, or returns evidence that is not JSON stops the audit with
    exit 2 naming it and its distribution; a built-in's own error stays an internal error."""
    from types import SimpleNamespace

    import torch

    from amulet_audit.core.errors import InputError
    from amulet_audit.run.jobs import guarded

    model = SimpleNamespace(module=torch.nn.Linear(3, 2))
    plugin = "thirdparty-attacks 0.3.1"

    def modifies():
        with torch.no_grad():
            model.module.weight.zero_()

    def fails():
        raise RuntimeError("boom")

    with pytest.raises(InputError, match=r"attack 'x' from thirdparty-attacks 0\.3\.1 modified the audited model's "
                                         r"weights.*authors of thirdparty-attacks"):
        guarded("attack", "x", plugin, model, modifies, lambda out: {})
    with pytest.raises(InputError, match=r"attack 'x' from thirdparty-attacks 0\.3\.1 failed on this audit "
                                         r"\(RuntimeError: boom\)"):
        guarded("attack", "x", plugin, model, fails, lambda out: {})
    with pytest.raises(InputError, match="defense 'd' from thirdparty-attacks 0.3.1 failed.*not JSON serializable"):
        guarded("defense", "d", plugin, model, lambda: np.float32(1.0), lambda out: {"v": out})
    with pytest.raises(RuntimeError, match="boom"):  # a built-in's bug is not the user's input
        guarded("attack", "x", "amulet-audit 1.0", model, fails, lambda out: {})
    with pytest.raises(RuntimeError, match="modified the audited model"):
        guarded("attack", "x", "amulet-audit 1.0", model, lambda: model.module.bias.data.add_(1.0), lambda out: {})
    assert guarded("attack", "x", plugin, model, lambda: 7, lambda out: {"ok": 1.5}) == 7


def test_constraints_refuse_non_finite_numbers_and_survive_a_raising_check():
    from amulet_audit.core.params import Interval, validate_params

    eps = Interval(Real, 0, None, closed="neither")
    assert not eps.check(float("inf")) and not eps.check(float("nan")) and eps.check(0.1)
    assert str(Interval(int, 1, None)) == "an integer in [1, inf]"

    class Positive:
        def check(self, v):
            return v > 0  # raises for a string

        def __str__(self):
            return "a positive number"

    assert validate_params("p", {"sigma": Positive()}, {"sigma": "abc"}) == [
        "'p' parameter 'sigma' must be a positive number, got 'abc'"]


def test_a_model_without_parameters_offers_no_trained_copies():
    """A fixed rule written as a module has nothing to train: attacks and checks that train copies say so."""
    from types import SimpleNamespace

    import torch

    from amulet_audit.core.component import model_capabilities, unmet_need

    class Rule(torch.nn.Module):
        def forward(self, x):
            return torch.stack([-x[:, 0], x[:, 0]], 1)

    rule, mlp = SimpleNamespace(module=Rule(), output="logits"), SimpleNamespace(module=torch.nn.Linear(2, 2), output="logits")
    assert "trained_copies" not in model_capabilities(rule) and "gradients" in model_capabilities(rule)
    assert unmet_need({"trained_copies"}, rule, None) == (
        "this needs the model's trainable copies of its architecture, and the model has no parameters to train")
    assert unmet_need({"trained_copies"}, mlp, None) == ""

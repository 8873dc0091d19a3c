"""Policies: schema, line-numbered errors, bundled lookup, extends, registry names, JSON Schema."""

from __future__ import annotations

import json
import textwrap

import pytest

from amulet_audit.core.errors import InputError
from amulet_audit.plan import build_plan
from amulet_audit.policy import bundled_policies, json_schema, load_policy

GOOD = """\
policy: org-overlay
title: Organisation overlay
extends: eu_ai_act
requirements:
  - id: evasion-robustness
    threshold: {min: 0.7}
  - id: extra-gap
    title: Accuracy gap between groups
    risk: discrimination
    metric: accuracy_gap
    threshold: {max: 0.05}
    cite: ["Art. 10(2)(f)"]
"""


def write(tmp_path, text, name="p.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_bundled_eu_ai_act_loads_by_name_and_cites_the_articles():
    for ref in ("eu_ai_act", "eu_ai_act.yaml", "eu-ai-act"):
        loaded = load_policy(ref)
        assert loaded.policy.policy == "eu-ai-act"
    cites = {c for r in loaded.policy.requirements for c in r.cite}
    assert {"Art. 15(1)", "Art. 15(3)", "Art. 15(5)", "Art. 10(2)(f)"} <= cites
    assert {r.risk for r in loaded.policy.requirements} >= {"evasion", "membership_inference", "discrimination"}
    assert "eu_ai_act" in bundled_policies()


def test_extends_merges_by_requirement_id(tmp_path):
    loaded = load_policy(str(write(tmp_path, GOOD)))
    reqs = {r.id: r for r in loaded.policy.requirements}
    base = {r.id: r for r in load_policy("eu_ai_act").policy.requirements}
    assert reqs["evasion-robustness"].threshold.min == 0.7  # tightened
    assert reqs["evasion-robustness"].cite == base["evasion-robustness"].cite  # the rest inherited
    assert reqs["evasion-robustness"].attack == base["evasion-robustness"].attack
    assert "extra-gap" in reqs and set(base) < set(reqs)
    assert len(loaded.chain) == 2  # the hash covers both files


def test_threshold_override_replaces_direction(tmp_path):
    path = write(tmp_path, """\
        policy: o
        title: o
        extends: eu_ai_act
        requirements:
          - id: membership-privacy
            threshold: {max: 0.55}
        """)
    req = {r.id: r for r in load_policy(str(path)).policy.requirements}["membership-privacy"]
    assert req.threshold.max == 0.55 and req.threshold.min is None


@pytest.mark.parametrize("text, expected", [
    ("policy: p\ntitle: t\nrequirements:\n  - id: x\n    risk: evasion\n    metric: robust_accuracy\n"
     "    threshold: {min: 0.5}\n    severty: high\n", ["line 8", "severty", "unknown key"]),
    ("policy: p\ntitle: t\nrequirements:\n  - id: x\n    risk: evasoin\n    metric: robust_accuracy\n    threshold: {min: 0.5}\n",
     ["line 5", "unknown risk 'evasoin'", "did you mean 'evasion'"]),
    ("policy: p\ntitle: t\nrequirements:\n  - id: x\n    risk: evasion\n    metric: robust_acuracy\n    threshold: {min: 0.5}\n",
     ["line 6", "robust_acuracy", "did you mean 'robust_accuracy'"]),
    ("policy: p\ntitle: t\nrequirements:\n  - id: x\n    risk: evasion\n    attack: {name: pgd, params: {eps: -1}}\n"
     "    metric: robust_accuracy\n    threshold: {min: 0.5}\n", ["eps", "must be a number in (0, inf)"]),
    ("policy: p\ntitle: t\nrequirements:\n  - id: x\n    risk: evasion\n    metric: robust_accuracy\n    threshold: {min: 0.5, max: 1}\n",
     ["line 7", "exactly one of 'min' or 'max'"]),
    ("policy: p\ntitle: t\nrequirements: [\n", ["invalid YAML", "line"]),
    ("policy: p\ntitle: t\nrequirements:\n  - id: x\n    risk: evasion\n    metric: robust_accuracy\n    threshold: {min: 0.5}\n"
     "interactions: {defenses: [dp_sgdd]}\n", ["unknown defense 'dp_sgdd'", "known defenses: adversarial_training, dp_sgd, "]),
    ("policy: p\ntitle: t\nextends: no_such_policy\nrequirements:\n  - id: x\n    risk: evasion\n    metric: robust_accuracy\n"
     "    threshold: {min: 0.5}\n", ["line 3", "extends", "not a bundled policy"]),
])
def test_malformed_policies_name_the_problem(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(InputError) as err:
        load_policy(str(path))
    message = str(err.value)
    assert str(path) in message
    for part in expected:
        assert part in message, message
    assert "\n" not in message


def test_extends_cycle_is_refused(tmp_path):
    write(tmp_path, "policy: a\ntitle: a\nextends: b.yaml\nrequirements: []\n", "a.yaml")
    write(tmp_path, "policy: b\ntitle: b\nextends: a.yaml\nrequirements: []\n", "b.yaml")
    with pytest.raises(InputError, match="cycle"):
        load_policy(str(tmp_path / "a.yaml"))


def test_plan_deduplicates_attack_runs():
    policy = load_policy("eu_ai_act").policy
    plan = build_plan(policy)
    assert len(plan.job_of) == len(policy.requirements)
    keys = [j.key for j in plan.jobs]
    assert len(keys) == len(set(keys)) < len(policy.requirements)
    # the PGD requirements at the same budget read one run; so do the LOSS and the group-fairness ones
    for ids in (("declared-accuracy", "evasion-robustness", "evasion-success"),
                ("membership-privacy", "membership-privacy-low-fpr"),
                ("bias-impact-ratio", "bias-demographic-parity", "bias-equalized-odds")):
        assert len({plan.job_of[i].key for i in ids}) == 1


def test_json_schema_refuses_unknown_keys():
    schema = json_schema()
    json.dumps(schema)
    assert schema["additionalProperties"] is False
    assert "requirements" in schema["properties"]


def test_schema_describes_every_key_and_lists_registered_names():
    """`validate --schema` gives an editor real help: every key has a description, names come from the registry."""
    from amulet_audit.policy import json_schema

    schema = json_schema()
    undescribed = [f"{name}.{key}" for name, node in [("Policy", schema), *schema["$defs"].items()]
                   for key, prop in node.get("properties", {}).items() if not prop.get("description")]
    assert undescribed == []
    req = schema["$defs"]["Requirement"]["properties"]
    assert "membership_inference" in req["risk"]["enum"] and "tpr_at_fpr_0.01" in req["metric"]["enum"]
    assert "lira" in schema["$defs"]["AttackRef"]["properties"]["name"]["enum"]
    assert "dp_sgd" in schema["$defs"]["DefenseRef"]["properties"]["name"]["enum"]

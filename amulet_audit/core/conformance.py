"""`check_attack`: the checks every registered attack must pass (built-ins and third-party plugins alike)."""

from __future__ import annotations

import hashlib
import json

import numpy as np

from amulet_audit.core.attack import Attack, AttackContext, AttackResult, Measurement
from amulet_audit.core.digest import weights_digest


def _digest_data(data) -> str:
    h = hashlib.sha256()
    for arr in (data.x_train, data.y_train, data.x_holdout, data.y_holdout, *data.sensitive_train.values(),
                *data.sensitive_holdout.values()):
        h.update(np.ascontiguousarray(arr).tobytes() if arr.dtype != object else "|".join(map(str, arr)).encode())
    return h.hexdigest()


def _as_json(result: AttackResult) -> str:
    return json.dumps({
        "metrics": {k: [m.value, list(m.ci) if m.ci else None, m.n, m.reason] for k, m in result.metrics.items()},
        "details": result.details,
        "not_applicable": result.not_applicable,
    }, sort_keys=True, allow_nan=False)


def check_attack(attack_cls: type[Attack], ctx: AttackContext) -> AttackResult:
    """Run `attack_cls` with its defaults twice on `ctx` and assert the contract. Returns the first result.

    - builds with no arguments and stores parameters unchanged; defaults satisfy its own constraints;
    - reports exactly its declared metrics (or says why it does not apply), each value finite or None;
    - the result is JSON-serialisable and identical for the same seed;
    - the model's parameters and the data are unchanged (hashes before and after).
    """
    from amulet_audit.core.params import validate_params

    assert issubclass(attack_cls, Attack) and attack_cls.name and attack_cls.risk, "attack must declare name and risk"
    assert attack_cls(probe=1).params == {"probe": 1}, "__init__ must store keyword arguments unchanged"
    problems = validate_params(attack_cls.name, attack_cls.parameter_constraints, dict(attack_cls.defaults))
    assert not problems, f"defaults violate their own constraints: {problems}"
    assert set(attack_cls.defaults) == set(attack_cls.parameter_constraints), "every parameter needs a default and a constraint"

    before_model, before_data = weights_digest(ctx.model.module), _digest_data(ctx.data)
    first = attack_cls().run(ctx)
    second = attack_cls().run(ctx)
    assert weights_digest(ctx.model.module) == before_model, "the attack modified the audited model"
    assert _digest_data(ctx.data) == before_data, "the attack modified the data"
    assert isinstance(first, AttackResult)
    if not first.not_applicable:
        assert set(first.metrics) == set(attack_cls.metrics), f"reported {sorted(first.metrics)}, declared {attack_cls.metrics}"
    for name, m in first.metrics.items():
        assert isinstance(m, Measurement)
        assert m.value is None or np.isfinite(m.value), f"{name}: value must be finite or None"
        assert m.ci is None or (m.ci[0] <= m.value + 1e-9 and m.value <= m.ci[1] + 1e-9), f"{name}: value outside its interval"
    assert _as_json(first) == _as_json(second), "not deterministic for a seed"
    return first

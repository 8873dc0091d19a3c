"""The audit as a graph of jobs, each keyed by the content it depends on, run by an executor and resumable.

Nodes:
- one attack job per (model, plan job): the audited model's (scope "") and each defended model's
  (scope "<defense>/"), each returning its `Run` and `AttackResult`;
- one defense job per defense: applying it (training the defended copy) and measuring its utility; the attack jobs
  on the defended model depend on it;
- one copies job per model and set of copies that attack jobs share (the reference models LiRA and RMIA train,
  `Attack.copies`): it trains them into the model cache, and those attack jobs depend on it;
- the training-fidelity check (`run.fidelity`) and one positive control per privacy or poisoning attack job
  (`run.controls`), on their own. A defense that aims at what the baseline found (`baseline_params`, e.g.
  fairness mitigation's attribute) also depends on every attack job of the audited model.

A job's key is a SHA-256 over the code version (every source file of the package), the inputs' digests (model
weights file, data spec and its files, seed, profile, confidence), the defense it runs on (name, parameters, parts)
and the attack job (name and parameters), and the keys of the jobs it depends on. Whatever else a policy changes
(thresholds, titles, other requirements) leaves a job's key, and so its stored output, as it was.

Each finished job's output is written atomically to the job store (`<output folder>/.amulet-audit-jobs/<key>.pkl`,
pickles this process wrote itself) as it completes. An audit run again with the same inputs reuses every stored
output whose key still matches and runs only the missing jobs; the copies jobs train are cached by content
(`training.cache`, in the store's own cache when the audit has none), so a job re-run after a kill does not train
them again. The store is removed once the audit's results are written.
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

STORE = ".amulet-audit-jobs"


@dataclass(frozen=True)
class Node:
    """One job. `kind`: "attack", "control" or "copies" (`index` into plan.jobs), "defense" or "fidelity";
    `unit`: index of the model it runs on (0: the audited model, k: plan.defenses[k - 1]); `deps`: indexes of the
    nodes it needs first; `weight`: its expected cost, relative (a job that trains copies weighs more), for
    scheduling only."""

    kind: str
    unit: int
    index: int = -1
    deps: tuple[int, ...] = ()
    weight: float = 1.0

    @property
    def label(self) -> str:
        return f"{self.kind} {self.unit}/{self.index}"


# Relative costs for scheduling: training a defended copy, an attack that trains copies, any other job.
WEIGHT_DEFENSE, WEIGHT_TRAINS, WEIGHT_OTHER = 10.0, 3.0, 1.0


def build_graph(n_defenses: int, n_attacks: int, aims: list[tuple[int, ...] | None], controls: list[int] = (),
                trains: list[bool] | None = None, copies: list[int | None] | None = None,
                costs: list[float] | None = None) -> list[Node]:
    """The nodes in a deterministic order: the audited model's attack jobs, the training-fidelity check and the
    positive control of each attack job in `controls` (indexes into plan.jobs), then for each defense its defense
    job and its attack jobs, then the copies jobs. `aims[k]`: None when plan.defenses[k] needs nothing from the
    audited model's evaluation, else the plan jobs whose findings it takes its parameters from (it waits for them).
    `trains[i]`: plan.jobs[i] trains copies (a heavier job), or its weight as a number. `copies[i]`: the first plan
    job that trains the copies plan.jobs[i] needs (`Attack.copies`), or None. `costs[k]`: applying plan.defenses[k]
    costs that many plain trainings (`Defense.cost`), which scales its weight."""
    trains = trains or [False] * n_attacks
    # a bool: the job trains copies; a number: its own weight (e.g. the queries it asks of a prediction service)
    weight = [float(t) if not isinstance(t, bool) else WEIGHT_TRAINS if t else WEIGHT_OTHER for t in trains]
    nodes = [Node("attack", 0, i, weight=weight[i]) for i in range(n_attacks)]
    nodes += [Node("fidelity", 0, weight=WEIGHT_TRAINS)] + [Node("control", 0, i, weight=WEIGHT_TRAINS) for i in controls]
    for k in range(n_defenses):
        defense = len(nodes)
        cost = costs[k] if costs else 1.0
        nodes.append(Node("defense", k + 1, deps=tuple(aims[k] or ()), weight=WEIGHT_DEFENSE * cost))
        nodes += [Node("attack", k + 1, i, (defense,), weight[i]) for i in range(n_attacks)]
    # copies several attack jobs share (`copies[i]`: the first job training the same ones), trained once per model
    for unit in range(n_defenses + 1):
        mine = {n.index: j for j, n in enumerate(nodes) if n.kind == "attack" and n.unit == unit}
        head = next((j for j, n in enumerate(nodes) if n.kind == "defense" and n.unit == unit), None)
        for first in sorted({c for c in (copies or []) if c is not None}):
            nodes.append(Node("copies", unit, first, () if head is None else (head,), WEIGHT_TRAINS))
            for i, c in enumerate(copies):
                if c == first:
                    nodes[mine[i]] = replace(nodes[mine[i]], deps=nodes[mine[i]].deps + (len(nodes) - 1,))
    return nodes


def priorities(nodes: list[Node], weights: list[float] | None = None) -> list[float]:
    """Each node's weight (`weights[i]` where given) plus the heaviest chain of nodes that wait for it: run first
    what the most work waits on (e.g. the audited model's fairness measurement before the other attacks, when a
    fairness mitigation aims at its finding), so that more workers finish sooner."""
    weights = weights or [node.weight for node in nodes]
    children: dict[int, list[int]] = {}
    for i, node in enumerate(nodes):
        for d in node.deps:
            children.setdefault(d, []).append(i)
    out: dict[int, float] = {}

    def chain(i: int) -> float:  # dependents may come before their dependencies in `nodes` (a shared copies job)
        if i not in out:
            out[i] = weights[i] + max((chain(c) for c in children.get(i, ())), default=0.0)
        return out[i]

    return [chain(i) for i in range(len(nodes))]


_CODE: list[str] = []


def code_version() -> str:
    """SHA-256 over every source file of the package (path and bytes) and its version: a changed line of code
    invalidates every stored job."""
    if not _CODE:
        from amulet_audit import __version__

        root = Path(__file__).resolve().parents[1]
        h = hashlib.sha256(__version__.encode())
        for path in sorted(root.rglob("*.py")):
            h.update(str(path.relative_to(root)).encode())
            h.update(path.read_bytes())
        _CODE.append(h.hexdigest())
    return _CODE[0]


def inputs_digest(*parts: Any) -> str:
    """SHA-256 over the audit's inputs as the jobs see them (digests of the model and data, seed, profile, ...)."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def node_key(inputs_digest: str, node: Node, defense: Any, attack: Any, dep_keys: list[str]) -> str:
    """The content key of `node` (see the module docstring)."""
    h = hashlib.sha256()
    for part in (code_version(), inputs_digest, node.kind, repr(defense), repr(attack), *dep_keys):
        h.update(part.encode())
        h.update(b"\x1f")
    return h.hexdigest()


@dataclass
class Store:
    """Finished jobs' outputs under `root` (None: kept in memory only)."""

    root: Path | None
    reused: int = 0
    written: int = 0
    _memory: dict[str, Any] = field(default_factory=dict)

    def get(self, key: str) -> Any | None:
        if key in self._memory:
            return self._memory[key]
        path = self._path(key)
        if path is None or not path.exists():
            return None
        try:
            out = pickle.loads(path.read_bytes())
        except Exception:  # a file from another version of the code, or damaged: run the job again
            return None
        self._memory[key] = out
        self.reused += 1
        return out

    def put(self, key: str, value: Any) -> None:
        from amulet_audit.core.atomic import write_bytes_atomic

        self._memory[key] = value
        path = self._path(key)
        if path is not None:
            write_bytes_atomic(path, pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
            self.written += 1

    def _path(self, key: str) -> Path | None:
        return None if self.root is None else self.root / f"{key}.pkl"

    def remove(self) -> None:
        import shutil

        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)


def execute(nodes: list[Node], key: Callable[[int], str], task: Callable[[int], Any], store: Store, executor, *,
            progress: Callable[[str, float], None] | None = None,
            on_done: Callable[[int, Any], None] | None = None, cheapest_first: bool = False,
            reweigh: Callable[[int, Any], dict[int, float]] | None = None) -> dict[int, Any]:
    """Run every node once its dependencies are done, each once: a stored output is reused, any other node's
    `task(i)` (plain picklable data for `run.jobs.run_task`) goes to `executor` (`submit(i, task)`,
    `next_done() -> (i, output)` in completion order). `key(i)` is asked only once node i's dependencies are done
    (a key includes theirs). `on_done(i, output)` runs in this process as each node finishes (e.g. to aim a
    defense at the baseline's findings before its key is taken). `cheapest_first`: run ready jobs by ascending
    weight instead (a model behind a prediction service with a query budget). `reweigh(i, output)`: new weights
    (node index -> seconds expected) learnt from node i's output, e.g. how long the same attack took on the audited
    model; the priorities are then computed again. Returns node index -> output."""
    done: dict[int, Any] = {}
    waiting, ready, running = set(range(len(nodes))), [], set()
    weights = [node.weight for node in nodes]
    rank = priorities(nodes, weights)
    capacity = getattr(executor, "capacity", len(nodes))

    def finish(i: int, out: Any) -> None:
        nonlocal rank
        done[i] = out
        if on_done:
            on_done(i, out)
        learnt = reweigh(i, out) if reweigh else None
        if learnt:
            for j, w in learnt.items():
                weights[j] = w
            rank = priorities(nodes, weights)
        if progress:
            progress(f"{len(nodes)} jobs", len(done) / len(nodes))

    while waiting or ready or running:
        for i in sorted(i for i in waiting if all(d in done for d in nodes[i].deps)):
            waiting.discard(i)
            out = store.get(key(i))
            if out is None:
                ready.append(i)
            else:
                finish(i, out)
        # the job with the most work waiting on it first; under a query budget the cheapest first, so that what
        # needs few queries is measured before an expensive attack can use the budget up
        ready.sort(key=lambda i: (weights[i] if cheapest_first else -rank[i], i))
        while ready and len(running) < capacity:
            i = ready.pop(0)
            executor.submit(i, task(i))
            running.add(i)
        if running:
            i, out = executor.next_done()
            running.discard(i)
            store.put(key(i), out)
            finish(i, out)
        elif waiting and not any(all(d in done for d in nodes[i].deps) for i in waiting):
            raise RuntimeError("the job graph has a dependency that never finishes")  # pragma: no cover
    return done

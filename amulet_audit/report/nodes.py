"""The report's document tree: the typed nodes a template lays out (a leaf module: it imports no other report module).

Every node holds text already formatted (report/format.py) and read from the results; templates only arrange it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from markupsafe import Markup


@dataclass(frozen=True)
class Badge:
    """A verdict or status mark: `key` selects the colour, `label` is the text (never colour alone)."""

    key: str
    label: str
    icon: str = ""


Cell = Union[str, Badge]


@dataclass(frozen=True)
class Field:
    label: str
    value: str
    mono: bool = False  # hashes and paths: monospace, may wrap anywhere


@dataclass(frozen=True)
class FieldGroup:
    title: str
    fields: tuple[Field, ...]


@dataclass(frozen=True)
class Table:
    columns: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    caption: str = ""
    numeric: frozenset[int] = frozenset()  # column indexes aligned right
    mono: frozenset[int] = frozenset()  # column indexes in monospace


@dataclass(frozen=True)
class Chart:
    title: str
    svg: Markup
    caption: str = ""


@dataclass(frozen=True)
class RequirementRow:
    id: str
    title: str
    risk: str
    risk_title: str
    severity: str
    cite: tuple[str, ...]
    metric: str  # readable name
    metric_id: str  # registry name, as in results.json
    value: str  # "0.823 [0.805, 0.840]" or "—"
    n: str
    threshold: str  # "≥ 0.60"
    verdict: Badge
    reason: str
    notes: tuple[str, ...] = ()  # the requirement's warnings (e.g. measured by a stand-in attack; copies unfaithful)


Block = Union[Chart, Table]


@dataclass(frozen=True)
class Evidence:
    """What one attack run recorded: charts and tables in reading order, and its own warnings."""

    heading: str
    requirement_ids: tuple[str, ...]
    blocks: tuple[Block, ...]
    notes: tuple[str, ...]


@dataclass(frozen=True)
class RiskSection:
    risk: str
    anchor: str
    title: str
    description: str
    verdict: Badge  # the worst verdict among its requirements
    rows: tuple[RequirementRow, ...]
    evidence: tuple[Evidence, ...]


@dataclass(frozen=True)
class Cover:
    title: str
    policy_title: str
    verdict: Badge
    verdict_text: str
    date: str
    facts: tuple[Field, ...]


@dataclass(frozen=True)
class Summary:
    counts: tuple[tuple[Badge, int], ...]
    rows: tuple[RequirementRow, ...]  # failed first, then by severity


@dataclass(frozen=True)
class Interactions:
    intro: str
    table: Table
    heatmap: Chart | None = None
    sentences: tuple[str, ...] = ()  # one per defense with flagged unintended interactions
    possible: tuple[str, ...] = ()  # one per defense with possible (not significant) unintended worsenings
    utility: Table | None = None  # clean accuracy before and after each defense
    combined: Table | None = None  # each combination of defenses against each of its defenses alone
    combined_sentences: tuple[str, ...] = ()  # one per combination that undid what a defense achieved alone
    notes: tuple[str, ...] = ()  # defended models to read with care (e.g. one that predicts a single class)


@dataclass(frozen=True)
class Methods:
    intro: str
    verdict_rules: tuple[tuple[Badge, str], ...]
    table: Table


@dataclass(frozen=True)
class Appendix:
    groups: tuple[FieldGroup, ...]
    tables: tuple[Table, ...]


@dataclass(frozen=True)
class SignOff:
    statement: str
    roles: tuple[str, ...] = ("Prepared by", "Reviewed by")
    fields: tuple[str, ...] = ("Name", "Position", "Date", "Signature")


@dataclass(frozen=True)
class Traceability:
    intro: str
    table: Table


@dataclass(frozen=True)
class TestLog:
    intro: str
    groups: tuple[FieldGroup, ...]
    table: Table


@dataclass(frozen=True)
class RecertificationView:
    intro: str
    verdict: Badge  # regression or not
    facts: tuple[Field, ...]
    artefacts: Table
    changes: Table
    notes: tuple[str, ...]


@dataclass(frozen=True)
class Document:
    title: str
    running_title: str
    generator: str
    cover: Cover
    warnings: tuple[str, ...]
    summary: Summary
    sections: tuple[RiskSection, ...]
    interactions: Interactions | None
    methods: Methods
    appendix: Appendix
    signoff: SignOff
    contents: tuple[tuple[str, str], ...]  # (anchor, title) of each chapter
    traceability: Traceability | None = None
    test_log: TestLog | None = None
    recertification: RecertificationView | None = None


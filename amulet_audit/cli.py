"""Command line: commands and exit codes only (DESIGN.md, "Command line").

Heavy libraries (torch, opacus, weasyprint) are imported inside the commands that need them.
"""

from __future__ import annotations

import argparse
import os
import sys
from enum import IntEnum
from pathlib import Path

from amulet_audit import __version__
from amulet_audit.core.errors import InputError


class ExitCode(IntEnum):
    OK = 0
    FINDINGS = 1  # a requirement fails or is indeterminate; `diff`: a regression; `verify`: altered
    BAD_INPUT = 2
    INTERNAL = 3


COMMANDS = {
    "validate": "check a policy (and data spec) without running",
    "policies": "list bundled policies",
    "render": "re-render HTML/PDF from a results.json",
    "diff": "compare two results.json (recertification): what changed, what regressed",
    "verify": "check a report folder against its manifest: was anything altered?",
}

USAGE = f"""usage: amulet-audit MODEL --policy POLICY [--data DATA] [--out DIR] [options]
       amulet-audit COMMAND ...

Audit a trained model (PyTorch, scikit-learn via skops, ONNX, or one behind a prediction service with
--endpoint) for security, privacy and fairness risks against a regulation policy, and write report.html,
report.pdf and results.json.

commands:
{chr(10).join(f"  {name:<10} {text}" for name, text in COMMANDS.items())}

common audit options:
  --profile quick|standard|thorough   attack budgets (default standard)
  --jobs N                            run the audit's jobs in N processes (resumes after a kill)
  --executor local|ray                where jobs run; --ray-address ADDR for an existing Ray cluster
  --device cpu|cuda|auto              where models train and attacks compute (default auto: a GPU if any)

Run `amulet-audit audit --help` for every audit option, `amulet-audit COMMAND --help` for a command's.

exit codes: 0 all requirements pass · 1 a requirement fails or is indeterminate · 2 bad input · 3 internal error
"""


def _audit_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="amulet-audit",
        description="Audit MODEL against POLICY; write report.html, report.pdf and results.json into --out.",
        epilog="exit codes: 0 all requirements pass, 1 a requirement fails or is indeterminate, 2 bad input, 3 internal error",
    )
    p.add_argument("model", metavar="MODEL", nargs="?",
                   help="TorchScript archive (default), torch.export .pt2, state_dict with --arch, ONNX .onnx, or "
                        "scikit-learn .skops")
    p.add_argument("--endpoint", metavar="URL",
                   help="audit the model behind this prediction service instead of a file (the data spec's endpoint: "
                        "section maps requests and answers; --data is required)")
    p.add_argument("--policy", required=True, metavar="POLICY", help="policy YAML path, or a bundled policy name (e.g. eu_ai_act)")
    p.add_argument("--data", metavar="DATA", help="data spec YAML (default: <model stem>.data.yaml beside MODEL)")
    p.add_argument("--out", metavar="DIR", default="amulet-report", help="output folder (default: amulet-report/)")
    p.add_argument("--profile", choices=["quick", "standard", "thorough"], default="standard",
                   help="attack budgets: quick (smoke test), standard (default), thorough (certification)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="CPU threads per process for torch (default: 1 for models under a million parameters, else "
                        "torch's choice; convolutional reference models trained together use the machine's cores "
                        "shared among the --jobs processes)")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="run the audit's jobs (each attack on each model, each defense) in N local processes, or on "
                        "a local Ray with N CPUs (default 1)")
    p.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="where jobs run: local processes (default), or Ray tasks (pip install 'amulet-audit[ray]')")
    p.add_argument("--ray-address", metavar="ADDR",
                   help="with --executor ray: an existing cluster (ray://head:10001, or auto on a cluster node); "
                        "default: start a local Ray")
    p.add_argument("--device", default="auto", metavar="cpu|cuda|auto",
                   help="where models train and attacks compute: cpu, cuda (or cuda:N), or auto (default: a CUDA GPU "
                        "where torch sees one, else the CPU)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed and inputs give the same numbers (default 0)")
    p.add_argument("--confidence", type=float, default=0.95, help="confidence level of the intervals (default 0.95)")
    p.add_argument("--arch", metavar="MODULE:CLASS", help="architecture class for a state_dict model file")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow loading a pickled whole module (runs code from the file: only for files you trust)")
    p.add_argument("--trust-type", action="append", default=[], metavar="TYPE",
                   help="a type a .skops model file may load beyond skops' trusted defaults (repeatable; only for "
                        "files you trust)")
    p.add_argument("--templates", metavar="DIR", help="folder of Jinja2 templates searched before the packaged ones")
    p.add_argument("--no-pdf", action="store_true", help="write report.html and results.json only")
    p.add_argument("--exit-zero", action="store_true", help="exit 0 even when a requirement fails (reporting-only runs)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--cache-dir", metavar="DIR",
                   help="where trained reference/defended models are cached (default: $AMULET_AUDIT_CACHE or ~/.cache/amulet-audit)")
    p.add_argument("--no-cache", action="store_true", help="train every reference/defended model afresh")
    p.add_argument("--baseline", metavar="OLD.json",
                   help="a previous audit's results.json: adds the recertification section (what changed, what regressed)")
    p.add_argument("--version", action="version", version=f"amulet-audit {__version__}")
    return p


def _validate_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="amulet-audit validate", description="Check a policy (and a data spec) without running anything.")
    p.add_argument("policy", metavar="POLICY", nargs="?", help="policy YAML path or bundled policy name")
    p.add_argument("--data", metavar="DATA", help="also check this data spec and the data it names")
    p.add_argument("--schema", action="store_true", help="print the policy JSON Schema (for editors) and exit")
    return p


def _policies_parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog="amulet-audit policies", description="List the bundled policies.")


def _render_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="amulet-audit render", description="Re-render report.html and report.pdf from a results.json.")
    p.add_argument("results", metavar="RESULTS.json")
    p.add_argument("--out", metavar="DIR", required=True, help="output folder")
    p.add_argument("--templates", metavar="DIR", help="folder of Jinja2 templates searched before the packaged ones")
    p.add_argument("--no-pdf", action="store_true", help="write report.html only")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return ExitCode.OK if argv else ExitCode.BAD_INPUT
    if argv[0] == "--version":
        print(f"amulet-audit {__version__}")
        return ExitCode.OK
    command, handler, parser = "audit", cmd_audit, _audit_parser
    if argv[0] in ("audit", "validate", "policies", "render", "diff", "verify"):
        command = argv.pop(0)
        handler, parser = {
            "audit": (cmd_audit, _audit_parser),
            "validate": (cmd_validate, _validate_parser),
            "policies": (cmd_policies, _policies_parser),
            "render": (cmd_render, _render_parser),
            "diff": (cmd_diff, _diff_parser),
            "verify": (cmd_verify, _verify_parser),
        }[command]
    try:
        args = parser().parse_args(argv)
    except SystemExit as exc:  # argparse: --help exits 0, usage errors exit 2
        return ExitCode.OK if exc.code in (0, None) else ExitCode.BAD_INPUT
    try:
        return int(handler(args))
    except InputError as exc:
        print(f"amulet-audit: error: {exc}", file=sys.stderr)
        return ExitCode.BAD_INPUT
    except KeyboardInterrupt:
        print("amulet-audit: interrupted; nothing was written.", file=sys.stderr)
        return ExitCode.INTERNAL
    except Exception as exc:  # an internal error: a bug, not bad input
        if os.environ.get("AMULET_AUDIT_DEBUG"):
            raise
        print(f"amulet-audit: internal error: {type(exc).__name__}: {exc}. This is a bug in amulet-audit; "
              "rerun with AMULET_AUDIT_DEBUG=1 for the traceback and report it.", file=sys.stderr)
        return ExitCode.INTERNAL


def _data_path(model: Path, data: str | None) -> Path:
    if data:
        return Path(data)
    sidecar = model.with_name(model.stem + ".data.yaml")
    if not sidecar.is_file():
        raise InputError(f"{model}: no data spec given and no sidecar {sidecar.name} beside it; pass --data DATA.")
    return sidecar


def _templates(value: str | None) -> Path | None:
    if value is None:
        return None
    path = Path(value)
    if not path.is_dir():
        raise InputError(f"--templates {value}: not a folder; pass the folder that holds your Jinja2 templates.")
    return path


def cmd_audit(args: argparse.Namespace) -> int:
    from amulet_audit.inputs.data import load_data
    from amulet_audit.inputs.model import load_model
    from amulet_audit.policy import load_policy
    from amulet_audit.core.attack import PROFILES

    if args.jobs < 1:
        raise InputError(f"--jobs {args.jobs}: must be at least 1.")
    if args.ray_address and args.executor != "ray":
        raise InputError(f"--ray-address {args.ray_address}: needs --executor ray.")
    if not 0.5 <= args.confidence < 1:
        raise InputError(f"--confidence {args.confidence}: must be in [0.5, 1), e.g. 0.95.")
    device = _device(args)
    templates = _templates(args.templates)
    out = _out_dir(args.out)
    if (args.model is None) == (args.endpoint is None):
        raise InputError("give exactly one of MODEL (a model file) and --endpoint URL (a prediction service)"
                         + (", not both." if args.model else "."))
    if args.endpoint and (args.jobs > 1 or args.executor != "local"):
        raise InputError(f"--endpoint {args.endpoint}: runs with --jobs 1 and the local executor, so that one "
                         "client counts every query against the budget.")
    if args.endpoint and not args.data:
        raise InputError(f"--endpoint {args.endpoint}: needs --data DATA, a data spec with an endpoint: section.")
    model_path = Path(args.model or "")
    loaded = load_policy(args.policy)
    if args.threads is not None and args.threads < 1:
        raise InputError(f"--threads {args.threads}: must be at least 1.")
    if args.model and not model_path.is_file():
        raise InputError(f"{model_path}: model file not found; check the path.")
    data = load_data(_data_path(model_path, args.data))  # a data problem is named before any model is loaded
    if args.endpoint:
        from amulet_audit.inputs.endpoint import load_endpoint

        model = load_endpoint(args.endpoint, data)
    else:
        model = load_model(model_path, arch=args.arch, trust_pickle=args.trust_pickle,
                           trust_types=tuple(args.trust_type))
    _check_flags_apply(args, model)
    import torch

    from amulet_audit.core.threads import set_cores, threads_for

    set_cores(args.threads or max(1, (os.cpu_count() or 1) // args.jobs))
    torch.set_num_threads(args.threads or threads_for(model.module))
    _check_model_fits(model, data)
    from amulet_audit.ops.scores import attach

    model = attach(model, data)  # what the model outputs (logits, probabilities, ...): every attack reads through it
    from amulet_audit.plan.preflight import check_batch_dimension, check_class_order

    check_batch_dimension(model, data)
    check_class_order(model, data)  # before any attack: an inverted class order would invert every number
    baseline = _read_baseline(args.baseline)

    from amulet_audit.run import run_audit
    from amulet_audit.training.cache import ModelCache, default_root
    from amulet_audit.run.progress import progress_display

    from amulet_audit.run.graph import STORE

    cache = ModelCache(None if args.no_cache else Path(args.cache_dir) if args.cache_dir else default_root())
    state = out / STORE  # finished jobs, so a killed audit run again resumes; removed once the outputs are written
    with progress_display(quiet=args.quiet) as progress:
        result = run_audit(model, data, loaded, seed=args.seed, profile=PROFILES[args.profile],
                           confidence=args.confidence, progress=progress, cache=cache, jobs=args.jobs,
                           state_dir=state, executor=args.executor, ray_address=args.ray_address, device=device)
        result = _with_recertification(result, baseline, args.baseline)
        warned = _write_outputs(result, out, templates=templates, pdf=not args.no_pdf, progress=progress)
    if result.environment.get("jobs_reused") and not args.quiet:
        print(f"Resumed: {result.environment['jobs_reused']} finished job(s) reused from {state}.", file=sys.stderr)
    import shutil

    shutil.rmtree(state, ignore_errors=True)
    _print_warnings(warned)
    if not args.quiet:
        _summary(result, out)
    if args.exit_zero or result.verdict == "pass":
        return ExitCode.OK
    return ExitCode.FINDINGS


def _device(args: argparse.Namespace) -> str:
    """The torch device of `--device` (`core.device.resolve`). On a Ray cluster given by address, `cuda` is the
    cluster's to provide: each job then asks Ray for a GPU, and the submitting machine needs none."""
    from amulet_audit.core.device import gpu_name, resolve

    text = str(args.device).strip().lower()
    if args.executor == "ray" and args.ray_address and gpu_name(text):
        return text
    return resolve(args.device)


def _check_flags_apply(args: argparse.Namespace, model) -> None:
    """A loading flag the model's format does not read is refused (one sentence), not silently ignored."""
    from amulet_audit.core.component import model_phrase

    where = args.endpoint or args.model
    for flag, given, fmt in (("--arch", args.arch, "state_dict"), ("--trust-pickle", args.trust_pickle, "pickle"),
                             ("--trust-type", args.trust_type, "skops")):
        if given and model.format != fmt:
            raise InputError(f"{flag}: applies to a {fmt} model, and {where} is {model_phrase(model.format)}; "
                             f"leave {flag} out.")


def _check_model_fits(model, data) -> None:
    """One forward pass on a few records: the model must accept the features (its output shape is read by
    `ops.scores.attach`)."""
    import torch

    check = getattr(model, "check_features", None)  # a model that knows its columns' names (scikit-learn)
    if callable(check):
        check(list(data.feature_names), data.spec_path)
    x = torch.as_tensor(data.x_holdout[:2])
    try:
        with torch.no_grad():
            out = model.module(x)
    except Exception as exc:
        from amulet_audit.inputs.torch_errors import probe_failure

        raise InputError(probe_failure(model.path, model.format, exc, list(x.shape[1:]))) from None
    _check_declared_classes(model, data, out)


def _check_declared_classes(model, data, out) -> None:
    """The data spec's `classes` lists classes no record holds, and the model has one output per label the data
    does hold: the spec's list is what is wrong, not the model (which `attach` would blame)."""
    import numpy as np
    import torch

    if data.spec.classes is None or not isinstance(out, torch.Tensor) or out.dim() != 2:
        return
    held = set(np.unique(np.concatenate([data.y_train, data.y_holdout])).tolist())
    absent = [c for i, c in enumerate(data.classes) if i not in held]
    cols = int(out.shape[1])
    if not absent or cols < 2 or cols != len(held):
        return
    from amulet_audit.inputs.data import yaml_list

    present = [c for i, c in enumerate(data.classes) if i in held]
    raise InputError(
        f"{data.spec_path}: key 'classes' lists {data.n_classes} classes ({yaml_list(data.classes)}), but the data holds "
        f"{len(held)} labels ({yaml_list(present)}) and the model {model.path} has {cols} outputs; no record is "
        f"{yaml_list(absent)}: list only the model's classes under `classes`, in the order of its outputs.")


def _out_dir(value: str) -> Path:
    out = Path(value)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: exists and is not a folder; choose another output folder.")
    return out


def _write_outputs(result, out: Path, *, templates: Path | None, pdf: bool, results_json: bool = True,
                   progress=None) -> list[str]:
    """Render everything first, then move the files into place, so a failure leaves nothing half-written.
    Returns the report's warnings (characters no installed font has, reordered text), also recorded in the results."""
    import shutil
    import tempfile

    from amulet_audit.report import write_report
    from amulet_audit.report.fonts import report_warnings
    from amulet_audit.results import write_results

    result = result.model_copy(update={"report_warnings": report_warnings(result)})
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".amulet-", dir=out))
    try:
        if progress:
            progress("report", 0.0)
        if results_json:
            write_results(result, staging / "results.json")
        write_report(result, staging, templates_dir=templates, pdf=pdf)
        for f in sorted(staging.iterdir()):
            os.replace(f, out / f.name)
        from amulet_audit.report.manifest import write_manifest

        write_manifest(out)  # last: it records the digests of the files now in place
        if progress:
            progress("report", 1.0)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return result.report_warnings


def _print_warnings(warnings: list[str]) -> None:
    for warning in warnings:
        print(f"amulet-audit: warning: {warning}", file=sys.stderr)


def _summary(result, out: Path) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(stderr=True)
    colour = {"pass": "green", "fail": "red", "indeterminate": "yellow", "not_applicable": "dim"}
    # Names from the policy are text, never console markup: "[/]" in a title must print, not raise.
    table = Table(title=f"{escape(result.policy.title)} — verdict: {result.verdict.upper()}")
    for col in ("requirement", "metric", "value [CI]", "threshold", "verdict"):
        table.add_column(col)
    for r in result.requirements:
        value = "—" if r.value is None else f"{r.value:.3f}" + (f" [{r.ci[0]:.3f}, {r.ci[1]:.3f}]" if r.ci else "")
        table.add_row(escape(r.id), escape(r.metric), value, f"{r.threshold.op} {r.threshold.value:g}",
                      f"[{colour[r.verdict.value]}]{r.verdict.value.upper()}[/]")
    console.print(table)
    console.print(f"Report written to {escape(str(out))}/ (results.json, report.html"
                  + (", report.pdf)" if (out / 'report.pdf').exists() else ")"))


def cmd_validate(args: argparse.Namespace) -> int:
    import json

    from amulet_audit.policy import json_schema, load_policy

    if args.schema:
        print(json.dumps(json_schema(), indent=2))
        return ExitCode.OK
    if not args.policy:
        raise InputError("validate: give a POLICY (path or bundled name), or --schema.")
    loaded = load_policy(args.policy)
    print(f"{loaded.path}: valid policy '{loaded.policy.policy}' with {len(loaded.policy.requirements)} requirement(s).")
    if args.data:
        from amulet_audit.inputs.data import load_data

        data = load_data(args.data)
        read = f"; {data.spec.source.path} read with {data.reading}" if data.reading else ""
        print(f"{args.data}: valid data spec '{data.spec.name}': {len(data.y_train):,} training and "
              f"{len(data.y_holdout):,} holdout records, {data.n_features} features, classes in output order "
              f"{', '.join(data.classes)}{read}.")
    return ExitCode.OK


def cmd_policies(args: argparse.Namespace) -> int:
    from amulet_audit.policy import bundled_policies, load_policy

    rows = []
    for stem, path in bundled_policies().items():
        p = load_policy(str(path)).policy
        reg = p.regulation
        rows.append((stem, p.policy, p.title, f"{reg.name} ({reg.status})" if reg else "", p.version))
    width = max((len(r[0]) for r in rows), default=4)
    print(f"{'name':<{width}}  {'id':<18} {'version':<8} title — regulation")
    for stem, pid, title, reg, ver in rows:
        print(f"{stem:<{width}}  {pid:<18} {ver:<8} {title} — {reg}")
    return ExitCode.OK


def cmd_render(args: argparse.Namespace) -> int:
    from amulet_audit.results import read_results

    result = read_results(args.results)
    templates = _templates(args.templates)
    out = _out_dir(args.out)
    _print_warnings(_write_outputs(result, out, templates=templates, pdf=not args.no_pdf, results_json=False))
    print(f"Report written to {out}/")
    return ExitCode.OK


# --- recertification: --baseline, diff, verify ---------------------------------------------------


def _read_baseline(path: str | None):
    """The --baseline results, read before any work so a bad file is exit 2 at once."""
    if path is None:
        return None
    from amulet_audit.results import read_results

    return read_results(path)


def _with_recertification(result, baseline, baseline_path: str | None):
    """`result` with the comparison with the --baseline audit recorded (unchanged without a baseline)."""
    if baseline is None:
        return result
    from amulet_audit.results.diff import compare

    return result.model_copy(update={"recertification": compare(baseline, result, baseline_path=str(baseline_path))})


def _diff_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="amulet-audit diff",
        description="Compare a previous audit (OLD.json) with a new one (NEW.json): per-requirement values and "
                    "verdicts, regressions, changed model/data/policy digests, and the audit interval against "
                    "the policy's recertification period.",
        epilog="exit codes: 0 no regression, 1 a requirement regressed, 2 bad input",
    )
    p.add_argument("old", metavar="OLD.json", help="the previous audit's results.json")
    p.add_argument("new", metavar="NEW.json", help="the new audit's results.json")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON instead of a table")
    return p


def _verify_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="amulet-audit verify",
        description="Recompute the SHA-256 digests recorded in DIR/manifest.json and check that the results.json "
                    "embedded in report.pdf equals DIR/results.json.",
        epilog="exit codes: 0 intact, 1 altered, 2 bad input",
    )
    p.add_argument("folder", metavar="DIR", help="a report folder written by an audit or `render`")
    return p


def cmd_diff(args: argparse.Namespace) -> int:
    from amulet_audit.results import read_results
    from amulet_audit.results.diff import compare

    old, new = read_results(args.old), read_results(args.new)
    rec = compare(old, new, baseline_path=args.old)
    if args.json:
        print(rec.model_dump_json(indent=2))
    else:
        _print_recertification(rec, new)
    return ExitCode.FINDINGS if rec.regression else ExitCode.OK


def _print_recertification(rec, new) -> None:
    from rich.console import Console
    from rich.table import Table

    from amulet_audit.results.diff import audit_age_days

    console = Console(width=None if sys.stdout.isatty() else 160)

    def value(v, ci):
        return "—" if v is None else f"{v:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")

    colour = {"worsened": "red", "improved": "green", "unchanged": "dim", "added": "cyan", "removed": "yellow"}
    table = Table(title=f"Recertification: {new.policy.title}")
    for col in ("requirement", "metric", "old value [CI]", "new value [CI]", "old verdict", "new verdict", "change"):
        table.add_column(col)
    for c in rec.requirements:
        change = c.change.upper() + (" (REGRESSION)" if c.regression else "")
        table.add_row(c.id, c.metric, value(c.old_value, c.old_ci), value(c.new_value, c.new_ci),
                      c.old_verdict.value.upper() if c.old_verdict else "—",
                      c.new_verdict.value.upper() if c.new_verdict else "—",
                      f"[{colour[c.change]}]{change}[/]")
    console.print(table)
    for c in rec.requirements:
        if c.reason and c.change in ("worsened", "improved") or c.threshold_changed:
            console.print(f"  {c.id}: {c.reason}")
    for a in rec.artefacts:
        if a.changed:
            console.print(f"{a.artefact}: [red]CHANGED[/] {a.old_sha256[:12]}… -> {a.new_sha256[:12]}… ({a.note})")
        else:
            console.print(f"{a.artefact}: unchanged ({a.new_sha256[:12]}…)")
    period = f"; recertification period {rec.period_days} days" if rec.period_days else "; the policy sets no recertification period"
    console.print(f"Audits: {rec.baseline_finished_at} ({rec.baseline_verdict}) -> {rec.finished_at} ({new.verdict}), "
                  f"{rec.interval_days:.1f} days apart{period}.")
    if rec.valid_until:
        age = audit_age_days(new)
        state = "[red]EXPIRED[/]" if age > rec.period_days else "current"
        console.print(f"The new audit is {age:.0f} days old and {state}: recertify by {rec.valid_until}.")
    for note in rec.notes:
        console.print(f"Note: {note}.")
    n = sum(c.regression for c in rec.requirements)
    console.print(f"[red]{n} regression(s).[/]" if n else "[green]No regression.[/]")


def cmd_verify(args: argparse.Namespace) -> int:
    from amulet_audit.report.manifest import verify_folder

    outcome = verify_folder(args.folder)
    for what, status in outcome.checked:
        print(f"{what}: {status}")
    if outcome.intact:
        print(f"{outcome.folder}: intact ({len(outcome.checked)} check(s) passed).")
        return ExitCode.OK
    print(f"{outcome.folder}: ALTERED: {'; '.join(outcome.problems)}.")
    return ExitCode.FINDINGS

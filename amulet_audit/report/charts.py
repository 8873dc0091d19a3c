"""Report charts: matplotlib figures (no pyplot, no GUI backend) returned as inline SVG markup.

Text is drawn as paths, so an SVG needs no font and references nothing outside itself; ids are
prefixed per chart, so several charts can sit in one HTML page. Text is set in the report's fonts, with installed
fonts that have the characters the data brings (CJK, Arabic, Hebrew names) as fallbacks (report/fonts.py); names
from the data are wrapped and, when too long, shortened in the middle (the report's tables give them in full). Output is deterministic for the
same input (fixed hash salt, no date), so re-rendering a results file gives the same report.
Matplotlib is imported inside the functions: importing the report package stays cheap.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
import unicodedata
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from markupsafe import Markup, escape

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

# Okabe & Ito (2008): distinguishable with every common colour-vision deficiency.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
# Bars also differ by hatch, so they stay apart when printed in greyscale.
HATCHES = ("", "//", "..")
INK = "#1f2933"
MUTED = "#6b7785"

_RC = {
    "svg.fonttype": "path",
    "svg.hashsalt": "amulet-audit",
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "axes.edgecolor": MUTED,
    "axes.labelcolor": INK,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#d9dee4",
    "grid.linewidth": 0.6,
    "xtick.color": INK,
    "ytick.color": INK,
    "legend.frameon": False,
    "legend.fontsize": 8,
    "hatch.linewidth": 0.6,
}
_SIZE = (6.4, 3.0)  # inches: about the text width of an A4 page at the report's margins


@contextmanager
def _figure(size: tuple[float, float] = _SIZE) -> Iterator[tuple[Figure, Axes]]:
    # A bare Figure needs no pyplot and no GUI backend; savefig picks the SVG canvas itself.
    import matplotlib
    from matplotlib.figure import Figure

    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=size)
        yield fig, fig.add_subplot()


@contextmanager
def _quiet_font_lookup() -> Iterator[None]:
    """Silence matplotlib's font-lookup log lines (e.g. no bold face of a CJK fallback font): the console shows only
    the report's own font warnings (report/fonts.py)."""
    import logging

    log = logging.getLogger("matplotlib.font_manager")
    before = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(before)


def _to_svg(fig: Figure, label: str) -> Markup:
    """Serialise `fig` to an `<svg>` element for inline HTML, labelled for screen readers."""
    import matplotlib

    families = _set_fonts(fig)
    buf = io.StringIO()
    # Texts made while drawing take their fonts from rcParams.
    with warnings.catch_warnings(), matplotlib.rc_context({"font.family": families}), _quiet_font_lookup():
        # A character no installed font has is named once, in the results' report warnings (report/fonts.py).
        warnings.filterwarnings("ignore", message=r"Glyph .* missing from (current )?font", category=UserWarning)
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
    svg = buf.getvalue()
    svg = svg[svg.index("<svg") :]
    # The <style> would apply to the whole HTML page; its two properties go on the root instead.
    svg = re.sub(r"<metadata>.*?</metadata>|<!--.*?-->|<style[^>]*>.*?</style>", "", svg, flags=re.S)
    svg = re.sub(r"<defs>\s*</defs>", "", svg)
    # style="fill: …" -> fill="…": HTML engines (WeasyPrint) parse a style attribute as page CSS and
    # reject the SVG-only properties; presentation attributes mean the same to every SVG renderer.
    svg = re.sub(r'\sstyle="([^"]*)"', _presentation_attributes, svg)
    prefix = "c" + hashlib.sha256(svg.encode()).hexdigest()[:8] + "-"
    # one pass each: every id, and every reference to one of them
    ids = set(re.findall(r'\bid="([^"]+)"', svg))
    svg = re.sub(r'\bid="([^"]+)"', lambda m: f'id="{prefix}{m.group(1)}"', svg)
    svg = re.sub(r'(["(])#([^")]+)([")])',
                 lambda m: f"{m.group(1)}#{prefix}{m.group(2)}{m.group(3)}" if m.group(2) in ids else m.group(0), svg)
    svg = svg.replace("<svg", f'<svg class="chart" role="img" aria-label="{escape(label)}" '
                      'stroke-linejoin="round" stroke-linecap="butt"', 1)
    return Markup(svg.strip())


_REGISTERED: set[str] = set()


def _set_fonts(fig: Figure) -> list[str]:
    """Every text of `fig` in the report's fonts followed by installed fonts that have its other characters;
    returns those font families."""
    from matplotlib import font_manager
    from matplotlib.text import Text

    from amulet_audit.report.fonts import fallback_fonts

    for ax in fig.axes:  # tick labels are made on demand: make them now, so they are found and set too
        ax.get_xticklabels(which="both")
        ax.get_yticklabels(which="both")
    texts = [t for t in fig.findobj(Text) if t.get_text()]
    chars = {c for t in texts for c in t.get_text() if not c.isascii()}
    known = {f.name for f in font_manager.fontManager.ttflist}
    families = []
    for font in fallback_fonts(chars):
        if font.family not in known and font.file not in _REGISTERED:
            _REGISTERED.add(font.file)  # matplotlib's font cache may predate the font's installation
            try:
                font_manager.fontManager.addfont(font.file)
            except (OSError, RuntimeError, ValueError):
                continue
            known = {f.name for f in font_manager.fontManager.ttflist}
        if font.family in known and font.family not in families:
            families.append(font.family)
    families = families or ["DejaVu Sans"]
    for text in texts:
        text.set_fontfamily(families)
    return families


def _width(text: str) -> int:
    """Display width in Latin characters: East Asian wide characters count two, combining marks none."""
    return sum(0 if unicodedata.combining(c) or unicodedata.category(c) == "Cf"
               else 2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _cut(text: str, width: int, *, tail: bool = False) -> str:
    """The longest start (or end) of `text` no wider than `width`."""
    chars = reversed(text) if tail else iter(text)
    kept, used = [], 0
    for c in chars:
        used += _width(c)
        if used > width:
            break
        kept.append(c)
    return "".join(reversed(kept) if tail else kept)


def fit_label(text: str, width: int, lines: int = 1) -> str:
    """`text` in at most `lines` lines of about `width` characters, broken at spaces where it can be and inside a
    word where it must; a name longer than that keeps its start and end around "…"."""
    text = " ".join(str(text).split())
    budget = width * lines
    while True:
        short = text
        if _width(text) > budget:
            head = _cut(text, (budget - 1) * 3 // 5)
            short = head + "…" + _cut(text, budget - 1 - _width(head), tail=True)
        out = _wrap(short, width)
        if len(out) <= lines or budget <= width:
            return "\n".join(out[:lines])
        budget -= max(1, width // 3)  # breaking at spaces left lines short: shorten more


def _wrap(text: str, width: int) -> list[str]:
    out: list[str] = []
    line = ""
    for word in text.split(" "):
        candidate = f"{line} {word}" if line else word
        if _width(candidate) <= width:
            line = candidate
            continue
        if line:
            out.append(line)
        while _width(word) > width:
            piece = _cut(word, width) or word[0]
            out.append(piece)
            word = word[len(piece):]
        line = word
    out.append(line)
    return out


def fit_labels(names: Sequence[Any], width: int, lines: int = 1) -> tuple[list[str], bool]:
    """Each name fitted (`fit_label`), kept apart: a different name that fits to the same text as an earlier one
    gets a number. Also whether any name was shortened."""
    fitted: list[str] = []
    owner: dict[str, str] = {}
    shortened = False
    for name in map(str, names):
        text = fit_label(name, width, lines)
        shortened |= "…" in text and "…" not in name
        candidate, k = text, 2
        while owner.get(candidate, name) != name:
            candidate, k = f"{text} ({k})", k + 1
        owner[candidate] = name
        fitted.append(candidate)
    return fitted, shortened


SHORTENED_NOTE = "“…”: a long name shortened; the table gives it in full"


def _presentation_attributes(match: re.Match[str]) -> str:
    pairs = (decl.split(":", 1) for decl in match.group(1).split(";") if ":" in decl)
    return "".join(f' {name.strip()}="{value.strip()}"' for name, value in pairs)


def robustness_curve(
    curve: Sequence[dict[str, Any]],
    *,
    eps: float | None,
    norm: str,
    clean_accuracy: float | None = None,
    minimum: float | None = None,
) -> Markup:
    """Robust accuracy (0..1) against the perturbation budget ε, with its confidence band.

    `curve` items carry `eps`, `robust_accuracy` and optionally `ci` ([low, high]). `eps` is the
    policy's budget (marked by a vertical line); `minimum` the required robust accuracy, if any.
    """
    points = sorted(
        (p for p in curve if _is_number(p.get("eps")) and _is_number(p.get("robust_accuracy"))),
        key=lambda p: p["eps"],
    )
    xs = [float(p["eps"]) for p in points]
    ys = [float(p["robust_accuracy"]) for p in points]
    norm_label = {"linf": "L∞", "l2": "L2"}.get(norm.lower(), norm)
    with _figure() as (fig, ax):
        cis = [p.get("ci") for p in points]
        if cis and all(isinstance(c, (list, tuple)) and len(c) == 2 for c in cis):
            ax.fill_between(xs, [c[0] for c in cis], [c[1] for c in cis], color=PALETTE[0], alpha=0.18,
                            linewidth=0, label="confidence interval")
        ax.plot(xs, ys, color=PALETTE[0], marker="o", markersize=4, linewidth=1.8, label="robust accuracy")
        if clean_accuracy is not None:
            ax.axhline(clean_accuracy, color=MUTED, linestyle=":", linewidth=1.2,
                       label=f"clean accuracy ({clean_accuracy:.3f})")
        if minimum is not None:
            ax.axhline(minimum, color=PALETTE[3], linestyle="--", linewidth=1.2,
                       label=f"required minimum ({minimum:g})")
        if eps is not None:
            ax.axvline(eps, color=PALETTE[1], linestyle="-", linewidth=1.6, label=f"policy ε = {eps:g}")
            at = _measured_at(xs, ys, eps)
            if at is not None:  # the measurement the verdict rests on
                ax.plot([eps], [at], marker="D", markersize=7, color=PALETTE[1],
                        markeredgecolor=INK, markeredgewidth=0.8, linestyle="none")
        ax.set_xlabel(f"perturbation budget ε ({norm_label} norm)")
        ax.set_ylabel("accuracy under attack")
        ax.set_ylim(0, 1.02)
        if xs:
            ax.set_xlim(min(xs), max(xs + ([eps] if eps is not None else [])) * 1.02 or 1)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncols=3)
        return _to_svg(fig, f"Robust accuracy against perturbation budget ({norm_label})")


def roc_loglog(curves: Sequence[Mapping[str, Any]], *, n_members: int | None = None,
                n_nonmembers: int | None = None) -> Markup:
    """Several membership ROC curves on shared log-log axes from max(1e-4, 1/n) to 1, with the chance line.

    Each curve is {"label": str, "fpr": [...], "tpr": [...]} with rates in 0..1; colours follow the report
    palette and line styles differ too, so curves stay apart in greyscale."""
    from matplotlib.ticker import FuncFormatter

    sizes = [n for n in (n_members, n_nonmembers) if n]
    low = max(1e-4, 1.0 / min(sizes)) if sizes else 1e-4
    styles = ("-", "--", "-.", ":")
    with _figure((4.8, 3.8)) as (fig, ax):
        ax.plot([low, 1], [low, 1], color=MUTED, linestyle=(0, (1, 2)), linewidth=1.0, label="chance (random guess)")
        for i, curve in enumerate(curves):
            pairs = [(float(f), float(t)) for f, t in zip(curve["fpr"], curve["tpr"])
                     if _is_number(f) and _is_number(t)]
            if not pairs:
                continue
            ax.plot([min(max(f, low), 1.0) for f, _ in pairs], [min(max(t, low), 1.0) for _, t in pairs],
                    color=PALETTE[(i + 3) % len(PALETTE)], linestyle=styles[i % len(styles)],
                    linewidth=1.7, label=str(curve["label"]), drawstyle="steps-post")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(low, 1)
        ax.set_ylim(low, 1)
        ax.set_aspect("equal")
        ax.grid(True, which="major")
        plain = FuncFormatter(lambda v, _: f"{v:g}")
        ax.xaxis.set_major_formatter(plain)
        ax.yaxis.set_major_formatter(plain)
        ax.set_xlabel("false-positive rate (non-members flagged)")
        ax.set_ylabel("true-positive rate (members found)")
        ax.legend(loc="lower right")
        return _to_svg(fig, "Membership-inference ROC curves of every attack, on logarithmic axes")


def grouped_bars(categories: Sequence[str], series: Sequence[tuple[str, Sequence[Any]]], *, label: str,
                 ylabel: str, xlabel: str | None = None, size: tuple[float, float] = _SIZE, top: float = 1.0,
                 values: bool = False, reference: tuple[float, str] | None = None) -> Markup:
    """Bars of several series (name, one value per category; rates in 0..`top`) side by side per category, each
    series with its palette colour and hatch. `values` writes each bar's value above it; `reference` draws a
    labelled horizontal line (e.g. chance level). `label` is the chart's accessible name."""
    width = 0.8 / max(len(series), 1)
    many = len(categories) > 6
    # About 8 characters of 9 pt text per inch of figure fit under the axes with a gap between labels: shared by
    # the categories (three lines each), or one rotated line each when there are many.
    names, shortened = fit_labels(categories, 20, 1) if many else fit_labels(
        categories, max(8, int(8 * size[0]) // max(len(categories), 1)), 3)
    with _figure(size) as (fig, ax):
        for i, (name, ys) in enumerate(series):
            xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(categories))]
            heights = [float(v) if _is_number(v) else 0.0 for v in ys]
            bars = ax.bar(xs, heights, width * 0.92, label=name, color=PALETTE[i % len(PALETTE)],
                          hatch=HATCHES[i % len(HATCHES)], edgecolor=INK, linewidth=0.5)
            if values:
                ax.bar_label(bars, labels=[f"{v:.3f}" if _is_number(v) else "–" for v in ys], fontsize=7, padding=2)
        if reference is not None:
            ax.axhline(reference[0], color=MUTED, linestyle=(0, (1, 2)), linewidth=1.2, label=reference[1])
        ax.set_xticks(range(len(categories)), names, rotation=30 if many else 0, ha="right" if many else "center",
                      rotation_mode="anchor" if many else "default")
        ax.set_ylim(0, top)
        ax.set_ylabel(ylabel)
        note = [fit_label(xlabel, 80, 2)] if xlabel else []
        if shortened:
            note.append(SHORTENED_NOTE)
        if note:
            ax.set_xlabel("\n".join(note))
        ax.grid(False, axis="x")
        entries = len(series) + (reference is not None)
        ax.legend(loc="upper center", ncols=min(entries, 4), bbox_to_anchor=(0.5, 1.16))
        return _to_svg(fig, label)


def group_rates(groups: Sequence[dict[str, Any]], *, attribute: str) -> Markup:
    """Grouped bars of selection rate, true-positive rate and false-positive rate (0..1) per group."""
    measures = (("selection_rate", "selection rate"), ("tpr", "true-positive rate"), ("fpr", "false-positive rate"))
    return grouped_bars([g.get("group", "?") for g in groups],
                        [(name, [g.get(key) for g in groups]) for key, name in measures],
                        label=f"Selection, true-positive and false-positive rates per {attribute} group",
                        ylabel="rate", xlabel=attribute)


def score_strips(rows: Sequence[tuple[str, Sequence[float]]], *, marker: tuple[float, str] | None, label: str,
                 xlabel: str, threshold: float | None = 0.5) -> Markup:
    """One horizontal strip of points (scores in 0..1) per row, e.g. a meta-classifier's out-of-fold scores of
    the reference models of each kind, with `marker` (value, name) as a vertical line across all strips and
    `threshold` as a dotted line. Points are jittered vertically (fixed seed) so that equal scores stay visible."""
    import numpy as np

    rng = np.random.default_rng(0)
    with _figure((6.4, 1.0 + 0.55 * len(rows))) as (fig, ax):
        for i, (name, scores) in enumerate(rows):
            xs = [float(v) for v in scores if _is_number(v)]
            ax.scatter(xs, i + rng.uniform(-0.18, 0.18, len(xs)), s=16, color=PALETTE[i % len(PALETTE)],
                       marker="os^D"[i % 4], edgecolors=INK, linewidths=0.4, label=name, zorder=3)
        if threshold is not None:
            ax.axvline(threshold, color=MUTED, linestyle=(0, (1, 2)), linewidth=1.0)
        if marker is not None and _is_number(marker[0]):
            ax.axvline(float(marker[0]), color=PALETTE[3], linewidth=1.8, label=marker[1], zorder=4)
        ax.set_yticks(range(len(rows)), [name for name, _ in rows])
        ax.set_ylim(-0.6, len(rows) - 0.4)
        ax.set_xlim(-0.02, 1.02)
        ax.set_xlabel(xlabel)
        ax.grid(False, axis="y")
        ax.legend(loc="upper center", ncols=len(rows) + (marker is not None), bbox_to_anchor=(0.5, -0.35 - 0.1 / len(rows)))
        return _to_svg(fig, label)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _measured_at(xs: Sequence[float], ys: Sequence[float], x: float) -> float | None:
    """The measured value at `x`, if the curve has a point there (nothing is interpolated)."""
    return next((y for xi, y in zip(xs, ys) if math.isclose(xi, x, rel_tol=1e-9, abs_tol=1e-12)), None)


def interaction_heatmap(defenses: Sequence[str], rows: Sequence[str], cells: dict[tuple[str, str], dict[str, Any]]) -> Markup:
    """Requirement (row) x defense (column) grid. Colour: how much the risk grew (red) or shrank (blue), relative to
    the largest change in the grid; text: the signed change of the metric; a bold frame marks risks the defense is
    meant for, a "!" a flagged unintended worsening, a "?" a possible one (beyond the tolerance, not significant).
    `cells[(defense, row)]`: {delta, harm, intended, flagged, possible}."""
    import numpy as np
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.patches import Rectangle

    harm = np.full((len(rows), len(defenses)), np.nan)
    for (d, r), cell in cells.items():
        harm[rows.index(r), defenses.index(d)] = cell["harm"]
    scale = float(np.nanmax(np.abs(harm))) if np.isfinite(harm).any() and np.nanmax(np.abs(harm)) > 0 else 1.0
    with _figure((6.4, 1.0 + 0.3 * len(rows))) as (fig, ax):
        ax.grid(False)
        # pcolormesh draws vector cells (imshow would embed a bitmap)
        image = ax.pcolormesh(np.arange(len(defenses) + 1) - 0.5, np.arange(len(rows) + 1) - 0.5,
                              np.ma.masked_invalid(harm), cmap="RdBu_r", norm=TwoSlopeNorm(0.0, -scale, scale),
                              edgecolors="white", linewidth=1.0)
        ax.set_xlim(-0.5, len(defenses) - 0.5)
        ax.set_ylim(len(rows) - 0.5, -0.5)
        for (d, r), cell in cells.items():
            i, j = rows.index(r), defenses.index(d)
            strong = abs(cell["harm"]) > 0.6 * scale
            mark = " !" if cell["flagged"] else " ?" if cell.get("possible") else ""
            ax.text(j, i, f"{cell['delta']:+.3f}" + mark, ha="center", va="center",
                    fontsize=7, color="white" if strong else INK, fontweight="bold" if cell["flagged"] else "normal")
            if cell["intended"]:
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor=INK, linewidth=1.6))
        ax.xaxis.tick_top()
        ax.set_xticks(range(len(defenses)), fit_labels(defenses, max(6, 80 // max(len(defenses), 1)), 2)[0],
                      fontsize=7.5)
        ax.set_yticks(range(len(rows)), fit_labels(rows, 32, 1)[0], fontsize=7.5)
        ax.tick_params(length=0)
        for side in ("left", "bottom"):
            ax.spines[side].set_visible(False)
        bar = fig.colorbar(image, ax=ax, fraction=0.035, pad=0.02)
        bar.set_label("risk change (red: worse)", fontsize=7)
        bar.ax.tick_params(labelsize=6)
        return _to_svg(fig, "Change of every requirement's metric under each defense")

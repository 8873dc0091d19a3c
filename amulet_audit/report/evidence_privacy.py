"""Report evidence for the privacy risks beyond membership: attribute inference, data reconstruction and
distribution inference.

Builders take an attack run (its recorded `details`) and the requirements that read it, and return charts and
tables; every number is read from the results, never recomputed. Reconstructed images are drawn from the values
recorded in the details, as an inline SVG (the pixels are embedded in it; nothing outside the report is referenced).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from markupsafe import Markup

from amulet_audit.report import charts
from amulet_audit.report.format import DASH, fmt_number
from amulet_audit.report.nodes import Block, Chart, Table
from amulet_audit.results.model import RequirementResult, Run


def image_grid(images: Sequence[Any], labels: Sequence[str], *, value_range: Sequence[float] | None = None,
               columns: int = 10) -> Markup:
    """Reconstructed inputs side by side, each titled with its class. `images` are nested lists of shape
    (channels, height, width) with 1 (grey) or 3 (RGB) channels, or (height, width); values in `value_range`."""
    import matplotlib
    import numpy as np
    from matplotlib.figure import Figure

    arrays = [np.asarray(im, dtype=float) for im in images]
    lo, hi = (float(value_range[0]), float(value_range[1])) if value_range else (
        min(a.min() for a in arrays), max(a.max() for a in arrays))
    columns = max(1, min(columns, len(arrays)))
    rows = -(-len(arrays) // columns)
    with matplotlib.rc_context(charts._RC):
        fig = Figure(figsize=(0.95 * columns, 1.1 * rows))
        for i, (a, name) in enumerate(zip(arrays, labels)):
            ax = fig.add_subplot(rows, columns, i + 1)
            if a.ndim == 3 and a.shape[0] == 3:
                ax.imshow(np.clip((np.moveaxis(a, 0, -1) - lo) / ((hi - lo) or 1.0), 0, 1), interpolation="nearest")
            else:
                # Dark ink on white, as the digits and most scanned data are seen.
                ax.imshow(a.reshape(a.shape[-2], a.shape[-1]), cmap="gray_r", vmin=lo, vmax=hi, interpolation="nearest")
            ax.set_title(str(name), fontsize=8, pad=2)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            for spine in ax.spines.values():
                spine.set_visible(True)
                spine.set_linewidth(0.5)
        return charts._to_svg(fig, "Model-inversion reconstruction of each class")


def attribute_inference(run: Run, reqs: Sequence[RequirementResult]) -> list[Block]:
    """Per attribute: the attack's and the no-model baseline's balanced accuracy, and per-group recall."""
    details = run.details
    by_attribute: Mapping[str, Any] = details.get("by_attribute") or {}
    measured = {a: e for a, e in by_attribute.items() if "balanced_accuracy" in e}
    blocks: list[Block] = []
    if measured:
        blocks.append(Table(
            ("Attribute", "Attack balanced accuracy", "Baseline balanced accuracy", "Advantage", "Victims", "Baseline"),
            tuple((a, fmt_number(e.get("balanced_accuracy")), fmt_number(e.get("baseline_balanced_accuracy")),
                   fmt_number(e.get("advantage_over_prior")), fmt_number(e.get("n_victims")),
                   str(e.get("baseline", DASH))) for a, e in measured.items()),
            "Attack against the best guess without the model, per sensitive attribute (training records as victims)",
            numeric=frozenset({1, 2, 3, 4}),
        ))
    primary = details.get("attribute")
    for attr in sorted(measured, key=lambda a: a != primary):
        groups = measured[attr].get("groups") or []
        if groups:
            names = [str(g.get("group")) for g in groups]
            blocks.append(Chart(
                f"Attribute inference per {attr} group",
                charts.grouped_bars(names, [("attack (model outputs)", [g.get("attack_recall") for g in groups]),
                                            ("baseline (no model)", [g.get("baseline_recall") for g in groups])],
                                    label=f"Share of each {attr} group inferred correctly, by the attack and by the "
                                          "baseline", ylabel="recall", xlabel=attr, values=len(groups) <= 6,
                                    top=1.12, reference=(1 / len(groups), f"chance (1/{len(groups)})")),
                "Bars above the baseline's show groups whose membership the model's outputs give away beyond what "
                "the other information already does; balanced accuracy is the mean of a colour's bars.",
            ))
            blocks.append(Table(
                ("Group", "Victims", "Auxiliary records", "Attack recall", "Baseline recall"),
                tuple((str(g.get("group")), fmt_number(g.get("victims")), fmt_number(g.get("auxiliary")),
                       fmt_number(g.get("attack_recall")), fmt_number(g.get("baseline_recall")))
                      for g in groups),
                f"Share of each {attr} group the attack identifies correctly",
                numeric=frozenset({1, 2, 3, 4}),
            ))
    skipped = [f"{a}: {e['note']}" for a, e in by_attribute.items() if "note" in e]
    if skipped:
        blocks.append(Table(("Attribute not measured", "Why"), tuple(tuple(s.split(": ", 1)) for s in skipped),
                                "Sensitive attributes left out"))
    return blocks


_CLASS_COLUMNS = (("similarity_member", "To training"), ("similarity_holdout", "To unseen"),
                  ("difference", "Difference"), ("noise_similarity_member", "Noise to training"),
                  ("target_probability", "Confidence"))


def data_reconstruction(run: Run, reqs: Sequence[RequirementResult]) -> list[Block]:
    """For image data, the reconstructions as a grid; for every task, the per-class similarities."""
    details = run.details
    blocks: list[Block] = []
    images = details.get("images")
    if isinstance(images, Mapping) and images.get("reconstructions"):
        blocks.append(Chart(
            "Reconstructed inputs, one per class",
            image_grid(images["reconstructions"], images.get("labels") or [], value_range=images.get("range")),
            "What gradient-based inversion of the model produces for each class, starting from a neutral input. "
            "Recognisable class shapes show what the model learned about the class; a reconstruction that "
            "resembles one particular person's record would show memorisation.",
        ))
    classes = details.get("classes") or []
    if classes:
        blocks.append(Table(
            ("Class", *(title for _, title in _CLASS_COLUMNS)),
            tuple((str(c.get("class")), *(fmt_number(c.get(k)) for k, _ in _CLASS_COLUMNS)) for c in classes),
            "Similarity of each class's reconstruction to its nearest training record and to its nearest unseen "
            "record of the class, and of a random input to the nearest training record; "
            f"similarity = {details.get('similarity', 'see methods')}, averaged over restarts. Confidence: the "
            "model's probability of the class for the reconstruction.",
            numeric=frozenset(range(1, len(_CLASS_COLUMNS) + 1)),
        ))
    return blocks


def distribution_inference(run: Run, reqs: Sequence[RequirementResult]) -> list[Block]:
    """The meta-classifier's cross-validated accuracy per share, and what it concludes about the audited model."""
    details = run.details
    ratios = details.get("ratios") or []
    per_ratio = details.get("per_ratio_accuracy") or []
    probs = details.get("audited_probabilities") or {}
    if len(ratios) != 2:
        return []
    attr, group = details.get("attribute", "?"), details.get("group", "?")
    rows = tuple(
        (f"{float(r):.0%} {attr} = {group}",
         fmt_number(per_ratio[i] if i < len(per_ratio) else None),
         fmt_number(details.get("models_per_ratio")),
         fmt_number(probs.get(str(r))))
        for i, r in enumerate(ratios)
    )
    blocks: list[Block] = []
    scores = details.get("reference_scores") or []
    if len(scores) == 2:
        second = f"{float(ratios[1]):.0%}"
        blocks.append(Chart(
            "Meta-classifier scores of the reference models",
            charts.score_strips(
                [(f"trained with {float(r):.0%} {attr} = {group}", s) for r, s in zip(ratios, scores)],
                marker=(probs.get(str(ratios[1])), "audited model"),
                label=f"Meta-classifier probability of a {second} share, per reference model and for the audited model",
                xlabel=f"meta-classifier probability that the training data had {second} {attr} = {group}"),
            "Each point is one reference model, scored by a meta-classifier that did not see it (out of fold). Two "
            "separate clouds mean the share of the group in the training data is visible in the model's outputs; "
            "the vertical line is where the audited model falls.",
        ))
    blocks.append(Table(
        ("Training distribution", "Meta-classifier accuracy (out of fold)", "Reference models",
         "Probability for the audited model"),
        rows,
        f"Telling apart {float(ratios[0]):.0%} and {float(ratios[1]):.0%} shares of {attr} = {group} "
        f"({details.get('cross_validation', 'cross-validated')})",
        numeric=frozenset({1, 2, 3}),
    ))
    predicted = details.get("audited_predicted_ratio")
    if predicted is not None:
        actual = details.get("audited_actual_ratio")
        blocks.append(Table(
            ("Quantity", "Value"),
            (("Predicted share for the audited model", f"{float(predicted):.0%}"),
             ("Probability of that prediction", fmt_number(details.get("audited_probability"))),
             ("Actual share in its training records", f"{float(actual):.1%}" if actual is not None else DASH)),
            "What the meta-classifier infers about the audited model",
            numeric=frozenset({1}),
        ))
    return blocks

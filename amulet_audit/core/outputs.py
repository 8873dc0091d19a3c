"""Model output conventions: their names, and the one conversion from a model's raw output to per-class
log-probabilities (DESIGN.md, "Output conventions"). The vocabulary every layer shares: the data spec names a
convention, trained copies take their loss from it, attacks read scores through it.

torch is imported inside the functions.
"""

from __future__ import annotations

CONVENTIONS = ("logits", "log_probabilities", "probabilities", "single_logit", "labels")

# One line per convention, for results and the report: what the output is and how the audit reads and trains it.
DESCRIPTIONS = {
    "logits": "one score (logit) per class; read through log-softmax, copies trained with cross-entropy",
    "log_probabilities": "per-class log-probabilities (a final LogSoftmax); copies trained with negative "
                         "log-likelihood on them",
    "probabilities": "class probabilities (a final Softmax or Sigmoid); read as their logarithm, copies trained with "
                     "negative log-likelihood on that logarithm (binary cross-entropy for one column)",
    "single_logit": "one logit z for two classes (class index 1's), read as the logits [0, z]; copies trained with "
                    "binary cross-entropy with logits",
    "labels": "class labels only (no scores, no useful gradient); attacks that need scores, gradients or trained "
              "copies are not applicable",
}

_LOG_FLOOR = -87.0  # log of float32's smallest normal number: log(0) is floored here, never -inf


def as_column(out):
    """A 1-D output (n,) as one column (n, 1); anything else unchanged."""
    return out.unsqueeze(-1) if out.dim() == 1 else out


def to_log_probabilities(out, convention: str, n_classes: int | None = None):
    """Per-class log-probabilities (n, n_classes), float, from a model's raw output `out` under `convention`.
    `n_classes` None: the output's columns, or 2 for one column (a label index output needs it given).

    Works inside `torch.func.vmap` (no data-dependent control flow). logits and log_probabilities: log-softmax
    (which leaves exact log-probabilities unchanged); probabilities: the logarithm, renormalised over the classes
    (one column p: [log(1 - p), log p]); single_logit z: log-softmax of [0, z]; labels: the log of the one-hot
    prediction, floored at log(1e-12). log(0) is floored at about -87, never -inf."""
    import torch
    import torch.nn.functional as F

    if convention not in CONVENTIONS:
        raise ValueError(f"unknown output convention {convention!r}; one of {', '.join(CONVENTIONS)}")
    out = as_column(out)
    if n_classes is None:
        n_classes = out.shape[-1] if out.shape[-1] > 1 else 2
    if convention == "labels":
        idx = out.argmax(-1) if out.shape[-1] == n_classes and n_classes > 1 else out[..., 0].round().long()
        onehot = F.one_hot(idx.clamp(0, n_classes - 1), n_classes).float()
        return torch.log(onehot.clamp_min(1e-12))
    out = out.float() if not out.is_floating_point() else out
    if convention in ("logits", "log_probabilities"):
        return torch.log_softmax(out, dim=-1)
    if convention == "single_logit":
        z = out[..., :1]
        return torch.log_softmax(torch.cat([torch.zeros_like(z), z], dim=-1), dim=-1)
    # probabilities
    if out.shape[-1] == 1 and n_classes == 2:
        p = out[..., :1]
        out = torch.cat([1.0 - p, p], dim=-1)
    logp = torch.log(out.clamp_min(0.0)).clamp_min(_LOG_FLOOR)
    return logp - torch.logsumexp(logp, dim=-1, keepdim=True)


def _final_layer(raw, convention: str) -> str:
    """'softmax' / 'sigmoid' / 'log_softmax' when `raw` is a Sequential (plain or TorchScript) whose last layer is
    that activation over the classes and the convention reads it; '' otherwise."""
    from amulet_audit.core.digest import layer_kind

    if layer_kind(raw) != "Sequential":
        return ""
    children = list(raw.children())
    if len(children) < 2:
        return ""
    last = layer_kind(children[-1])
    dim = getattr(children[-1], "dim", None)
    if convention == "probabilities" and last == "Softmax" and dim in (None, 1, -1):
        return "softmax"
    if convention == "probabilities" and last == "Sigmoid":
        return "sigmoid"
    if convention == "log_probabilities" and last == "LogSoftmax" and dim in (None, 1, -1):
        return "log_softmax"
    return ""


def _stable(h, final: str, n_classes: int | None):
    """The log-probabilities of the final activation `final` applied to `h` (the layer's input), computed without
    forming the probabilities (so no precision is lost where they saturate)."""
    import torch
    import torch.nn.functional as F

    h = as_column(h)
    if final in ("softmax", "log_softmax"):
        return torch.log_softmax(h, dim=-1)
    if h.shape[-1] == 1 and n_classes in (None, 2):  # a sigmoid unit: P(class 1) = sigmoid(z), the logits [0, z]
        return torch.log_softmax(torch.cat([torch.zeros_like(h), h], dim=-1), dim=-1)
    return torch.log_softmax(F.logsigmoid(h), dim=-1)  # per-class sigmoids, renormalised


def scores_module(raw, convention: str, n_classes: int | None = None, *, stable: bool = True):
    """`raw` (a model or trained copy with output `convention`) as a module whose output is per-class scores: `raw`
    itself for logits, else a wrapper returning `to_log_probabilities` of its output. Where `raw` is a Sequential
    ending in the Softmax/Sigmoid/LogSoftmax the convention reads, the wrapper applies the log-space equivalent to
    the last layer's input (same function, no saturation of float32 probabilities) unless `stable` is False."""
    if convention == "logits":
        return raw
    import torch

    final = _final_layer(raw, convention) if stable else ""

    class Scores(torch.nn.Module):
        """Per-class log-probabilities (n, classes) of the wrapped model's output; parameters are the model's."""

        def __init__(self):
            super().__init__()
            self.inner = raw
            self.convention = convention
            self.n_classes = n_classes
            self.final = final

        def forward(self, x):
            if self.final:
                h = x
                for layer in list(self.inner.children())[:-1]:
                    h = layer(h)
                return _stable(h, self.final, self.n_classes)
            return to_log_probabilities(self.inner(x), self.convention, self.n_classes)

    from amulet_audit.core.mode import set_mode

    return set_mode(Scores(), bool(raw.training))  # an exported graph inside keeps its fixed mode

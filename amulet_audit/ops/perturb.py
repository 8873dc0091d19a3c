"""Perturbation primitives shared by evasion attacks and adversarial training: steepest-ascent directions,
projection onto an L-inf or L2 ball and the input range, random starts, and projected gradient steps (PGD,
Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks", ICLR 2018).

Tensors in, tensors out; torch is imported inside the functions."""

from __future__ import annotations


def view(v, like):
    """Per-record values `v` (shape (n,)) broadcast against a batch `like` (shape (n, ...))."""
    return v.view(-1, *([1] * (like.dim() - 1)))


def direction(grad, norm: str):
    """Steepest-ascent direction of unit norm: sign for L-inf, normalised gradient for L2."""
    if norm == "linf":
        return grad.sign()
    return grad / view(grad.flatten(1).norm(dim=1).clamp_min(1e-12), grad)


# Losses an attack maximises, all on per-class scores (n, classes): the audited model is wrapped to return
# log-probabilities (`amulet_audit.ops.scores`), whose differences are the logits' differences.
LOSSES = ("ce", "margin", "dlr", "dlr_targeted")
# Below this cross-entropy (nats) float32 cannot resolve the gradient: 1 - p_y rounds (exp(-CE) has spacing
# 6e-8 near 1), so its direction is wrong and, for very confident models, exactly zero.
CE_FLOOR = 1e-5


def margin(scores, y):
    """z_y - max_{j != y} z_j per record (n,): positive while the record is classified as `y`."""
    import torch

    true = scores.gather(1, y[:, None]).squeeze(1)
    other = scores.masked_fill(torch.nn.functional.one_hot(y, scores.shape[1]).bool(), float("-inf")).amax(1)
    return true - other


def loss_values(scores, y, loss: str, target=None):
    """Per-record loss (n,) to maximise, from per-class scores (n, K) and true classes `y` (n,).

    - `ce`: cross-entropy (nats);
    - `margin`: the Carlini-Wagner margin max_{j != y} z_j - z_y (Carlini & Wagner, "Towards Evaluating the
      Robustness of Neural Networks", IEEE S&P 2017), in score units;
    - `dlr`: the difference of logits ratio -(z_y - max_{j != y} z_j) / (z_pi1 - z_pi3) with z_pi sorted in
      decreasing order (Croce & Hein, ICML 2020, eq. 6), invariant to shifting and scaling the scores. With two
      classes there is no z_pi3: the loss is the margin loss, which orders a record's iterates as any positive
      rescaling of it does (all that APGD's step-size rule compares) and whose sign gradient is scale-invariant;
    - `dlr_targeted`: -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2) towards `target` (n,) (Croce & Hein 2020,
      §4; with three classes the denominator is z_pi1 - z_pi3).
    Raises ValueError for another name, or `dlr_targeted` without `target` or with fewer than three classes."""
    import torch.nn.functional as F

    if loss == "ce":
        return F.cross_entropy(scores, y, reduction="none")
    if loss == "margin":
        return -margin(scores, y)
    k = scores.shape[1]
    top = scores.sort(dim=1, descending=True).values
    if loss == "dlr":
        if k < 3:
            return -margin(scores, y)
        return -margin(scores, y) / (top[:, 0] - top[:, 2]).clamp_min(1e-12)
    if loss == "dlr_targeted":
        if target is None or k < 3:
            raise ValueError("the targeted DLR loss needs a target class per record and at least three classes")
        low = top[:, 2] if k == 3 else (top[:, 2] + top[:, 3]) / 2
        z_y = scores.gather(1, y[:, None]).squeeze(1)
        z_t = scores.gather(1, target[:, None]).squeeze(1)
        return -(z_y - z_t) / (top[:, 0] - low).clamp_min(1e-12)
    raise ValueError(f"unknown loss {loss!r}; one of {', '.join(LOSSES)}")


def loss_grad(module, adv, y, loss: str = "ce", *, fallback: bool = False, target=None):
    """Per-record loss (`loss_values`), its gradient w.r.t. the input (shape of `adv`), and whether the record is
    misclassified (n,) bool.

    `fallback` (with `loss="ce"`): where the cross-entropy is below `CE_FLOOR`, that record's gradient is the margin
    loss's instead (for two classes the same direction as the exact cross-entropy gradient), so that a very
    confident model's underflowing gradient does not stop the attack; the returned loss is still the
    cross-entropy."""
    import torch

    adv = adv.detach().requires_grad_(True)
    out = module(adv)
    values = loss_values(out, y, loss, target)
    objective = values
    if fallback and loss == "ce":
        objective = torch.where(values.detach() < CE_FLOOR, -margin(out, y), values)
    if objective.requires_grad:
        (grad,) = torch.autograd.grad(objective.sum(), adv, allow_unused=True)
    else:  # the output does not depend differentiably on the input (e.g. a rounded or arg-max output)
        grad = None
    grad = torch.zeros_like(adv) if grad is None else grad  # no gradient: no ascent direction; the masking check says so
    return values.detach(), grad.detach(), (out.argmax(1) != y).detach()


def pgd_steps(module, x, y, adv, *, eps: float, norm: str, steps: int, step_size: float, bounds, loss: str = "ce",
              fallback: bool = False):
    """`steps` projected gradient-ascent steps on `loss` (`loss_grad`; default cross-entropy) from `adv` (tensors).
    Returns the final iterate and, per record, whether some iterate was misclassified. Shared by the attack and
    adversarial training."""
    import torch

    fooled = torch.zeros(len(x), dtype=torch.bool)
    for _ in range(steps):
        _, grad, wrong = loss_grad(module, adv, y, loss, fallback=fallback)
        fooled |= wrong
        adv = project(x, adv + step_size * direction(grad, norm), eps, norm, bounds)
    return adv.detach(), fooled


def random_delta(x, eps: float, norm: str, gen):
    import torch

    if norm == "linf":
        return (torch.rand(x.shape, generator=gen) * 2 - 1) * eps
    direction = torch.randn(x.shape, generator=gen)
    direction = direction / view(direction.flatten(1).norm(dim=1).clamp_min(1e-12), x)
    radius = view(torch.rand(len(x), generator=gen), x) * eps
    return direction * radius


def project(x, adv, eps: float, norm: str, bounds):
    """Project `adv` onto the eps-ball around `x` (L-inf or L2), then onto the input range `bounds`."""
    delta = adv - x
    if norm == "linf":
        delta = delta.clamp(-eps, eps)
    else:
        n = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
        delta = delta * view((eps / n).clamp(max=1.0), x)
    adv = x + delta
    if bounds is not None:
        adv = adv.clamp(bounds[0], bounds[1])
    return adv.detach()


def pgd_examples(module, x, y, *, eps: float, norm: str, steps: int, step_size: float, bounds, gen):
    """PGD adversarial examples for a batch (tensors in, tensor out), random start, no restarts; cross-entropy with
    the margin fall-back of `loss_grad`, so that a confident model's underflowing gradient still moves the
    examples."""
    adv, _ = pgd_steps(module, x, y, project(x, x + random_delta(x, eps, norm, gen), eps, norm, bounds),
                       eps=eps, norm=norm, steps=steps, step_size=step_size, bounds=bounds, fallback=True)
    return adv

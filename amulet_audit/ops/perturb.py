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


def loss_grad(module, adv, y):
    """Per-record cross-entropy (nats), its gradient w.r.t. the input, and whether the record is misclassified."""
    import torch
    import torch.nn.functional as F

    adv = adv.detach().requires_grad_(True)
    out = module(adv)
    loss = F.cross_entropy(out, y, reduction="none")
    (grad,) = torch.autograd.grad(loss.sum(), adv)
    return loss.detach(), grad.detach(), (out.argmax(1) != y).detach()


def pgd_steps(module, x, y, adv, *, eps: float, norm: str, steps: int, step_size: float, bounds):
    """`steps` projected gradient-ascent steps on cross-entropy from `adv` (tensors). Returns the final iterate and,
    per record, whether some iterate was misclassified. Shared by the attack and adversarial training."""
    import torch

    fooled = torch.zeros(len(x), dtype=torch.bool)
    for _ in range(steps):
        _, grad, wrong = loss_grad(module, adv, y)
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
    """PGD adversarial examples for a batch (tensors in, tensor out), random start, no restarts."""
    adv, _ = pgd_steps(module, x, y, project(x, x + random_delta(x, eps, norm, gen), eps, norm, bounds),
                       eps=eps, norm=norm, steps=steps, step_size=step_size, bounds=bounds)
    return adv

"""Minimal-perturbation attacks: DeepFool and Carlini & Wagner's L2 attack.

They take no ``eps``: they look for the smallest perturbation (in L2) that changes the
prediction, and report its size in ``linf`` and ``l2``.
"""
from __future__ import annotations

import math

import torch

from seethrough.adversarial.attacks import (
    NO_GRADIENT,
    Outcome,
    Problem,
    check_count,
    check_positive,
    input_gradient,
    register,
)
from seethrough.errors import InputError

#: DeepFool's step is lengthened by this to cross the boundary (the authors' code)
DEEPFOOL_STABILITY = 1e-4
#: the tanh change of variables maps pixels through 2 x - 1 times this (the authors' code)
TANH_SHRINK = 0.999999


# -- DeepFool ----------------------------------------------------------------------------------
def _resolve_deepfool(options: dict) -> dict:
    check_count(options["steps"], "steps", minimum=0)
    check_count(options["candidates"], "candidates", minimum=2)
    options["overshoot"] = check_positive(options["overshoot"], "overshoot", zero=True)
    return options


def _candidates(clean: torch.Tensor, labels: torch.Tensor, count: int) -> torch.Tensor:
    """(n, count - 1) the classes with the highest clean logits other than the label."""
    count = min(count, clean.shape[1])
    top = clean.topk(count, dim=1).indices
    missing = ~(top == labels[:, None]).any(1)
    top[missing, -1] = labels[missing]
    return top[top != labels[:, None]].view(len(top), count - 1)


@register("deepfool", targeted=False, resolve=_resolve_deepfool)
def deepfool(problem: Problem, *, steps: int = 50, overshoot: float = 0.02,
             candidates: int = 10) -> Outcome:
    """DeepFool (Moosavi-Dezfooli et al. 2016): step to the nearest decision boundary of the
    model linearized at the current image, until the prediction leaves the label.

    Each step linearizes ``f_k - f_label`` for the ``candidates - 1`` classes with the highest
    clean logits (one backward pass each), moves to the closest linearized boundary, and
    evaluates ``x + (1 + overshoot) * r_total`` (pixels clipped to [0, 1]), as in the authors'
    code. Defaults from the paper: overshoot 0.02, at most 50 steps, the top 10 classes (what
    the authors used on ImageNet; all classes for models with fewer). Untargeted only.
    """
    originals = problem.images
    count = len(originals)
    adversarial = originals.clone()
    total = torch.zeros_like(originals)
    taken = torch.zeros(count, dtype=torch.long, device=originals.device)
    rows = torch.arange(count, device=originals.device)
    others = None
    for step in range(steps):
        with torch.enable_grad():
            leaf = adversarial[rows].detach().requires_grad_()
            logits = problem.logits(leaf)
            if step == 0:
                problem.observe_clean(logits)
                labels = problem.labels
                others = _candidates(problem.clean_logits, labels, candidates)
            going = logits.argmax(1) == labels[rows]
            if not going.any():
                break
            label_logit = logits.gather(1, labels[rows, None]).squeeze(1)
            best_distance = torch.full((len(rows),), torch.inf, device=originals.device)
            best_direction = torch.zeros_like(leaf)
            for index in range(others.shape[1]):
                gap = logits.gather(1, others[rows, index, None]).squeeze(1) - label_logit
                direction = input_gradient(gap.sum(), leaf,
                                           retain_graph=index + 1 < others.shape[1])
                norms = direction.flatten(1).norm(dim=1).clamp_min(1e-12)
                distance = gap.detach().abs() / norms
                closer = distance < best_distance
                best_distance = torch.where(closer, distance, best_distance)
                best_direction[closer] = direction[closer] / norms[closer].view(-1, 1, 1, 1)
        rows = rows[going]
        step_size = (best_distance[going] + DEEPFOOL_STABILITY).view(-1, 1, 1, 1)
        total[rows] += step_size * best_direction[going]
        adversarial[rows] = torch.clamp(originals[rows] + (1 + overshoot) * total[rows], 0, 1)
        taken[rows] += 1
    return Outcome(adversarial, taken)


# -- Carlini & Wagner L2 -----------------------------------------------------------------------
def _resolve_cw(options: dict) -> dict:
    options["c"] = check_positive(options["c"], "c")
    options["kappa"] = check_positive(options["kappa"], "kappa", zero=True)
    options["lr"] = check_positive(options["lr"], "lr")
    check_count(options["steps"], "steps", minimum=0)
    check_count(options["binary_steps"], "binary_steps")
    return options


def margin(logits: torch.Tensor, classes: torch.Tensor, targeted: bool) -> torch.Tensor:
    """(n,) how far the attack is from its goal in logits: ``max other - target`` (targeted) or
    ``label - max other`` (untargeted); the attack has succeeded where it is < 0."""
    chosen = logits.gather(1, classes[:, None]).squeeze(1)
    mask = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, classes[:, None], True)
    other = logits.masked_fill(mask, -torch.inf).amax(1)
    return other - chosen if targeted else chosen - other


@register("cw_l2", resolve=_resolve_cw)
def cw_l2(problem: Problem, *, c: float = 1.0, kappa: float = 0.0, steps: int = 1000,
          lr: float = 0.01, binary_steps: int = 1, abort_early: bool = True) -> Outcome:
    """Carlini & Wagner's L2 attack (2017): minimize ``||x' - x||² + c * max(margin, -kappa)``
    over ``x' = (tanh(w) + 1) / 2`` (always in [0, 1]) with Adam, keeping per image the closest
    successful ``x'``; images never fooled are returned unchanged.

    ``binary_steps > 1`` searches ``c`` per image as the authors' code does (halve towards the
    last success, else multiply by 10). ``abort_early`` stops a search step when the loss has
    not fallen by 0.01 % over a tenth of the steps (the authors' code). Defaults: kappa 0,
    lr 0.01 (the paper's); c = 1 with no search (the authors' code searches 9 times from
    1e-3 with up to 10,000 steps; torchattacks uses c = 1 and 50 steps); 1000 steps.
    """
    originals = problem.images
    count = len(originals)
    classes = problem.classes()
    flat = originals.flatten(1)
    start = torch.atanh((2 * originals - 1) * TANH_SHRINK)
    const = torch.full((count,), c, device=originals.device)
    lower = torch.zeros(count, device=originals.device)
    upper = torch.full((count,), torch.inf, device=originals.device)
    best = originals.clone()
    best_distance = torch.full((count,), torch.inf, device=originals.device)
    taken = torch.zeros(count, dtype=torch.long, device=originals.device)
    check_every = max(steps // 10, 1)
    for _ in range(binary_steps):
        w = start.clone().requires_grad_()
        optimizer = torch.optim.Adam([w], lr=lr)
        won = torch.zeros(count, dtype=torch.bool, device=originals.device)
        previous = math.inf
        for step in range(steps):
            with torch.enable_grad():
                images = (torch.tanh(w) + 1) / 2
                distance = (images.flatten(1) - flat).pow(2).sum(1)
                logits = problem.logits(images)
                if not logits.requires_grad:
                    raise InputError(NO_GRADIENT)
                gap = margin(logits, classes, problem.targeted)
                cost = (distance + const * gap.clamp(min=-kappa)).sum()
                optimizer.zero_grad(set_to_none=True)
                w.grad = input_gradient(cost, w)
            optimizer.step()
            taken += 1
            with torch.no_grad():
                success = problem.success(logits.detach()) & (gap.detach() <= -kappa)
                closer = success & (distance.detach() < best_distance)
                best_distance = torch.where(closer, distance.detach(), best_distance)
                best[closer] = images.detach()[closer]
                won |= success
            if abort_early and step % check_every == 0:
                value = float(cost.detach())
                if value > previous * 0.9999:
                    break
                previous = value
        upper = torch.where(won, torch.minimum(upper, const), upper)
        lower = torch.where(won, lower, torch.maximum(lower, const))
        const = torch.where(torch.isfinite(upper), (lower + upper) / 2, const * 10)
    return Outcome(best, taken)

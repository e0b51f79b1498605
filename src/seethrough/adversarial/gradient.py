"""Gradient-sign attacks: FGSM, BIM, PGD (L∞ and L2), MI-FGSM, and fooling images.

Each step is one forward and one backward pass of the chunk, on the cross-entropy of the
logits averaged over the chunk (torchattacks' convention): an untargeted attack ascends the
loss of the label, a targeted one descends that of the target. The steps and the clipping are
done in the same order, with the same operations, as torchattacks 3.5.1, so that with the random
start off the images agree with it (bit for bit on the CPU when the whole batch is one chunk).

``early_stop=True`` stops updating an image once the logits of a step's gradient pass show the
attack has succeeded (no extra forward pass); it is off by default, as in the papers, so that
every image gets the same number of steps.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from seethrough.adversarial.attacks import (
    Outcome,
    Problem,
    check_count,
    check_eps,
    check_positive,
    input_gradient,
    register,
)
from seethrough.errors import InputError

#: the default L∞ radius of the L∞ attacks (8 of 255 grey levels, the common CIFAR-10 budget)
EPS = 8 / 255
#: the default L2 radius of PGD with ``norm="l2"``
EPS_L2 = 0.5
#: torchattacks' guard against dividing by a zero gradient norm
DIVISION_EPS = 1e-10

Update = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


def iterate(problem: Problem, start: torch.Tensor, steps: int, update: Update, *,
            rows: torch.Tensor | None = None, early_stop: bool = False,
            clean_start: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``steps`` gradient steps from ``start`` on ``rows`` of the chunk (all by default).

    ``update(images, grad, originals, rows) -> images`` makes one step; ``clean_start`` says
    the first step runs on the unperturbed images (their logits are kept, saving a pass).
    Returns the images (rows not run keep ``start``) and the steps taken per image.
    """
    originals = problem.images
    adversarial = start.clone() if rows is not None else start  # never written in place
    taken = torch.zeros(len(originals), dtype=torch.long, device=originals.device)
    for step in range(steps):
        current = adversarial if rows is None else adversarial[rows]
        with torch.enable_grad():
            leaf = current.detach().requires_grad_()
            logits = problem.logits(leaf)
            if step == 0 and clean_start and rows is None:
                problem.observe_clean(logits)
            keep = None
            if early_stop:
                keep = ~problem.success(logits.detach(), rows)
                if not keep.any():
                    break
            grad = input_gradient(problem.loss(logits, rows), leaf)
        stepped = update(leaf.detach(), grad, originals if rows is None else originals[rows], rows)
        if keep is None or bool(keep.all()):
            if rows is None:
                adversarial = stepped
                taken += 1
            else:
                adversarial[rows] = stepped
                taken[rows] += 1
            continue
        if rows is None:  # a new tensor: ``start`` may be the caller's images
            adversarial = torch.where(keep.view(-1, 1, 1, 1), stepped, current)
            rows = torch.arange(len(originals), device=originals.device)[keep]
        else:
            rows = rows[keep]
            adversarial[rows] = stepped[keep]
        taken[rows] += 1
    return adversarial, taken


def clip_linf(images: torch.Tensor, originals: torch.Tensor, eps: float) -> torch.Tensor:
    """Project onto the L∞ ball of radius ``eps`` around ``originals`` and into [0, 1]."""
    delta = torch.clamp(images - originals, min=-eps, max=eps)
    return torch.clamp(originals + delta, min=0, max=1)


def clip_l2(images: torch.Tensor, originals: torch.Tensor, eps: float) -> torch.Tensor:
    """Project onto the L2 ball of radius ``eps`` around ``originals`` and into [0, 1]."""
    count = len(images)
    delta = images - originals
    norms = torch.norm(delta.view(count, -1), p=2, dim=1)
    factor = torch.min(eps / norms.clamp_min(torch.finfo(norms.dtype).tiny),
                       torch.ones_like(norms))
    return torch.clamp(originals + delta * factor.view(-1, 1, 1, 1), min=0, max=1)


def uniform_start(originals: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """A point drawn uniformly from the ε-ball around each image, clipped to [0, 1]."""
    if norm == "linf":  # as torchattacks' PGD draws it
        start = originals + torch.empty_like(originals).uniform_(-eps, eps)
        return torch.clamp(start, min=0, max=1)
    count = len(originals)
    direction = torch.empty_like(originals).normal_()
    norms = torch.norm(direction.view(count, -1), p=2, dim=1).clamp_min(DIVISION_EPS)
    dims = direction[0].numel()
    radius = eps * torch.rand(count, device=originals.device, dtype=originals.dtype) ** (1 / dims)
    start = originals + direction * (radius / norms).view(-1, 1, 1, 1)
    return torch.clamp(start, min=0, max=1)


# -- FGSM --------------------------------------------------------------------------------------
def _resolve_fgsm(options: dict) -> dict:
    options["eps"] = check_eps(options["eps"])
    return options


@register("fgsm", resolve=_resolve_fgsm)
def fgsm(problem: Problem, *, eps: float = EPS) -> Outcome:
    """Fast gradient sign method (Goodfellow et al. 2015): ``x + eps * sign(grad loss)``.

    One forward and one backward pass. The paper used ε = 0.25 on MNIST and 0.007 on ImageNet
    (≈ 2/255); the default here is 8/255, the common budget for 32-256 px colour images, the
    same as for BIM, PGD and MI-FGSM so that they compare at their defaults.
    """
    originals = problem.images
    with torch.enable_grad():
        leaf = originals.detach().clone().requires_grad_()
        logits = problem.logits(leaf)
        problem.observe_clean(logits)
        grad = input_gradient(problem.loss(logits), leaf)
    adversarial = torch.clamp(originals + eps * grad.sign(), min=0, max=1)
    return Outcome(adversarial, torch.ones(len(originals), dtype=torch.long,
                                           device=originals.device))


# -- BIM ---------------------------------------------------------------------------------------
def kurakin_steps(eps: float) -> int:
    """Kurakin et al.'s number of steps, ``min(eps + 4, 1.25 eps)`` with eps in grey levels."""
    return int(min(eps * 255 + 4, 1.25 * eps * 255))


def _resolve_bim(options: dict) -> dict:
    options["eps"] = check_eps(options["eps"])
    options["alpha"] = check_positive(options["alpha"], "alpha", zero=True)
    if options["steps"] is None:
        options["steps"] = kurakin_steps(options["eps"])
    check_count(options["steps"], "steps", minimum=0)
    return options


@register("bim", resolve=_resolve_bim)
def bim(problem: Problem, *, eps: float = EPS, alpha: float = 1 / 255, steps: int | None = None,
        early_stop: bool = False) -> Outcome:
    """Basic iterative method (Kurakin et al. 2017): FGSM steps of ``alpha``, clipped to the
    ε-ball and to [0, 1] after each step, starting at the image.

    Defaults from the paper: ``alpha`` = 1 grey level (1/255), ``steps = min(eps + 4,
    1.25 eps)`` in grey levels (10 at eps = 8/255). (torchattacks defaults to alpha = 2/255 and
    10 steps.)
    """
    def update(images, grad, originals, rows):
        stepped = images + alpha * grad.sign()
        low = torch.clamp(originals - eps, min=0)
        stepped = torch.minimum(torch.maximum(stepped, low), originals + eps)
        return torch.clamp(stepped, max=1)

    images, taken = iterate(problem, problem.images, steps, update, early_stop=early_stop,
                            clean_start=True)
    return Outcome(images, taken)


# -- PGD ---------------------------------------------------------------------------------------
def _resolve_pgd(options: dict) -> dict:
    if options["norm"] not in ("linf", "l2"):
        raise InputError(f"norm must be 'linf' or 'l2', not {options['norm']!r}")
    if options["eps"] is None:
        options["eps"] = EPS if options["norm"] == "linf" else EPS_L2
    options["eps"] = check_eps(options["eps"])
    if options["alpha"] is None:
        options["alpha"] = options["eps"] / 4
    options["alpha"] = check_positive(options["alpha"], "alpha", zero=True)
    check_count(options["steps"], "steps", minimum=0)
    check_count(options["restarts"], "restarts")
    if options["restarts"] > 1 and not options["random_start"]:
        raise InputError("restarts > 1 need random_start=True: without a random start every "
                         "restart gives the same images")
    return options


@register("pgd", resolve=_resolve_pgd)
def pgd(problem: Problem, *, eps: float | None = None, alpha: float | None = None,
        steps: int = 10, norm: str = "linf", random_start: bool = True, restarts: int = 1,
        early_stop: bool = False) -> Outcome:
    """Projected gradient descent (Madry et al. 2018), L∞ or L2.

    L∞ (``norm="linf"``): steps ``alpha * sign(grad)``, projected onto the ε-ball and [0, 1].
    L2 (``norm="l2"``): steps ``alpha * grad / ||grad||``, projected onto the L2 ε-ball.
    ``random_start`` draws the start uniformly in the ε-ball (the paper's); ``restarts`` runs
    the attack again from new random starts on the images not yet fooled and keeps, per image,
    the first success or else the highest loss. ``steps`` counts the steps of every restart.

    Defaults: eps = 8/255 and alpha = eps / 4 (= 2/255) as Madry et al. on CIFAR-10 (their
    MNIST budget is ε = 0.3, alpha = 0.01, 40 steps), 10 steps (they trained with 7 and
    evaluated with 20; 10 is torchattacks'), one restart. L2: eps = 0.5 (the CIFAR-10 L2
    budget of Madry's lab), alpha = eps / 4.
    """
    originals = problem.images
    count = len(originals)
    if norm == "linf":
        def update(images, grad, originals, rows):
            return clip_linf(images + alpha * grad.sign(), originals, eps)
    else:
        def update(images, grad, originals, rows):
            norms = torch.norm(grad.view(len(grad), -1), p=2, dim=1) + DIVISION_EPS
            return clip_l2(images + alpha * (grad / norms.view(-1, 1, 1, 1)), originals, eps)

    if restarts == 1:
        start = uniform_start(originals, eps, norm) if random_start else originals
        images, taken = iterate(problem, start, steps, update, early_stop=early_stop,
                                clean_start=not random_start)
        return Outcome(images, taken)

    best = originals.clone()
    best_score = torch.full((count,), -torch.inf, device=originals.device)
    best_logits, total = None, torch.zeros(count, dtype=torch.long, device=originals.device)
    rows = torch.arange(count, device=originals.device)
    for restart in range(restarts):
        start = originals.clone()
        start[rows] = uniform_start(originals[rows], eps, norm)
        images, taken = iterate(problem, start, steps, update, early_stop=early_stop,
                                rows=None if restart == 0 else rows)
        with torch.no_grad():
            logits = problem.logits(images[rows])
        won = problem.success(logits, rows)
        score = torch.where(won, torch.inf, problem.objective(logits, rows))
        better = score > best_score[rows]
        if best_logits is None:
            best_logits = logits.new_empty(count, logits.shape[1])
        chosen = rows[better]
        best[chosen], best_logits[chosen] = images[chosen], logits[better]
        best_score[chosen] = score[better]
        total[rows] += taken[rows]
        rows = rows[~won]
        if len(rows) == 0:
            break
    return Outcome(best, total, best_logits)


# -- MI-FGSM -----------------------------------------------------------------------------------
def _resolve_mifgsm(options: dict) -> dict:
    options["eps"] = check_eps(options["eps"])
    check_count(options["steps"], "steps", minimum=0)
    if options["alpha"] is None:
        options["alpha"] = options["eps"] / options["steps"] if options["steps"] else 0.0
    options["alpha"] = check_positive(options["alpha"], "alpha", zero=True)
    options["decay"] = check_positive(options["decay"], "decay", zero=True)
    return options


@register("mifgsm", resolve=_resolve_mifgsm)
def mifgsm(problem: Problem, *, eps: float = EPS, alpha: float | None = None, steps: int = 10,
           decay: float = 1.0, early_stop: bool = False) -> Outcome:
    """Momentum iterative FGSM (Dong et al. 2018): the gradient, divided by its mean absolute
    value, is added to ``decay`` times the running momentum; steps of ``alpha`` take its sign
    and are projected onto the ε-ball and [0, 1].

    Defaults from the paper: ``decay`` μ = 1.0, 10 steps, ``alpha = eps / steps``; the paper's
    ε was 16/255 on ImageNet, the default here is 8/255 like the other L∞ attacks.
    (torchattacks defaults to alpha = 2/255.)
    """
    momentum = torch.zeros_like(problem.images)

    def update(images, grad, originals, rows):
        nonlocal momentum
        scale = torch.mean(torch.abs(grad), dim=(1, 2, 3), keepdim=True)
        grad = grad / scale.clamp_min(torch.finfo(scale.dtype).tiny)
        if rows is None:
            grad = grad + momentum * decay
            momentum = grad
        else:
            grad = grad + momentum[rows] * decay
            momentum[rows] = grad
        return clip_linf(images + alpha * grad.sign(), originals, eps)

    images, taken = iterate(problem, problem.images, steps, update, early_stop=early_stop,
                            clean_start=True)
    return Outcome(images, taken)


# -- fooling images ----------------------------------------------------------------------------
def _resolve_fooling(options: dict) -> dict:
    confidence = options["confidence"]
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or \
            not 0 < confidence < 1:
        raise InputError(f"confidence must be a probability in (0, 1), not {confidence!r}")
    options["confidence"] = float(confidence)
    options["alpha"] = check_positive(options["alpha"], "alpha")
    check_count(options["steps"], "steps", minimum=0)
    if options["eps"] is not None:
        options["eps"] = check_eps(options["eps"])
    return options


@register("fooling", untargeted=False, resolve=_resolve_fooling, confidence="confidence")
def fooling(problem: Problem, *, confidence: float = 0.99, alpha: float = 1 / 255,
            steps: int = 500, eps: float | None = None) -> Outcome:
    """Fooling images (Szegedy et al. 2014): from any image (a photo, noise, a grey square),
    climb the target class until the model gives it probability ``confidence``.

    Each step ascends the log-probability of the target by ``alpha * sign(grad)`` (pixels
    clipped to [0, 1], and to the L∞ ball of radius ``eps`` around the start when given); an
    image stops as soon as a step's forward pass shows the target reached with ``confidence``.
    ``steps`` reports the steps each image needed. Szegedy et al. searched for the smallest
    such change with box-constrained L-BFGS; this is its gradient-ascent form, with no bound on
    the change by default. Defaults: confidence 0.99, alpha 1/255, at most 500 steps.
    """
    def update(images, grad, originals, rows):
        stepped = images + alpha * grad.sign()
        if eps is None:
            return torch.clamp(stepped, min=0, max=1)
        return clip_linf(stepped, originals, eps)

    images, taken = iterate(problem, problem.images, steps, update, early_stop=True,
                            clean_start=True)
    return Outcome(images, taken)

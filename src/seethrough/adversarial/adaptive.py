"""The adaptive attack: PGD that fools the model and a detector of adversarial images together
(Carlini & Wagner 2017, "Adversarial examples are not easily detected"). A detector's AUC
without it is not a result.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from seethrough.adversarial.detectors import HeatmapDetector
    >>> model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
    ...                       nn.Flatten(), nn.Linear(8, 3)).eval()
    >>> detector = HeatmapDetector(num_classes=3, method="gradcam")
    >>> result = adaptive_attack(model, detector, torch.rand(2, 3, 32, 32), steps=2)
    >>> result.method, bool((result.linf <= 8 / 255 + 1e-6).all())
    ('adaptive', True)
"""
from __future__ import annotations

from contextlib import ExitStack

import torch
import torch.nn.functional as F
from torch import nn

from seethrough.adversarial.attacks import (
    check_count,
    check_eps,
    check_positive,
    seeded,
)
from seethrough.adversarial.differentiable import BETA
from seethrough.adversarial.gradient import EPS, clip_linf, uniform_start
from seethrough.adversarial.minimal import margin
from seethrough.adversarial.result import Adversarial
from seethrough.core import check_images, model_device, run_scope
from seethrough.core.batching import chunks

#: the method name of the adaptive attack's results (and its rows in a ``DetectorResult``)
ADAPTIVE = "adaptive"


def adaptive_attack(model: nn.Module, detector, images: torch.Tensor, labels=None, *,
                    eps: float = EPS, alpha: float | None = None, steps: int = 20,
                    weight: float = 1.0, kappa: float = 1.0, random_start: bool = True,
                    beta: float = BETA, batch_size: int = 32, seed: int = 0) -> Adversarial:
    """PGD (L∞) that fools ``model`` and the detector together (Carlini & Wagner 2017).

    Each step descends, by ``alpha * sign(gradient)``, the sum over images of
    ``max(margin, -kappa) + weight * softplus(detector logit)``, where the margin is the
    label's logit minus the largest other (negative once fooled; the clamp at ``-kappa`` lets
    the detector term take over once the image is fooled by ``kappa``) and softplus of the
    logit is the detector's cross-entropy towards "clean". The detector sees the maps of the
    class predicted at each step, with their gradient from ``differentiable.attack_maps``: exact
    for Grad-CAM, the smooth-ReLU derivative for saliency, input x gradient and integrated
    gradients (a ReLU network's map has none), BPDA through a surrogate for other methods;
    the raw-image detector and the statistical ones are differentiated directly. Per image the
    attack keeps the iterate that fools the model with the lowest detector logit (else the
    last one).

    ``detector``: a ``HeatmapDetector`` (its ``method`` says which maps), a
    ``KernelDensityDetector`` or an ``LIDDetector``. Defaults: eps 8/255 (the seen PGD's),
    alpha ``eps / 4``, 20 steps, random start. Returns an ``Adversarial`` (method
    ``"adaptive"``); the model and the detector are left as they were.
    """
    images = check_images(images, model)
    eps = check_eps(eps)
    alpha = eps / 4 if alpha is None else check_positive(alpha, "alpha", zero=True)
    check_count(steps, "steps", minimum=0)
    weight = check_positive(weight, "weight", zero=True)
    kappa = check_positive(kappa, "kappa", zero=True)
    count, device = len(images), model_device(model)
    outputs, all_steps = [], []
    with ExitStack() as stack:
        stack.enter_context(run_scope(model))
        if isinstance(detector, nn.Module):
            stack.enter_context(run_scope(detector))
        stack.enter_context(seeded(device, seed))
        clean_logits = torch.cat([model(images[p]).detach() for p in chunks(count, batch_size)])
        truth = clean_logits.argmax(1) if labels is None else torch.as_tensor(
            labels, dtype=torch.long, device=images.device)
        for part in chunks(count, batch_size, desc="adaptive attack"):
            originals, goal = images[part], truth[part]
            current = uniform_start(originals, eps, "linf") if random_start else originals
            best = current.clone()
            best_score = torch.full((len(originals),), torch.inf, device=images.device)
            for step in range(steps + 1):
                with torch.enable_grad():
                    leaf = current.detach().requires_grad_()
                    logits = model(leaf)
                    classes = logits.argmax(1).detach()
                    logit = detector.logit(model, leaf, classes, beta=beta,
                                           batch_size=batch_size)
                    fooled = (classes != goal).detach()
                    score = torch.where(fooled, logit.detach(), torch.inf)
                    better = score < best_score
                    best[better], best_score[better] = leaf.detach()[better], score[better]
                    if step == steps:
                        break
                    cost = (margin(logits, goal, False).clamp(min=-kappa)
                            + weight * F.softplus(logit)).sum()
                    (grad,) = torch.autograd.grad(cost, leaf)
                current = clip_linf(leaf.detach() - alpha * grad.sign(), originals, eps)
            never = ~torch.isfinite(best_score)
            best[never] = current[never].detach()
            outputs.append(best)
            all_steps.append(torch.full((len(originals),), steps, dtype=torch.long))
        adversarial = torch.cat(outputs)
        logits = torch.cat([model(adversarial[p]).detach() for p in chunks(count, batch_size)])
    return Adversarial.build(
        adversarial, images, clean_logits=clean_logits, logits=logits, labels=truth,
        success=logits.argmax(1) != truth, steps=torch.cat(all_steps), method=ADAPTIVE,
        options={"eps": eps, "alpha": alpha, "steps": steps, "weight": weight, "kappa": kappa,
                 "random_start": random_start, "beta": beta, "detector":
                 getattr(detector, "name", None) or detector.method, "seed": seed,
                 "batch_size": batch_size},
        class_names=getattr(model, "class_names", None))


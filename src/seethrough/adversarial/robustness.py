"""Robustness of explanations (Ghorbani, Abid & Zou 2019, "Interpretation of neural networks is
fragile"): do attribution maps stay put under a small change of the image that keeps the
prediction?

``explanation_robustness(model, images, methods, eps=..., kind=...)`` perturbs each image inside
the L∞ ball of radius ``eps`` while keeping the model's prediction, and compares, per attribution
method, the map of the perturbed image with the original one (both for the class predicted on
the original image), on absolute values as Ghorbani et al. do:

* Spearman rank correlation of all pixels;
* top-k intersection: the fraction of the ``k`` most important pixels of the original map that
  are still among the ``k`` most important (``k`` = 10 % of the pixels by default);
* the shift of the map's centre of mass, in pixels.

Only images whose prediction is unchanged count; the result says how many.

Two kinds of perturbation:

* ``kind="random"``: a random sign perturbation, ``±eps`` on every pixel (their baseline); each
  image gets up to ``tries`` draws until one keeps the prediction, and the same perturbed images
  serve every method.
* ``kind="ghorbani"``: their iterative attack on the explanation: signed gradient steps of
  ``alpha`` (projected onto the ε-ball and [0, 1]) that maximize the change of the map, either
  ``measure="topk"`` (lower the share of the attribution on the original top-k pixels) or
  ``measure="center"`` (move the centre of mass); of the iterates that keep the prediction, each
  image keeps the one whose map changed most (by the measure, on the method's own map). Only for
  ``DIFFERENTIABLE`` methods. The centre attack starts at a random point within ``alpha``
  (the distance has no gradient where it is zero).

The attack's gradient comes from ``differentiable.attack_maps``: the value of a map is always the
method's own (the registry's); on a ReLU network the gradient methods' maps get their
derivative from a smooth ReLU derivative (BPDA, Athalye et al. 2018), Grad-CAM's is exact.

Example:
    >>> import seethrough                                            # doctest: +SKIP
    >>> model = seethrough.load_model("conceptnet")                  # doctest: +SKIP
    >>> x = seethrough.ConceptWorld("val", length=8).batch()["image"]  # doctest: +SKIP
    >>> explanation_robustness(model, x, ["saliency", "gradcam"]).to_frame()  # doctest: +SKIP
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from seethrough.adversarial.attacks import check_count, check_eps, check_positive, seeded
from seethrough.adversarial.differentiable import (
    BETA,
    DIFFERENTIABLE,
    attack_maps,
    registry_maps,
)
from seethrough.adversarial.gradient import EPS, clip_linf
from seethrough.adversarial.transfer import predict
from seethrough.core import check_images, model_device, run_scope
from seethrough.core.batching import chunks
from seethrough.errors import InputError
from seethrough.results import Result

KINDS = ("random", "ghorbani")
MEASURES = ("topk", "center")


# -- how much two maps differ ------------------------------------------------------------------
def rank_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N,) Spearman correlation of the rows of two ``(N, ...)`` maps; 1 where they are equal
    (also constant ones), NaN where one is constant and the other not."""
    from seethrough.core.ranks import spearman

    a, b = a.flatten(1), b.flatten(1)
    value = spearman(a, b)
    return torch.where((a == b).all(1), torch.ones_like(value), value)


def top_k(maps: torch.Tensor, fraction: float) -> torch.Tensor:
    """(N, pixels) bool: the ``fraction`` of pixels with the largest values, per row."""
    flat = maps.flatten(1)
    count = max(1, round(fraction * flat.shape[1]))
    mask = torch.zeros_like(flat, dtype=torch.bool)
    return mask.scatter_(1, flat.topk(count, dim=1).indices, True)


def topk_intersection(a: torch.Tensor, b: torch.Tensor, fraction: float = 0.1) -> torch.Tensor:
    """(N,) share of the top ``fraction`` pixels of ``a`` that are among the top of ``b``."""
    first, second = top_k(a, fraction), top_k(b, fraction)
    return (first & second).sum(1).float() / first.sum(1).float()


def center_of_mass(maps: torch.Tensor) -> torch.Tensor:
    """(N, 2) centre of mass (row, column) of non-negative ``(N, 1, H, W)`` maps, in pixels (the
    image centre for an all-zero map); differentiable in ``maps``."""
    weights = maps.flatten(2).sum(1).view(len(maps), *maps.shape[-2:])
    height, width = weights.shape[-2:]
    rows = torch.arange(height, dtype=weights.dtype, device=maps.device)
    cols = torch.arange(width, dtype=weights.dtype, device=maps.device)
    total = weights.sum((1, 2))
    safe = torch.where(total > 0, total, torch.ones_like(total))
    center = torch.stack([(weights.sum(2) * rows).sum(1) / safe,
                          (weights.sum(1) * cols).sum(1) / safe], 1)
    middle = torch.tensor([(height - 1) / 2, (width - 1) / 2], dtype=weights.dtype,
                          device=maps.device)
    return torch.where((total > 0)[:, None], center, middle)


def _normalized(maps: torch.Tensor) -> torch.Tensor:
    """``|maps|`` summing to 1 per image (differentiable)."""
    flat = maps.abs().flatten(1)
    return flat / flat.sum(1, keepdim=True).clamp_min(1e-12)


# -- the result --------------------------------------------------------------------------------
@dataclass
class RobustnessResult(Result):
    """How much attribution maps change under a perturbation that keeps the prediction.

    Attributes:
        methods: the attribution methods, one row of each tensor per method.
        spearman, topk, center_shift: ``(methods, N)`` Spearman correlation, top-k
            intersection and centre-of-mass shift (pixels) of original vs perturbed map; NaN
            where the image was not kept.
        kept: ``(methods, N)`` bool: a perturbation that keeps the prediction was found.
        linf: ``(methods, N)`` L∞ size of the perturbation used.
        kind: ``"random"`` or ``"ghorbani"``; ``eps``: the L∞ radius; ``fraction``: k as a
            share of the pixels; ``options``: everything else it ran with.
    """

    methods: list[str]
    spearman: torch.Tensor
    topk: torch.Tensor
    center_shift: torch.Tensor
    kept: torch.Tensor
    linf: torch.Tensor
    kind: str = "random"
    eps: float = EPS
    fraction: float = 0.1
    options: dict = field(default_factory=dict)

    def summary(self, method: str) -> dict:
        """Means and standard deviations over the kept images of one method."""
        row = self.methods.index(method)
        kept = self.kept[row]

        def stats(values: torch.Tensor) -> tuple[float, float]:
            values = values[kept & ~values.isnan()].double()
            if len(values) == 0:
                return math.nan, math.nan
            return float(values.mean()), float(values.std()) if len(values) > 1 else 0.0

        spearman, topk, shift = (stats(t[row]) for t in (self.spearman, self.topk,
                                                         self.center_shift))
        return {"method": method, "kind": self.kind, "eps": self.eps,
                "images": int(kept.numel()), "kept": int(kept.sum()),
                "spearman_mean": spearman[0], "spearman_std": spearman[1],
                "topk_mean": topk[0], "topk_std": topk[1],
                "center_shift_mean": shift[0], "center_shift_std": shift[1]}

    def to_frame(self):
        """One row per method: images, kept, mean and std of Spearman, top-k, centre shift."""
        import pandas as pd

        return pd.DataFrame([self.summary(method) for method in self.methods])

    def _tables(self) -> dict:
        import pandas as pd

        rows = []
        for index, method in enumerate(self.methods):
            for image in range(self.kept.shape[1]):
                rows.append({"method": method, "image": image,
                             "kept": bool(self.kept[index, image]),
                             "spearman": float(self.spearman[index, image]),
                             "topk": float(self.topk[index, image]),
                             "center_shift": float(self.center_shift[index, image]),
                             "linf": float(self.linf[index, image])})
        return {"per_image": pd.DataFrame(rows)}

    def plot(self):
        """Mean Spearman and top-k intersection per method, with the standard deviation."""
        from matplotlib.figure import Figure

        frame = self.to_frame()
        fig = Figure(figsize=(1.5 + 1.1 * max(len(self.methods), 3), 3.2))
        ax = fig.add_subplot()
        positions = torch.arange(len(self.methods)).float()
        for shift, (column, name) in zip((-0.2, 0.2), (("spearman", "Spearman"),
                                                       ("topk", f"top-{self.fraction:.0%}"))):
            ax.bar(positions + shift, frame[f"{column}_mean"].fillna(0), 0.4,
                   yerr=frame[f"{column}_std"].fillna(0), capsize=3, label=name)
        ax.set_xticks(positions.tolist(), self.methods, rotation=30, ha="right", fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("original vs perturbed map")
        ax.set_title(f"{self.kind} perturbation, eps = {self.eps * 255:.3g}/255", fontsize=10)
        ax.legend(fontsize=8)
        fig.tight_layout()
        return fig

    def _title(self) -> str:
        return f"RobustnessResult: {self.kind}, eps {self.eps * 255:.3g}/255"

    def _settings(self) -> dict:
        return {"methods": self.methods, "kind": self.kind, "eps": self.eps,
                "fraction": self.fraction, "options": self.options}

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {"spearman": self.spearman, "topk": self.topk, "center_shift": self.center_shift,
                "kept": self.kept, "linf": self.linf}

    @classmethod
    def _from_saved(cls, settings: dict, tensors: dict[str, torch.Tensor]) -> RobustnessResult:
        return cls(list(settings["methods"]), tensors["spearman"], tensors["topk"],
                   tensors["center_shift"], tensors["kept"], tensors["linf"],
                   settings.get("kind", "random"), float(settings.get("eps", EPS)),
                   float(settings.get("fraction", 0.1)), dict(settings.get("options", {})))


# -- the experiment ----------------------------------------------------------------------------
def _compare(before: torch.Tensor, after: torch.Tensor, fraction: float) -> tuple:
    a, b = before.abs(), after.abs()
    shift = (center_of_mass(a) - center_of_mass(b)).norm(dim=1)
    return rank_correlation(a, b), topk_intersection(a, b, fraction), shift


def random_perturbation(model: nn.Module, images: torch.Tensor, classes: torch.Tensor,
                        eps: float, tries: int, batch_size: int
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """``±eps`` random signs per pixel (clipped to [0, 1]), drawn up to ``tries`` times per
    image until the prediction is ``classes``; returns the images (unperturbed where none
    kept it) and the kept mask. Uses the current random generator."""
    perturbed, kept = images.clone(), torch.zeros(len(images), dtype=torch.bool,
                                                  device=images.device)
    for _ in range(tries):
        rows = (~kept).nonzero().squeeze(1)
        if len(rows) == 0:
            break
        signs = torch.randint(0, 2, images[rows].shape, device=images.device) * 2 - 1
        candidate = (images[rows] + eps * signs.to(images.dtype)).clamp(0, 1)
        same = predict(model, candidate, batch_size).to(classes.device) == classes[rows]
        perturbed[rows[same]] = candidate[same]
        kept[rows[same]] = True
    return perturbed, kept


def ghorbani_attack(model: nn.Module, images: torch.Tensor, classes: torch.Tensor, method: str,
                    *, eps: float = EPS, alpha: float | None = None, steps: int = 20,
                    measure: str = "topk", fraction: float = 0.1, beta: float = BETA,
                    options: dict | None = None, batch_size: int = 32
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Ghorbani et al.'s attack on ``method``'s explanation of ``classes`` (run inside
    ``run_scope``). Returns the perturbed images (the original where no iterate kept the
    prediction) and the kept mask.

    Each step ascends, by ``alpha * sign(gradient)``, ``-`` the share of the normalized
    absolute map on the original top-k pixels (``measure="topk"``) or the distance of the
    map's centre of mass from the original one (``"center"``), and projects onto the ε-ball
    and [0, 1]; per image it keeps the iterate with the largest change of the method's own map
    (lowest top-k intersection, or largest centre shift) among those that keep the prediction.
    The centre attack starts from a random point within ``alpha`` of the image (the distance
    has no gradient at zero); uses the current random generator.
    """
    if method not in DIFFERENTIABLE:
        raise InputError(f"the Ghorbani attack needs a map differentiable in the input; "
                         f"{method!r} has none here: use one of {', '.join(DIFFERENTIABLE)}, or "
                         "kind='random'")
    alpha = eps / 4 if alpha is None else alpha
    options = dict(options or {})
    result = images.clone()
    kept = torch.zeros(len(images), dtype=torch.bool, device=images.device)
    for part in chunks(len(images), batch_size, desc=f"ghorbani {method}"):
        originals, goal = images[part], classes[part]
        first = registry_maps(model, originals, goal, method, options, batch_size)
        region = top_k(first.abs(), fraction).float()
        center = center_of_mass(first.abs())
        best, best_change = originals.clone(), torch.full((len(originals),), -torch.inf,
                                                          device=images.device)
        current = originals
        if measure == "center":  # the distance has no gradient where it is zero: start nearby
            current = clip_linf(originals + torch.empty_like(originals).uniform_(-alpha, alpha),
                                originals, eps)
        for step in range(steps + 1):
            with torch.enable_grad():
                leaf = current.detach().requires_grad_()
                maps = attack_maps(model, leaf, goal, method, options=options, beta=beta,
                                   batch_size=batch_size)
                value = maps.detach()
                if step > 0:  # the iterate: does it keep the prediction, how far did it move?
                    same = predict(model, leaf.detach(), batch_size).to(goal.device) == goal
                    if measure == "topk":
                        change = -topk_intersection(first.abs(), value.abs(), fraction)
                    else:
                        change = (center_of_mass(value.abs()) - center).norm(dim=1)
                    better = same & (change > best_change)
                    best[better], best_change[better] = leaf.detach()[better], change[better]
                if step == steps:
                    break
                if measure == "topk":
                    objective = -(_normalized(maps) * region).sum()
                else:
                    objective = (center_of_mass(maps.abs()) - center).norm(
                        dim=1).sum()
                (grad,) = torch.autograd.grad(objective, leaf, allow_unused=True)
            if grad is None:
                grad = torch.zeros_like(leaf)
            current = clip_linf(leaf.detach() + alpha * grad.sign(), originals, eps)
        result[part] = best
        kept[part] = torch.isfinite(best_change)
    return result, kept


def explanation_robustness(
    model: nn.Module, images: torch.Tensor,
    methods: str | Sequence[str] = ("saliency", "input_x_gradient", "integrated_gradients",
                                    "gradcam"),
    *, eps: float = EPS, kind: str = "random", fraction: float = 0.1, measure: str = "topk",
    steps: int = 20, alpha: float | None = None, tries: int = 10, beta: float = BETA,
    method_options: dict[str, dict] | None = None, batch_size: int = 32, seed: int = 0,
) -> RobustnessResult:
    """Per attribution method, how much its maps change under a perturbation within ``eps``
    (L∞) that keeps the model's prediction (Ghorbani et al. 2019).

    Args:
        model: a classifier returning ``(N, classes)`` logits (call ``model.eval()`` first);
            left exactly as it was.
        images: ``(N, C, H, W)`` in [0, 1]. Maps explain the class predicted on each image.
        methods: attribution methods of the registry (``kind="ghorbani"``: of
            ``DIFFERENTIABLE``).
        eps: L∞ radius of the perturbation (default 8/255).
        kind: ``"random"`` (random signs, the same images for every method) or
            ``"ghorbani"`` (their attack on each method's map).
        fraction: k of the top-k intersection, as a share of the pixels (10 %).
        measure: what the Ghorbani attack maximizes: ``"topk"`` (their top-k attack) or
            ``"center"`` (their centre-of-mass attack).
        steps, alpha: the Ghorbani attack's steps and step size (default ``eps / 4``).
        tries: random draws per image to find one that keeps the prediction.
        beta: sharpness of the smooth ReLU derivative used for the attack's gradient.
        method_options: ``{method: options}`` for the attribution methods.
        batch_size: most images per pass; seed: seeds the random signs.

    Metrics are on absolute values of the maps; images whose prediction changed under every
    candidate perturbation are left out (``kept``; ``to_frame`` counts them).
    """
    methods = [methods] if isinstance(methods, str) else list(methods)
    if not methods:
        raise InputError("methods is empty: name at least one attribution method")
    from seethrough.attribution import METHODS

    for method in methods:
        METHODS.get(method)  # unknown names raise, with suggestions
    if kind not in KINDS:
        raise InputError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    if measure not in MEASURES:
        raise InputError(f"measure must be one of {', '.join(MEASURES)}, not {measure!r}")
    eps = check_eps(eps)
    if not 0 < fraction <= 1:
        raise InputError(f"fraction must be in (0, 1], not {fraction!r}")
    check_count(steps, "steps", minimum=0)
    check_count(tries, "tries")
    check_count(batch_size, "batch_size")
    alpha = eps / 4 if alpha is None else check_positive(alpha, "alpha", zero=True)
    beta = check_positive(beta, "beta")
    if kind == "ghorbani":
        wrong = [method for method in methods if method not in DIFFERENTIABLE]
        if wrong:
            raise InputError(f"kind='ghorbani' needs maps differentiable in the input; "
                             f"{', '.join(wrong)} have none here (use one of "
                             f"{', '.join(DIFFERENTIABLE)}, or kind='random')")
    method_options = dict(method_options or {})
    images = check_images(images, model)
    count = len(images)
    rows = {name: torch.full((len(methods), count), math.nan) for name in
            ("spearman", "topk", "center_shift", "linf")}
    kept_all = torch.zeros(len(methods), count, dtype=torch.bool)
    with run_scope(model), seeded(model_device(model), seed):
        classes = predict(model, images, batch_size).to(images.device)
        if kind == "random":
            perturbed, kept = random_perturbation(model, images, classes, eps, tries, batch_size)
        for index, method in enumerate(methods):
            options = method_options.get(method, {})
            if kind == "ghorbani":
                perturbed, kept = ghorbani_attack(
                    model, images, classes, method, eps=eps, alpha=alpha, steps=steps,
                    measure=measure, fraction=fraction, beta=beta, options=options,
                    batch_size=batch_size)
            before = registry_maps(model, images, classes, method, options, batch_size)
            after = registry_maps(model, perturbed, classes, method, options, batch_size)
            for name, value in zip(("spearman", "topk", "center_shift"),
                                   _compare(before, after, fraction)):
                rows[name][index] = torch.where(kept, value, math.nan).cpu()
            linf = (perturbed - images).flatten(1).abs().amax(1)
            rows["linf"][index] = torch.where(kept, linf, math.nan).cpu()
            kept_all[index] = kept.cpu()
    options = {"measure": measure, "steps": steps, "alpha": alpha, "tries": tries,
               "beta": beta, "method_options": method_options, "batch_size": batch_size,
               "seed": seed}
    if kind == "random":
        options = {"tries": tries, "method_options": method_options, "batch_size": batch_size,
                   "seed": seed}
    return RobustnessResult(methods, rows["spearman"], rows["topk"], rows["center_shift"],
                            kept_all, rows["linf"], kind, eps, fraction, options)

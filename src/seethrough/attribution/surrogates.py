"""Model-agnostic methods over superpixels: LIME, Kernel SHAP, Shapley value sampling and
feature ablation. They only run the model forward (no gradients, any architecture).

Each image is cut into segments: ``segments`` is ``"slic"`` (default), ``"quickshift"``,
``"grid"`` or the user's (N, H, W) integer labels, ``n_segments`` the SLIC / grid count (100,
scikit-image's default); see ``superpixels``. The methods score the model on copies with
sets of segments replaced by a ``baseline`` and give one value per segment, painted on its pixels in ``maps`` (N, 1, H, W). ``raw`` is the values
per segment (N, S), S the largest segment count in the batch (zeros past an image's own count);
``superpixels(images, segments, n_segments=...)`` gives the labels they refer to. Perturbed
copies run ``batch_size`` at a time and only one batch of them exists at once; random draws
come from a ``torch.Generator`` seeded with ``seed`` per image, so an image's result does not
depend on the rest of the batch.

Example:
    >>> import torch, torchvision
    >>> model = torchvision.models.resnet18(num_classes=4).eval()
    >>> result = feature_ablation(model, torch.rand(1, 3, 32, 32), 0, segments="grid", n_segments=4)
    >>> result.maps.shape, result.raw.shape
    (torch.Size([1, 1, 32, 32]), torch.Size([1, 4]))
"""
from __future__ import annotations

import math

import torch
from torch import nn

from seethrough.attribution.incremental import segment_drops, trace_for
from seethrough.attribution.registry import register
from seethrough.attribution.result import Attribution
from seethrough.attribution.superpixels import Coalitions, fill_for, padded, paint, superpixels
from seethrough.core import Target
from seethrough.errors import InputError

Segments = str | torch.Tensor


def _prepare(model, images, target, segments, n_segments, baseline, batch_size, probabilities=False):
    labels = superpixels(images, segments, n_segments=n_segments)
    fill = fill_for(baseline, images, labels)
    return labels, Coalitions(model, images, target, labels, fill, batch_size=batch_size,
                              probabilities=probabilities)


def _positive(value, name: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InputError(f"{name} must be a positive integer, not {value!r}")


def _finish(values: list[torch.Tensor], labels: torch.Tensor, images: torch.Tensor) -> Attribution:
    raw = padded(values, images)
    return Attribution(paint(raw, labels), raw=raw)


def weighted_ridge(rows: torch.Tensor, y: torch.Tensor, weights: torch.Tensor, alpha: float) -> torch.Tensor:
    """Coefficients of ``min sum_i w_i (y_i - b - x_i . c)^2 + alpha |c|^2`` (with intercept
    ``b``, not penalized: scikit-learn's ``Ridge(alpha).fit(x, y, sample_weight=w)``), solved
    on the CPU in float64."""
    x, y, w = rows.cpu().double(), y.cpu().double(), weights.cpu().double()
    x = x - (w[:, None] * x).sum(0) / w.sum()
    y = y - (w * y).sum() / w.sum()
    gram = x.T @ (w[:, None] * x) + alpha * torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
    return torch.linalg.lstsq(gram, x.T @ (w * y)).solution


@register("lime")
def lime(
    model: nn.Module, images: torch.Tensor, target: Target, *, segments: Segments = "slic",
    n_segments: int = 100, n_samples: int = 1000, kernel_width: float = 0.25, alpha: float = 1.0,
    baseline: float | torch.Tensor | str = "mean", probabilities: bool = True, seed: int = 0,
    batch_size: int = 32,
) -> Attribution:
    """LIME (Ribeiro et al. 2016): a weighted linear surrogate of the model over superpixels.

    As the paper's reference implementation (``lime_image``): ``n_samples = 1000`` coalitions
    (the first is the image itself, the rest switch each segment on with probability 1/2),
    off segments show their mean colour (``baseline="mean"``), a sample's weight is
    ``sqrt(exp(-d^2 / w^2))`` with ``d`` the cosine distance of its 0/1 vector to all-ones and
    ``w = kernel_width = 0.25``, the surrogate is weighted ridge regression with intercept
    (``alpha = 1``) on every segment (the paper's K-Lasso selection of K features is not
    done), and it explains the target's softmax probability (``probabilities=False``: the
    logit). The map is the surrogate's coefficients. Captum's ``Lime`` differs: 50 samples,
    baseline 0, Lasso (alpha 0.01), a kernel of width 1 on the cosine distance of the
    perturbed *images* to the image, and the raw model output.
    """
    _positive(n_samples, "n_samples")
    if not kernel_width > 0 or not alpha >= 0:
        raise InputError(f"kernel_width must be > 0 and alpha >= 0, not {kernel_width!r}, {alpha!r}")
    labels, coalitions = _prepare(model, images, target, segments, n_segments, baseline,
                                  batch_size, probabilities)
    target.resolve(model, images, batch_size)
    rows = []
    for size in coalitions.counts:
        generator = torch.Generator().manual_seed(seed)
        sample = torch.randint(0, 2, (n_samples, size), generator=generator).bool()
        sample[0] = True
        rows.append(sample)
    scores = coalitions.scores(rows, desc="lime")
    values = []
    for sample, score in zip(rows, scores):
        on = sample.sum(1, dtype=torch.float64)
        distance = 1 - (on / sample.shape[1]).sqrt()  # cosine distance to all-ones; 1 if empty
        weights = torch.exp(-distance**2 / kernel_width**2).sqrt()
        values.append(weighted_ridge(sample, score, weights, alpha))
    return _finish(values, labels, images)


def shapley_kernel(size: int, on: torch.Tensor) -> torch.Tensor:
    """Kernel SHAP's weight of coalitions with ``on`` of ``size`` players:
    ``(M - 1) / (C(M, k) k (M - k))``."""
    k = on.double()
    choose = torch.exp(torch.lgamma(torch.tensor(size + 1.0, dtype=torch.float64))
                       - torch.lgamma(k + 1) - torch.lgamma(size - k + 1))
    return (size - 1) / (choose * k * (size - k))


def _kernel_rows(size: int, n_samples: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Coalitions (neither empty nor full) and their regression weights: all of them with the
    Shapley kernel's weights when there are at most ``n_samples``, else ``n_samples`` drawn
    (in complementary pairs) with size ``k`` of probability ``~ (M - 1) / (k (M - k))``, weight 1."""
    if size < 63 and 2**size - 2 <= n_samples:
        codes = torch.arange(1, 2**size - 1)
        rows = (codes[:, None] >> torch.arange(size)) & 1 == 1
        return rows, shapley_kernel(size, rows.sum(1))
    k = torch.arange(1, size, dtype=torch.float64)
    draws = math.ceil(n_samples / 2)
    on = torch.multinomial((size - 1) / (k * (size - k)), draws, replacement=True, generator=generator) + 1
    ranks = torch.rand(draws, size, generator=generator).argsort(1).argsort(1)
    rows = ranks < on[:, None]
    rows = torch.cat([rows, ~rows])[:n_samples]
    return rows, torch.ones(len(rows), dtype=torch.float64)


@register("kernel_shap")
def kernel_shap(
    model: nn.Module, images: torch.Tensor, target: Target, *, segments: Segments = "slic",
    n_segments: int = 100, n_samples: int | None = None, baseline: float | torch.Tensor | str = 0.5,
    seed: int = 0, batch_size: int = 32,
) -> Attribution:
    """Kernel SHAP (Lundberg & Lee 2017): Shapley values of the superpixels by weighted regression.

    The regression on coalitions ``z`` uses the Shapley kernel and is solved with efficiency
    imposed exactly (``sum of values = f(x) - f(baseline)``, as the paper's infinite weights on
    the empty and full coalitions and the ``shap`` library). With ``2^M - 2 <= n_samples``
    every coalition is evaluated and the values are the exact Shapley values; otherwise
    ``n_samples`` coalitions are drawn in complementary pairs, size ``k`` with probability
    ``~ (M - 1) / (k (M - k))``. ``n_samples=None`` is ``shap``'s automatic ``2 M + 2048``
    (Captum's ``KernelShap``: 25 samples, and efficiency only through weights of 10^6).
    Players off show ``baseline`` (0.5 grey as occlusion; Captum: 0; ``"mean"``: the
    segment's mean colour). The score is the target's logit (or callable value).
    """
    if n_samples is not None:
        _positive(n_samples, "n_samples")
    labels, coalitions = _prepare(model, images, target, segments, n_segments, baseline, batch_size)
    clean = coalitions.clean()
    plans = []
    for size in coalitions.counts:
        generator = torch.Generator().manual_seed(seed)
        rows, weights = _kernel_rows(size, n_samples or 2 * size + 2048, generator)
        plans.append((torch.cat([torch.zeros(1, size, dtype=torch.bool), rows]), weights))
    scores = coalitions.scores([rows for rows, _ in plans], desc="kernel_shap")
    values = []
    for (rows, weights), score, full in zip(plans, scores, clean):
        # solved on the CPU in float64 (CUDA's lstsq needs full rank)
        empty, score, rows = score[0].cpu().double(), score[1:].cpu().double(), rows[1:].double()
        full = full.cpu()
        total = full.double() - empty
        if rows.shape[1] == 1 or len(rows) == 0:
            values.append(total.expand(rows.shape[1]) / rows.shape[1])
            continue
        # eliminate the last player: phi_M = total - sum of the others
        x = rows[:, :-1] - rows[:, -1:]
        y = score - empty - rows[:, -1] * total
        root = weights.sqrt()
        phi = torch.linalg.lstsq(root[:, None] * x, (root * y)[:, None]).solution[:, 0]
        values.append(torch.cat([phi, (total - phi.sum())[None]]))
    return _finish(values, labels, images)


@register("shapley_sampling")
def shapley_sampling(
    model: nn.Module, images: torch.Tensor, target: Target, *, segments: Segments = "slic",
    n_segments: int = 100, n_samples: int = 25, baseline: float | torch.Tensor | str = 0.5,
    seed: int = 0, batch_size: int = 32,
) -> Attribution:
    """Shapley value sampling (Castro et al. 2009; Strumbelj & Kononenko 2010) over superpixels.

    ``n_samples`` random orders of the segments (Captum's ``ShapleyValueSampling`` default,
    25; the papers fix no number); along each order the segments are switched on one by one
    from the baseline and each gets its marginal change of the score; the map is the mean over
    orders. Every order's values sum to ``f(x) - f(baseline)`` exactly. Cost per image:
    ``n_samples * (M - 1) + 2`` forward passes. Baseline and score as ``kernel_shap``.
    """
    _positive(n_samples, "n_samples")
    labels, coalitions = _prepare(model, images, target, segments, n_segments, baseline, batch_size)
    clean = coalitions.clean()
    orders, rows = [], []
    for size in coalitions.counts:
        generator = torch.Generator().manual_seed(seed)
        order = torch.stack([torch.randperm(size, generator=generator) for _ in range(n_samples)])
        rank = order.argsort(1)
        prefixes = rank[:, None, :] < torch.arange(1, size)[None, :, None]  # (orders, M - 1, M)
        orders.append(order)
        rows.append(torch.cat([torch.zeros(1, size, dtype=torch.bool), prefixes.flatten(0, 1)]))
    scores = coalitions.scores(rows, desc="shapley_sampling")
    values = []
    for order, score, full in zip(orders, scores, clean):
        count, size = order.shape
        path = torch.cat([score[:1].expand(count, 1), score[1:].view(count, size - 1),
                          full.expand(count, 1)], 1)
        gains = path.diff(dim=1)  # gains[p, k]: what player order[p, k] added
        total = torch.zeros(size, dtype=score.dtype, device=score.device)
        values.append(total.index_add_(0, order.flatten().to(score.device), gains.flatten()) / count)
    return _finish(values, labels, images)


@register("feature_ablation")
def feature_ablation(
    model: nn.Module, images: torch.Tensor, target: Target, *, segments: Segments = "slic",
    n_segments: int = 100, baseline: float | torch.Tensor | str = 0.5, incremental: bool = True,
    batch_size: int = 32,
) -> Attribution:
    """Feature ablation: each superpixel alone replaced by ``baseline``; its value is the drop
    ``f(x) - f(x without it)`` (as Captum's ``FeatureAblation`` with the superpixels as
    ``feature_mask``; Captum's baseline is 0, here 0.5 grey as occlusion). ``M + 1`` forward
    passes per image, deterministic.

    ``incremental`` (default), as occlusion's: each superpixel recomputes only what its
    bounding box reaches in each layer (``attribution.incremental``), the same values as full
    recompute to float rounding; models it cannot trace run in full, with a warning.
    ``options["incremental"]`` records which ran. (LIME, Kernel SHAP and Shapley sampling
    switch off many segments at once, all over the image: incremental inference has nothing
    to save there, nor for RISE's masks, which cover the whole image.)"""
    labels, coalitions = _prepare(model, images, target, segments, n_segments, baseline, batch_size)
    runner = trace_for(model, target, "feature_ablation") if incremental else None
    if runner is not None:
        values = [segment_drops(runner, images, row, labels[row], coalitions.fill[row], target,
                                batch_size) for row in range(len(images))]
        result = _finish(values, labels, images)
        result.options["incremental"] = True
        return result
    clean = coalitions.clean()
    rows = [~torch.eye(size, dtype=torch.bool) for size in coalitions.counts]
    scores = coalitions.scores(rows, desc="feature_ablation")
    result = _finish([full - score for full, score in zip(clean, scores)], labels, images)
    result.options["incremental"] = False
    return result

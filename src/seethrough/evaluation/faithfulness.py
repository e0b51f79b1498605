"""Does the output change where the map says it should? Three perturbation scores per image.

* ``faithfulness_correlation`` (Bhatt et al. 2020): replace ``subset_size`` random pixels by a
  baseline, ``n_runs`` times; the Pearson correlation between the sum of the map over the subset
  and the drop of the target's score. Higher is better.
* ``infidelity`` (Yeh et al. 2019): ``E_I[(I^T map - (f(x) - f(x - I)))^2]``, the squared error
  of the map as a linear model of the output drop. Lower is better.
* ``road`` (Rong et al. 2022, "Remove and Debias"): remove the top (MoRF) or bottom (LeRF)
  ``p`` % of the pixels, fill them by noisy linear imputation (``noisy_linear_imputation``:
  each removed pixel the weighted mean of its 8 neighbours, a sparse linear system per image,
  plus N(0, 0.01^2) noise), and check whether the model still predicts the target.

Perturbed copies are evaluated ``batch_size`` at a time; random draws come from a generator
seeded with ``seed`` (an image's draws do not depend on ``batch_size``). Scores use logits
unless ``probabilities=True`` (Quantus' default: ``softmax=False``).

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2)).eval()
    >>> faithfulness_correlation(model, torch.rand(2, 3, 8, 8), torch.rand(2, 1, 8, 8), 0,
    ...                          subset_size=8, n_runs=10).shape
    torch.Size([2])
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from seethrough.core import Target, TargetSpec, check_images, run_scope
from seethrough.core.batching import chunks
from seethrough.core.inputs import as_maps
from seethrough.errors import InputError
from seethrough.evaluation.perturbation import _substrate

#: Rong et al.'s weights of the 8 neighbours: 1/6 for the 4 direct ones, 1/12 for the diagonals
NEIGHBOURS = ((0, 1, 1 / 6), (0, -1, 1 / 6), (1, 0, 1 / 6), (-1, 0, 1 / 6),
              (1, 1, 1 / 12), (1, -1, 1 / 12), (-1, 1, 1 / 12), (-1, -1, 1 / 12))
#: Rong et al.'s removal levels in % (Quantus' ROAD default is 1, 3, ..., 99)
ROAD_PERCENTAGES = (10, 20, 30, 40, 50, 60, 70, 80, 90)
PERTURBATIONS = ("square", "gaussian")
ORDERS = ("morf", "lerf")


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of each row pair of ``(N, K)`` tensors; ``NaN`` for a constant row."""
    a, b = a.double(), b.double()
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return ((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))).float()


def _prepare(model, images, maps, target, batch_size):
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, not {batch_size!r}")
    images = check_images(images, model).detach()
    maps = as_maps(maps, size=images.shape[-2:], count=len(images)).to(images.device)
    return images, maps, Target.of(target, len(images))


def _scores(model: nn.Module, goal: Target, total: int, build: Callable, batch_size: int,
            probabilities: bool) -> torch.Tensor:
    """The target's score ``(total,)`` of ``build(slice) -> (batch, image index per row)``."""
    scores = torch.empty(total, dtype=torch.float64)
    with torch.no_grad():
        for part in chunks(total, batch_size):
            batch, rows = build(part)
            value = goal.scores(model(batch), rows, probabilities=probabilities)
            scores[part] = value.double().cpu()
    return scores


def _clean(model, images, goal, batch_size, probabilities) -> torch.Tensor:
    return _scores(model, goal, len(images), lambda part: (images[part], part), batch_size,
                   probabilities)


def _subsets(generator: torch.Generator, count: int, runs: int, pixels: int,
             size: int) -> torch.Tensor:
    """``size`` distinct random pixel indices per image and run ``(count, runs, size)``."""
    return torch.stack([torch.rand(runs, pixels, generator=generator).argsort(1)[:, :size]
                        for _ in range(count)])


def faithfulness_correlation(model: nn.Module, images: torch.Tensor, maps,
                             target: TargetSpec = "predicted", *, subset_size: int = 224,
                             n_runs: int = 100, baseline: str = "zeros",
                             probabilities: bool = False, seed: int = 0,
                             batch_size: int = 64) -> torch.Tensor:
    """Faithfulness correlation per image ``(N,)`` in [-1, 1] (Bhatt et al. 2020).

    Defaults as Quantus' ``FaithfulnessCorrelation`` (``subset_size=224``, ``nr_runs=100``,
    logits); a subset is of whole pixels (all channels) and ``baseline`` is ``"zeros"``,
    ``"mean"`` or ``"blur"`` (Quantus: single values of the (C, H, W) input, to each image's
    minimum, "black"). ``NaN`` where the map or the drops are constant over the runs.
    """
    images, maps, goal = _prepare(model, images, maps, target, batch_size)
    count, _, height, width = images.shape
    pixels = height * width
    if not isinstance(subset_size, int) or not 0 < subset_size < pixels:
        raise InputError(f"subset_size must be a number of pixels in 1..{pixels - 1}, "
                         f"not {subset_size!r}")
    if not isinstance(n_runs, int) or n_runs < 2:
        raise InputError(f"n_runs must be an integer >= 2 (a correlation), not {n_runs!r}")
    if baseline not in ("zeros", "mean", "blur"):
        raise InputError(f"baseline must be 'zeros', 'mean' or 'blur', not {baseline!r}")
    finish = _substrate(images, baseline)
    subsets = _subsets(torch.Generator().manual_seed(seed), count, n_runs, pixels,
                       subset_size).to(images.device)
    sums = maps.flatten(1).double().gather(1, subsets.flatten(1)).view(count, n_runs,
                                                                       subset_size).sum(2)

    def build(part):
        job = torch.arange(part.start, part.stop, device=images.device)
        image, run = job // n_runs, job % n_runs
        mask = torch.zeros(len(job), pixels, dtype=torch.bool, device=images.device)
        mask.scatter_(1, subsets[image, run], True)
        return torch.where(mask.view(-1, 1, height, width), finish[image], images[image]), image

    with run_scope(model), goal.attached(model):
        goal.resolve(model, images, batch_size)
        clean = _clean(model, images, goal, batch_size, probabilities)
        perturbed = _scores(model, goal, count * n_runs, build, batch_size, probabilities)
    drops = clean[:, None] - perturbed.view(count, n_runs)
    return pearson(sums.cpu(), drops)


def _square_masks(generator: torch.Generator, samples: int, height: int, width: int,
                  max_side: int) -> torch.Tensor:
    """``samples`` random squares ``(samples, H, W)``: side uniform in 1..max_side, anywhere."""
    sides = torch.randint(1, max_side + 1, (samples,), generator=generator)
    tops = (torch.rand(samples, generator=generator) * (height - sides + 1)).long()
    lefts = (torch.rand(samples, generator=generator) * (width - sides + 1)).long()
    ys, xs = torch.arange(height).view(1, -1, 1), torch.arange(width).view(1, 1, -1)
    inside_y = (ys >= tops.view(-1, 1, 1)) & (ys < (tops + sides).view(-1, 1, 1))
    inside_x = (xs >= lefts.view(-1, 1, 1)) & (xs < (lefts + sides).view(-1, 1, 1))
    return inside_y & inside_x


def _noise_baseline(seed: int, sample: int, shape, sigma: float) -> torch.Tensor:
    """Yeh et al.'s noisy baseline ``clip(-eps, 0, 1)``, ``eps ~ N(0, sigma^2)``, for one sample."""
    generator = torch.Generator().manual_seed(seed + sample)
    return (-sigma * torch.randn(shape, generator=generator)).clamp(0, 1)


def infidelity(model: nn.Module, images: torch.Tensor, maps, target: TargetSpec = "predicted",
               *, perturbation: str = "square", n_samples: int = 200, max_side: int | None = None,
               sigma: float = 0.2, scale: bool = True, probabilities: bool = False,
               seed: int = 0, batch_size: int = 64) -> torch.Tensor:
    """Infidelity per image ``(N,)`` (Yeh et al. 2019), ``>= 0``; lower is better.

    ``perturbation="square"`` (default; the paper's for attributions such as input x gradient):
    ``I`` is a random square, side 1..``max_side`` (the paper: 1..10 at 28 px; default scaled
    to the width), set to 0; ``I^T map`` is the map's sum over it. ``"gaussian"``: the paper's
    noisy baseline, ``x - I = clip(-eps, 0, 1)``, ``eps ~ N(0, sigma^2)`` per value; ``I^T map``
    with the map over the pixels broadcast over the channels (for gradient-type maps). ``scale``:
    the paper's code first scales the map by the optimal ``beta = E[I^T map dF] / E[(I^T map)^2]``
    (Quantus and Captum do not: ``scale=False``).
    """
    if perturbation not in PERTURBATIONS:
        raise InputError(f"perturbation must be 'square' or 'gaussian', not {perturbation!r}")
    if not isinstance(n_samples, int) or n_samples < 1:
        raise InputError(f"n_samples must be a positive integer, not {n_samples!r}")
    if perturbation == "gaussian" and not sigma > 0:
        raise InputError(f"sigma must be > 0, not {sigma!r}")
    images, maps, goal = _prepare(model, images, maps, target, batch_size)
    count, _, height, width = images.shape
    max_side = max(1, round(10 * width / 28)) if max_side is None else max_side
    if not isinstance(max_side, int) or not 1 <= max_side <= min(height, width):
        raise InputError(f"max_side must be in 1..{min(height, width)} pixels, not {max_side!r}")
    generator = torch.Generator().manual_seed(seed)
    products = torch.empty(count, n_samples, dtype=torch.float64)
    perturbed = torch.empty(count, n_samples, dtype=torch.float64)
    with run_scope(model), goal.attached(model):
        goal.resolve(model, images, batch_size)
        clean = _clean(model, images, goal, batch_size, probabilities)
        for index in range(count):  # one image's perturbations at a time: bounded memory
            image, weights = images[index], maps[index].double()
            squares = (_square_masks(generator, n_samples, height, width, max_side)
                       .to(images.device) if perturbation == "square" else None)

            def build(part, index=index, image=image, weights=weights, squares=squares):
                if squares is not None:
                    batch = image * ~squares[part][:, None]
                    product = (squares[part].double() * weights).flatten(1).sum(1)
                else:
                    batch = torch.stack([_noise_baseline(seed, k, image.shape, sigma)
                                         for k in range(part.start, part.stop)]).to(image)
                    product = ((image - batch).double().sum(1) * weights).flatten(1).sum(1)
                products[index, part] = product.cpu()
                return batch, torch.full((len(batch),), index, dtype=torch.long)

            perturbed[index] = _scores(model, goal, n_samples, build, batch_size, probabilities)
    drops = clean[:, None] - perturbed.view(count, n_samples)
    products = products.cpu()
    if scale:
        energy = (products ** 2).mean(1, keepdim=True)
        beta = (products * drops).mean(1, keepdim=True) / energy.clamp(min=1e-300)
        products = products * torch.where(energy > 0, beta, torch.zeros_like(beta))
    return ((drops - products) ** 2).mean(1).float()


def noisy_linear_imputation(images: torch.Tensor, masks: torch.Tensor, *, noise: float = 0.01,
                            generator: torch.Generator | None = None) -> torch.Tensor:
    """Fill the pixels of ``masks (N, H, W)`` in ``images (N, C, H, W)`` (Rong et al. 2022).

    Each removed pixel equals the weighted mean of its neighbours inside the image (``NEIGHBOURS``:
    1/6 direct, 1/12 diagonal), removed or not: one sparse linear system per image, all channels
    at once (``scipy.sparse.linalg.spsolve``); then ``noise`` times N(0, 1) is added to the filled
    values. Other pixels are returned unchanged.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import spsolve

    count, channels, height, width = images.shape
    if masks.shape != (count, height, width):
        raise InputError(f"masks must have shape {(count, height, width)}, "
                         f"got {tuple(masks.shape)}")
    filled = images.detach().cpu().double().clone()
    for index in range(count):
        removed = masks[index].cpu().numpy().astype(bool)
        if removed.all():
            raise InputError("noisy linear imputation needs at least one pixel kept per image")
        ys, xs = np.nonzero(removed)
        unknowns = len(ys)
        if unknowns == 0:
            continue
        variable = -np.ones((height, width), dtype=np.int64)
        variable[ys, xs] = np.arange(unknowns)
        values = filled[index].numpy().reshape(channels, -1)
        rows, cols, weights = [], [], []
        right = np.zeros((unknowns, channels))
        diagonal = np.zeros(unknowns)
        for dy, dx, weight in NEIGHBOURS:
            ny, nx = ys + dy, xs + dx
            valid = (ny >= 0) & (ny < height) & (nx >= 0) & (nx < width)
            which, ny, nx = np.nonzero(valid)[0], ny[valid], nx[valid]
            diagonal[which] -= weight
            inner = removed[ny, nx]
            rows.append(which[inner])
            cols.append(variable[ny[inner], nx[inner]])
            weights.append(np.full(int(inner.sum()), weight))
            right[which[~inner]] -= weight * values[:, ny[~inner] * width + nx[~inner]].T
        rows.append(np.arange(unknowns))
        cols.append(np.arange(unknowns))
        weights.append(diagonal)
        system = coo_matrix((np.concatenate(weights), (np.concatenate(rows), np.concatenate(cols))),
                            shape=(unknowns, unknowns)).tocsc()
        solution = np.asarray(spsolve(system, right)).reshape(unknowns, channels)
        values[:, ys * width + xs] = solution.T
    if noise:
        jitter = noise * torch.randn(filled.shape, generator=generator, dtype=torch.float64)
        filled = torch.where(masks.cpu()[:, None], filled + jitter, filled)
    return filled.to(images)


def road_curve(model: nn.Module, images: torch.Tensor, maps, target: TargetSpec = "predicted",
               *, order: str = "morf", percentages: Sequence[float] = ROAD_PERCENTAGES,
               noise: float = 0.01, measure: str = "accuracy", seed: int = 0,
               batch_size: int = 64) -> torch.Tensor:
    """ROAD curve per image ``(N, P)``: the model after removing ``percentages`` of the pixels.

    ``order``: ``"morf"`` removes the highest-ranked pixels first, ``"lerf"`` the lowest.
    ``measure``: ``"accuracy"`` (Rong et al., Quantus: 1.0 where the prediction is still the
    target class), ``"probability"`` or ``"logit"`` of the target. ``int(H W p / 100)`` pixels
    are removed at ``p`` % (as Quantus, which ranks single values and is the same for one channel).
    """
    if order not in ORDERS:
        raise InputError(f"order must be 'morf' or 'lerf', not {order!r}")
    if measure not in ("accuracy", "probability", "logit"):
        raise InputError(f"measure must be 'accuracy', 'probability' or 'logit', not {measure!r}")
    percentages = [float(p) for p in percentages]
    if not percentages or any(not 0 <= p < 100 for p in percentages):
        raise InputError(f"percentages must be in [0, 100), not {percentages}")
    images, maps, goal = _prepare(model, images, maps, target, batch_size)
    if measure == "accuracy" and not goal.is_class:
        raise InputError("measure='accuracy' needs class targets; use measure='probability' "
                         "or 'logit'")
    count, _, height, width = images.shape
    order_index = maps.flatten(1).argsort(dim=1, descending=order == "morf", stable=True).cpu()
    ranks = torch.empty_like(order_index)
    ranks.scatter_(1, order_index, torch.arange(height * width).expand(count, -1).contiguous())
    removed = torch.tensor([int(height * width * p / 100) for p in percentages])
    levels = len(percentages)
    generator = torch.Generator()

    def build(part):
        job = torch.arange(part.start, part.stop)
        image, level = job // levels, job % levels
        masks = (ranks[image] < removed[level, None]).view(-1, height, width)
        batch = noisy_linear_imputation(images[image.to(images.device)], masks, noise=0.0)
        if noise:  # one generator per perturbed copy: the draws do not depend on batch_size
            jitter = torch.stack([torch.randn(batch.shape[1:], generator=generator.manual_seed(
                seed + int(k))) for k in job]).to(batch)
            batch = torch.where(masks.to(batch.device)[:, None], batch + noise * jitter, batch)
        return batch, image

    with run_scope(model), goal.attached(model):
        goal.resolve(model, images, batch_size)
        if measure == "accuracy":
            curves = torch.empty(count * levels, dtype=torch.float64)
            with torch.no_grad():
                for part in chunks(count * levels, batch_size):
                    batch, image = build(part)
                    predicted = model(batch).argmax(1).cpu()
                    curves[part] = (predicted == goal.classes[image]).double()
        else:
            curves = _scores(model, goal, count * levels, build, batch_size,
                             measure == "probability")
    return curves.view(count, levels).float()


def road(model: nn.Module, images: torch.Tensor, maps, target: TargetSpec = "predicted",
         **options) -> torch.Tensor:
    """Mean of the ROAD curve per image ``(N,)``: lower is better for MoRF, higher for LeRF.
    Options as ``road_curve``."""
    return road_curve(model, images, maps, target, **options).mean(1)


__all__ = ["faithfulness_correlation", "infidelity", "noisy_linear_imputation", "pearson",
           "road", "road_curve"]

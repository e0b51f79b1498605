"""Is the explanation stable where it should be, and class-specific? Scores that re-explain.

These need the explanation function, not only its maps: ``method`` is a name in
``seethrough.attribution.METHODS`` and ``method_options`` a dict of its options (a dict, not
keywords: SmoothGrad's ``n_samples`` and ``seed`` would clash with the metrics' own). Perturbed
copies are explained ``batch_size`` at a time with the method's inner function (the copies may
leave [0, 1], as in the papers and Quantus; they are not clipped).

* ``max_sensitivity`` (Yeh et al. 2019): ``max ||e(x) - e(x + d)|| / ||e(x)||`` over ``n_samples``
  draws ``d ~ U(-radius, radius)`` per value. Lower is better.
* ``local_lipschitz_estimate`` (Alvarez-Melis & Jaakkola 2018):
  ``max ||e(x) - e(x')|| / ||x - x'||`` over ``n_samples`` neighbours ``x' = x + N(0, sigma^2)``.
  Lower is better.
* ``random_logit`` (Sixt et al. 2020): SSIM between the explanation of the target class and of
  a random other class. Lower is better (the explanation depends on the class).

Defaults are Quantus' (``MaxSensitivity``: 200 samples, ``lower_bound=0.2``;
``LocalLipschitzEstimate``: 200 samples, ``perturb_std=0.1``; ``RandomLogit``: SSIM), without
its normalisation of the maps by their maximum (``normalise=False`` there). The noise of draw
``k`` is the same for every image, seeded with ``seed + k``; ``e`` is the method's ``maps``.

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten(), nn.Linear(2 * 6 * 6, 3)).eval()
    >>> max_sensitivity(model, torch.rand(2, 3, 8, 8), 0, method="saliency",
    ...                 n_samples=4).shape
    torch.Size([2])
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seethrough.core import Target, TargetSpec, check_images, run_scope
from seethrough.core.batching import chunks
from seethrough.core.inputs import as_maps
from seethrough.errors import InputError

#: SSIM's window (uniform, as scikit-image's default) and constants (Wang et al. 2004)
SSIM_WINDOW = 7
SSIM_K1, SSIM_K2 = 0.01, 0.03


def _explainer(model: nn.Module, method: str, options: dict | None, batch_size: int):
    """``(images, target) -> maps (N, H, W)`` with the registered method's inner function."""
    from seethrough.attribution.registry import METHODS, inner

    if options is not None and not isinstance(options, dict):
        raise InputError(f"method_options must be a dict of the method's options, not "
                         f"{type(options).__name__}")
    options = options or {}
    if not isinstance(method, str) or method not in METHODS:
        raise InputError(f"method must be an attribution method name (one of "
                         f"{', '.join(METHODS.names())}), not {method!r}")
    options = {key: value for key, value in options.items() if key != "batch_size"}
    function = inner(method, options)

    def explain(images: torch.Tensor, goal: Target) -> torch.Tensor:
        result = function(model, images, goal, batch_size=batch_size, **options)
        return as_maps(result.maps, size=images.shape[-2:], count=len(images)).double()

    return explain


def noise(kind: str, seed: int, sample: int, shape, scale: float) -> torch.Tensor:
    """Draw ``sample``'s noise (float64): ``"uniform"`` in ``[-scale, scale)`` or ``"gaussian"``,
    N(0, scale^2); seeded with ``seed + sample``."""
    generator = torch.Generator().manual_seed(seed + sample)
    if kind == "uniform":
        return (torch.rand(shape, generator=generator, dtype=torch.float64) * 2 - 1) * scale
    return torch.randn(shape, generator=generator, dtype=torch.float64) * scale


def _check(n_samples, scale, name, batch_size):
    if not isinstance(n_samples, int) or n_samples < 1:
        raise InputError(f"n_samples must be a positive integer, not {n_samples!r}")
    if not scale > 0:
        raise InputError(f"{name} must be > 0, not {scale!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, not {batch_size!r}")


def _worst_case(model, images, target, method, options, *, kind, scale, n_samples, seed,
                batch_size, ratio) -> torch.Tensor:
    """Max over the draws of ``ratio(e(x), e(x + d), d)`` per image ``(N,)``."""
    images = check_images(images, model).detach()
    goal = Target.of(target, len(images))
    explain = _explainer(model, method, options, batch_size)
    count = len(images)
    worst = torch.full((count,), -torch.inf, dtype=torch.float64)
    with run_scope(model), goal.attached(model):
        goal.resolve(model, images, batch_size)
        base = torch.cat([explain(images[part], goal.take(torch.arange(count)[part]))
                          for part in chunks(count, batch_size)]).cpu()
        for part in chunks(count * n_samples, batch_size):
            job = torch.arange(part.start, part.stop)
            sample, image = job // count, job % count
            draws = {int(k): noise(kind, seed, int(k), images.shape[1:], scale)
                     for k in sample.unique()}
            delta = torch.stack([draws[int(k)] for k in sample])
            noisy = images[image.to(images.device)] + delta.to(images)
            maps = explain(noisy, goal.take(image)).cpu()
            value = ratio(base[image], maps, delta)
            worst.scatter_reduce_(0, image, value, reduce="amax")
    return worst.float()


def max_sensitivity(model: nn.Module, images: torch.Tensor, target: TargetSpec = "predicted", *,
                    method: str = "saliency", n_samples: int = 200, radius: float = 0.2,
                    seed: int = 0, batch_size: int = 64,
                    method_options: dict | None = None) -> torch.Tensor:
    """Max-sensitivity per image ``(N,)`` (Yeh et al. 2019): the largest relative change of the
    explanation, ``||e(x) - e(x + d)||_F / ||e(x)||_F``, ``d ~ U(-radius, radius)``.
    An all-zero explanation scores 0 if it stays zero, else ``inf``."""
    _check(n_samples, radius, "radius", batch_size)

    def ratio(base, maps, delta):
        change = (base - maps).flatten(1).norm(dim=1)
        size = base.flatten(1).norm(dim=1)
        return torch.where(size > 0, change / size.clamp(min=1e-300),
                           torch.where(change > 0, torch.inf, 0.0))

    return _worst_case(model, images, target, method, method_options, kind="uniform",
                       scale=radius, n_samples=n_samples, seed=seed, batch_size=batch_size,
                       ratio=ratio)


def local_lipschitz_estimate(model: nn.Module, images: torch.Tensor,
                             target: TargetSpec = "predicted", *, method: str = "saliency",
                             n_samples: int = 200, sigma: float = 0.1, seed: int = 0,
                             batch_size: int = 64,
                             method_options: dict | None = None) -> torch.Tensor:
    """Local Lipschitz estimate per image ``(N,)`` (Alvarez-Melis & Jaakkola 2018):
    ``max ||e(x) - e(x')||_2 / ||x - x'||_2`` over Gaussian neighbours ``x' = x + N(0, sigma^2)``
    (the paper maximises over a ball; Quantus samples, as here, and adds 1e-10 below)."""
    _check(n_samples, sigma, "sigma", batch_size)

    def ratio(base, maps, delta):
        return (base - maps).flatten(1).norm(dim=1) / delta.flatten(1).norm(dim=1)

    return _worst_case(model, images, target, method, method_options, kind="gaussian",
                       scale=sigma, n_samples=n_samples, seed=seed, batch_size=batch_size,
                       ratio=ratio)


def ssim(a: torch.Tensor, b: torch.Tensor, *, window: int = SSIM_WINDOW) -> torch.Tensor:
    """Mean structural similarity of map pairs ``(N, H, W)`` (Wang et al. 2004) ``(N,)``.

    As ``skimage.metrics.structural_similarity`` with its defaults: a uniform ``window`` x
    ``window`` filter, sample covariances, ``K1 = 0.01``, ``K2 = 0.03``, the mean over the
    pixels at least ``window // 2`` from the border, and ``data_range`` the pair's max - min
    (as Quantus). Two equal constant maps score 1.
    """
    a, b = as_maps(a, size=a.shape[-2:]).double(), as_maps(b, size=b.shape[-2:]).double()
    if a.shape != b.shape:
        raise InputError(f"cannot compare maps of shapes {tuple(a.shape)} and {tuple(b.shape)}")
    if min(a.shape[-2:]) < window:
        raise InputError(f"SSIM needs maps of at least {window} x {window} pixels, "
                         f"got {tuple(a.shape[-2:])}")
    both = torch.cat([a.flatten(1), b.flatten(1)], 1)
    span = (both.amax(1) - both.amin(1)).view(-1, 1, 1, 1)
    kernel = torch.full((1, 1, window, window), 1.0 / window**2, dtype=torch.float64,
                        device=a.device)
    x, y = a[:, None], b[:, None]
    mean_x, mean_y = F.conv2d(x, kernel), F.conv2d(y, kernel)
    norm = window**2 / (window**2 - 1)
    var_x = norm * (F.conv2d(x * x, kernel) - mean_x**2)
    var_y = norm * (F.conv2d(y * y, kernel) - mean_y**2)
    cov = norm * (F.conv2d(x * y, kernel) - mean_x * mean_y)
    c1, c2 = (SSIM_K1 * span) ** 2, (SSIM_K2 * span) ** 2
    index = ((2 * mean_x * mean_y + c1) * (2 * cov + c2)
             / ((mean_x**2 + mean_y**2 + c1) * (var_x + var_y + c2)))
    value = index.flatten(1).mean(1)
    return torch.where(span.flatten() > 0, value, torch.ones_like(value)).float()


def random_logit(model: nn.Module, images: torch.Tensor, target: TargetSpec = "predicted", *,
                 method: str = "saliency", seed: int = 0, batch_size: int = 64,
                 method_options: dict | None = None) -> torch.Tensor:
    """Random-logit test per image ``(N,)`` (Sixt et al. 2020): ``ssim`` of the explanation of
    the target class and of a class drawn uniformly from the others (seeded); lower is better."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, not {batch_size!r}")
    images = check_images(images, model).detach()
    goal = Target.of(target, len(images))
    if not goal.is_class:
        raise InputError("random_logit needs class targets (class indices or 'predicted')")
    explain = _explainer(model, method, method_options, batch_size)
    with run_scope(model), goal.attached(model):
        goal.resolve(model, images, batch_size)
        with torch.no_grad():
            classes = model(images[:1]).shape[1]
        if classes < 2:
            raise InputError("random_logit needs a model with at least two classes")
        shift = torch.randint(1, classes, (len(images),),
                              generator=torch.Generator().manual_seed(seed))
        other = Target.of((goal.classes + shift) % classes, len(images))
        rows = torch.arange(len(images))
        own = torch.cat([explain(images[part], goal.take(rows[part]))
                         for part in chunks(len(images), batch_size)])
        off = torch.cat([explain(images[part], other.take(rows[part]))
                         for part in chunks(len(images), batch_size)])
    return ssim(own.cpu(), off.cpu())


__all__ = ["local_lipschitz_estimate", "max_sensitivity", "noise", "random_logit", "ssim"]

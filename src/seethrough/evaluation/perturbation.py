"""Deletion and insertion (Petsiuk et al., RISE, 2018): does the map order pixels by importance?

Deletion removes pixels from the image in the order of the map, most important first, and
tracks the probability of the target class: a good map makes it fall fast (low area under the
curve). Insertion starts from a blurred copy and puts the pixels back in the same order: a good
map makes the probability rise fast (high area). Both change ``step`` pixels at a time (RISE: 224
at 224 x 224, one row's worth, which is the default: ``step = W``) and integrate the curve with
the trapezoid rule over the fraction of pixels changed, so the area lies in [0, 1].

All ``N * (H*W/step + 1)`` perturbed images are evaluated in batches of ``batch_size``.

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2)).eval()
    >>> deletion(model, torch.rand(2, 3, 8, 8), torch.rand(2, 1, 8, 8), target=0).shape
    torch.Size([2])
"""
from __future__ import annotations

import torch
from torch import nn

from seethrough.core import Target, TargetSpec, check_images, model_device, run_scope
from seethrough.core.blur import gaussian_blur
from seethrough.core.inputs import as_maps
from seethrough.errors import InputError
from seethrough.progress import progress_bar

#: RISE's blur for insertion (kernel 11 = radius 5, sigma 5 at 224 px)
BLUR_RADIUS = 5
BLUR_SIGMA = 5.0


def blur(images: torch.Tensor) -> torch.Tensor:
    """RISE's substrate for insertion: a Gaussian blur (kernel 11, sigma 5)."""
    return gaussian_blur(images, BLUR_SIGMA, radius=BLUR_RADIUS)


def _substrate(images: torch.Tensor, name: str) -> torch.Tensor:
    if name == "zeros":
        return torch.zeros_like(images)
    if name == "blur":
        return blur(images)
    if name == "mean":
        return images.mean(dim=(2, 3), keepdim=True).expand_as(images).clone()
    raise InputError(f"substrate must be 'zeros', 'blur' or 'mean', not {name!r}")


def _ranks(maps: torch.Tensor) -> torch.Tensor:
    """Rank of every pixel in its map, 0 = most important (ties keep raster order)."""
    count, height, width = maps.shape
    order = maps.reshape(count, -1).argsort(dim=1, descending=True, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(height * width).expand(count, -1).contiguous())
    return ranks.view(count, 1, height, width)


def _curves(model, start, finish, maps, target: Target, *, step, batch_size, progress, desc):
    count, _, height, width = start.shape
    pixels = height * width
    step = width if step is None else int(step)
    if step < 1:
        raise InputError(f"step must be a positive number of pixels, not {step}")
    if batch_size < 1:
        raise InputError(f"batch_size must be positive, not {batch_size}")
    n_steps = -(-pixels // step)
    changed = torch.clamp(torch.arange(n_steps + 1) * step, max=pixels)
    ranks = _ranks(maps)
    device = model_device(model)
    jobs = torch.cartesian_prod(torch.arange(count), torch.arange(n_steps + 1))
    scores = torch.empty(len(jobs))
    starts = range(0, len(jobs), batch_size)
    with torch.no_grad():
        for begin in progress_bar(starts, desc, progress=progress if len(starts) > 4 else False):
            image, k = jobs[begin:begin + batch_size].unbind(1)
            replace = ranks[image] < changed[k].view(-1, 1, 1, 1)
            batch = torch.where(replace, finish[image], start[image]).to(device)
            value = target.scores(model(batch), image, probabilities=True)
            scores[begin:begin + len(image)] = value.float().cpu()
    return scores.view(count, n_steps + 1)


def _run_curves(model, images, maps, target, *, start, finish, step, batch_size, progress, desc):
    """Check the inputs, scope the model, settle the target; then the curves of ``_curves``."""
    images = check_images(images, model).detach()
    maps = as_maps(maps, size=images.shape[-2:], count=len(images)).cpu()
    goal = Target.of(target, len(images))
    with run_scope(model), goal.attached(model):
        goal.resolve(model, images, batch_size)
        images = images.cpu()
        begin, end = start(images), finish(images)
        return _curves(model, begin, end, maps, goal, step=step, batch_size=batch_size,
                       progress=progress, desc=desc)


def area_under_curve(curves: torch.Tensor) -> torch.Tensor:
    """Trapezoid area of curves ``(N, S+1)`` sampled evenly on [0, 1] (RISE's ``auc``)."""
    if curves.shape[-1] < 2:
        raise InputError("a curve needs at least two points")
    return torch.trapezoid(curves, dx=1.0 / (curves.shape[-1] - 1), dim=-1)


def deletion_curve(model: nn.Module, images: torch.Tensor, maps, target: TargetSpec = "predicted",
                   *, step: int | None = None, substrate: str = "zeros", batch_size: int = 64,
                   progress: bool | None = None) -> torch.Tensor:
    """Probability of the target ``(N, S+1)`` as pixels are removed, most important first.

    ``substrate`` replaces removed pixels: ``"zeros"`` (RISE), ``"blur"`` or ``"mean"``. A
    callable or unit target's value is used instead of a probability. Quantus'
    ``PixelFlipping`` removes single values of the (C, H, W) input, to each image's minimum by
    default ("black"), and leaves out the intact image: with ``features_in_step = C * step``,
    ``perturb_baseline=0.0`` and ``softmax=True`` it gives this curve's points after the first.
    """
    return _run_curves(model, images, maps, target, start=lambda x: x,
                       finish=lambda x: _substrate(x, substrate), step=step,
                       batch_size=batch_size, progress=progress, desc="deletion")


def insertion_curve(model: nn.Module, images: torch.Tensor, maps, target: TargetSpec = "predicted",
                    *, step: int | None = None, substrate: str = "blur", batch_size: int = 64,
                    progress: bool | None = None) -> torch.Tensor:
    """Probability of the target ``(N, S+1)`` as pixels return to a blurred copy, most important first."""
    return _run_curves(model, images, maps, target, start=lambda x: _substrate(x, substrate),
                       finish=lambda x: x, step=step, batch_size=batch_size, progress=progress,
                       desc="insertion")


def deletion(model: nn.Module, images: torch.Tensor, maps, target: TargetSpec = "predicted",
             **options) -> torch.Tensor:
    """Deletion AUC per image ``(N,)``: lower is better. Options as ``deletion_curve``."""
    return area_under_curve(deletion_curve(model, images, maps, target, **options))


def insertion(model: nn.Module, images: torch.Tensor, maps, target: TargetSpec = "predicted",
              **options) -> torch.Tensor:
    """Insertion AUC per image ``(N,)``: higher is better. Options as ``insertion_curve``."""
    return area_under_curve(insertion_curve(model, images, maps, target, **options))

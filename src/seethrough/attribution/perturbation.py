"""Perturbation methods: occlusion and RISE. Perturbed copies run ``batch_size`` at a time
without autograd.

Example:
    >>> import torch, torchvision
    >>> model = torchvision.models.resnet18(num_classes=4).eval()
    >>> occlusion(model, torch.rand(1, 3, 32, 32), 0, window=8).raw.shape
    torch.Size([1, 1, 7, 7])
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from seethrough.attribution.gradients import as_baseline
from seethrough.attribution.incremental import trace_for
from seethrough.attribution.registry import register
from seethrough.attribution.result import Attribution
from seethrough.core import Target
from seethrough.core.batching import chunks
from seethrough.errors import InputError


def _pair(value, name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and v >= 1 for v in pair):
        raise InputError(f"{name} must be a positive int or a pair of them, not {value!r}")
    return pair


def _starts(size: int, window: int, stride: int) -> list[int]:
    """Window positions along one axis; the last window touches the far edge."""
    starts = list(range(0, size - window + 1, stride))
    if starts[-1] != size - window:
        starts.append(size - window)
    return starts


@register("occlusion")
def occlusion(
    model: nn.Module, images: torch.Tensor, target: Target, *, window: int | tuple[int, int] | None = None,
    stride: int | tuple[int, int] | None = None, baseline: float | torch.Tensor = 0.5,
    incremental: bool = True, batch_size: int = 32,
) -> Attribution:
    """Occlusion (Zeiler & Fergus 2014): slide a grey patch, record the drop of the score.

    Each pixel's value is the mean drop ``f(x) - f(x occluded)`` of the target logit over the
    windows that cover it (as Captum's ``Occlusion``). Defaults: a square window of 1/8 of the
    shorter side (28 px at 224, 8 px at 64), stride half the window, grey baseline 0.5 (the
    paper's grey square); ``baseline`` may be any number or tensor broadcastable to the images.
    ``raw`` is the drop per window position (N, 1, rows, cols).

    ``incremental`` (default): each window position recomputes only what the window reaches in
    each layer (``attribution.incremental``, Nakandala et al. 2019), the same map as full
    recompute to float rounding. A model torch.fx cannot trace, one in training mode, or a unit
    target runs in full, with a warning that says why; ``options["incremental"]`` records
    which ran.
    """
    height, width = images.shape[-2:]
    window = _pair(window if window is not None else max(1, math.ceil(min(height, width) / 8)), "window")
    if window[0] > height or window[1] > width:
        raise InputError(f"window {window} is larger than the images ({height}, {width})")
    stride = _pair(stride if stride is not None else (max(1, window[0] // 2), max(1, window[1] // 2)), "stride")
    rows, cols = _starts(height, window[0], stride[0]), _starts(width, window[1], stride[1])
    masks = torch.zeros(len(rows) * len(cols), 1, height, width, dtype=torch.bool, device=images.device)
    for index, (top, left) in enumerate((t, l) for t in rows for l in cols):
        masks[index, :, top:top + window[0], left:left + window[1]] = True
    fill = as_baseline(baseline, images)
    runner = trace_for(model, target, "occlusion") if incremental else None
    if runner is not None:
        drops = _incremental_drops(runner, images, target, fill, rows, cols, window, batch_size)
    else:
        drops = _full_drops(model, images, target, fill, masks, batch_size)
    covered = masks.sum(0, dtype=images.dtype)
    total = torch.einsum("np,pchw->nchw", drops, masks.to(images.dtype))
    return Attribution(total / covered, raw=drops.view(len(images), 1, len(rows), len(cols)),
                       options={"window": window, "stride": stride,
                                "incremental": runner is not None})


@torch.no_grad()
def _full_drops(model, images, target, fill, masks, batch_size) -> torch.Tensor:
    """(N, positions) score drops, each occluded image run through the whole model."""
    clean = torch.cat([target.scores(model(images[part]), part, clean=True)
                       for part in chunks(len(images), batch_size)])
    drops = images.new_empty(len(images), len(masks))
    for part in chunks(len(images) * len(masks), batch_size, desc="occlusion"):
        pair = torch.arange(part.start, part.stop, device=images.device)
        image, position = pair // len(masks), pair % len(masks)
        occluded = torch.where(masks[position], fill[image], images[image])
        drops[image, position] = clean[image] - target.scores(model(occluded), image)
    return drops


def _incremental_drops(runner, images, target, fill, rows, cols, window, batch_size) -> torch.Tensor:
    """(N, positions) score drops, each position recomputing only what its window reaches."""
    origins = torch.tensor([(t, l) for t in rows for l in cols], device=images.device)
    drops = images.new_empty(len(images), len(origins))
    with torch.no_grad():
        for image in range(len(images)):
            index = torch.tensor([image], device=images.device)
            clean = target.scores(runner.start(images[image:image + 1]), index, clean=True)
            for part in chunks(len(origins), batch_size, desc="occlusion" if image == 0 else None):
                output = runner.occluded(origins[part], window, fill[image])
                rows_of = index.expand(part.stop - part.start)  # the output may be a tuple
                drops[image, part] = clean - target.scores(output, rows_of)
    return drops


def rise_masks(
    indices: torch.Tensor, grids: torch.Tensor, shifts: torch.Tensor, size: tuple[int, int]
) -> torch.Tensor:
    """RISE masks ``indices``: upsample the binary grids bilinearly to ``(s + 1) * cell``, crop."""
    s = grids.shape[-1]
    cell = (math.ceil(size[0] / s), math.ceil(size[1] / s))
    big = F.interpolate(grids[indices], size=((s + 1) * cell[0], (s + 1) * cell[1]),
                        mode="bilinear", align_corners=False)
    crops = [
        big[row, :, dy:dy + size[0], dx:dx + size[1]]
        for row, (dy, dx) in enumerate(shifts[indices].tolist())
    ]
    return torch.stack(crops)


@register("rise")
def rise(
    model: nn.Module, images: torch.Tensor, target: Target, *, n_masks: int = 8000,
    cells: int = 7, p: float = 0.5, seed: int = 0, batch_size: int = 32,
) -> Attribution:
    """RISE (Petsiuk et al. 2018): the score-weighted average of random smooth masks.

    Paper's defaults: ``N = 8000`` masks, each a ``s x s`` (``cells=7``) binary grid with
    cells on with probability ``p = 0.5``, upsampled bilinearly to ``(s + 1)`` cells of
    ``ceil(H / s)`` pixels and cropped at a random shift. The grid is relative to the image, so
    the same defaults scale to small images (a 64 px image gets 10 px cells). The score is the
    target's softmax probability on ``x * M`` (a callable target's value as it is); the map is
    ``sum_i score_i M_i / (N p)``. The same seeded masks serve every image.
    """
    if not isinstance(n_masks, int) or n_masks < 1:
        raise InputError(f"n_masks must be a positive integer, not {n_masks!r}")
    if not 0 < p < 1:
        raise InputError(f"p must be in (0, 1), not {p!r}")
    size = tuple(images.shape[-2:])
    generator = torch.Generator().manual_seed(seed)
    grids = (torch.rand(n_masks, 1, cells, cells, generator=generator) < p).to(images)
    cell = (math.ceil(size[0] / cells), math.ceil(size[1] / cells))
    shifts = torch.stack([torch.randint(0, c, (n_masks,), generator=generator) for c in cell], 1)
    target.resolve(model, images, batch_size)
    total = torch.zeros(len(images), 1, *size, dtype=images.dtype, device=images.device)
    count = len(images)
    with torch.no_grad():
        for part in chunks(n_masks * count, batch_size, desc="rise"):
            pair = torch.arange(part.start, part.stop, device=images.device)
            mask, image = pair // count, pair % count
            first = int(mask[0])
            masks = rise_masks(torch.arange(first, int(mask[-1]) + 1), grids, shifts, size)[mask - first]
            score = target.scores(model(images[image] * masks), image, probabilities=True)
            total.index_add_(0, image, score.view(-1, 1, 1, 1) * masks)
    return Attribution(total / (n_masks * p))

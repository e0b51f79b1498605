"""Superpixels and coalitions for the model-agnostic methods (LIME, Kernel SHAP, Shapley
sampling, feature ablation): split each image into segments, switch sets of them off, score.

``superpixels(images, "slic")`` labels each image's pixels ``0 .. S_i - 1``; a coalition is a
boolean row over the segments (on = the image's pixels, off = the baseline's); ``Coalitions``
scores many such rows ``batch_size`` at a time, building only that many perturbed images.

Example:
    >>> import torch
    >>> labels = superpixels(torch.rand(2, 3, 32, 32), "grid", n_segments=4)
    >>> labels.shape, labels.amax((1, 2)).tolist()
    (torch.Size([2, 32, 32]), [3, 3])
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from seethrough.attribution.gradients import as_baseline
from seethrough.core import Target
from seethrough.core.batching import chunks
from seethrough.errors import InputError

SEGMENTERS = ("slic", "quickshift", "grid")


def superpixels(
    images: torch.Tensor, segments: str | torch.Tensor = "slic", *, n_segments: int = 100,
    compactness: float = 10.0,
) -> torch.Tensor:
    """Segment labels ``(N, H, W)`` long, each image's labels consecutive from 0.

    ``"slic"``: scikit-image SLIC with its defaults (``n_segments=100``, ``compactness=10``,
    on each image rescaled to [0, 1], Lab for RGB; pure noise comes out as one segment). ``"quickshift"``: scikit-image quickshift
    with the LIME reference implementation's settings (``kernel_size=4, max_dist=200,
    ratio=0.2``; tuned for 224 px, so few segments on small images). ``"grid"``: about
    ``n_segments`` square cells. A tensor: the user's integer labels ``(N, H, W)`` or ``(H, W)``
    (same for every image); any values, renumbered per image.
    """
    count, _, height, width = images.shape
    if isinstance(segments, torch.Tensor):
        labels = segments
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise InputError(f"segments must be an integer label tensor, not {labels.dtype}")
        if labels.dim() == 2:
            labels = labels.expand(count, -1, -1)
        if tuple(labels.shape) != (count, height, width):
            raise InputError(f"segments mask has shape {tuple(segments.shape)}; it must be "
                             f"(N, H, W) = {(count, height, width)} or (H, W) = {(height, width)}")
        labels = labels.to(images.device)
    elif segments == "grid":
        if not isinstance(n_segments, int) or n_segments < 1:
            raise InputError(f"n_segments must be a positive integer, not {n_segments!r}")
        cell = max(1, math.ceil(math.sqrt(height * width / n_segments)))
        rows = torch.arange(height, device=images.device) // cell
        cols = torch.arange(width, device=images.device) // cell
        grid = rows[:, None] * (int(cols[-1]) + 1) + cols[None, :]
        labels = grid.expand(count, -1, -1)
    elif segments in ("slic", "quickshift"):
        labels = torch.from_numpy(np.stack([
            _segment(image, segments, n_segments, compactness) for image in images.detach().cpu()
        ])).to(images.device)
    else:
        raise InputError(f"segments must be one of {', '.join(SEGMENTERS)} or an (N, H, W) integer "
                         f"label tensor, not {segments!r}")
    return torch.stack([torch.unique(label, return_inverse=True)[1] for label in labels]).long()


def _segment(image: torch.Tensor, how: str, n_segments: int, compactness: float) -> np.ndarray:
    from skimage.segmentation import quickshift, slic

    low, high = image.amin(), image.amax()
    pixels = ((image - low) / (high - low).clamp(min=1e-12)).permute(1, 2, 0).double().numpy()
    rgb = pixels.shape[-1] == 3
    if how == "slic":
        if not isinstance(n_segments, int) or n_segments < 1:
            raise InputError(f"n_segments must be a positive integer, not {n_segments!r}")
        return slic(pixels, n_segments=n_segments, compactness=compactness, start_label=0,
                    channel_axis=-1, convert2lab=rgb)
    if not rgb:
        pixels = np.repeat(pixels.mean(-1, keepdims=True), 3, -1)
    return quickshift(pixels, kernel_size=4, max_dist=200, ratio=0.2)


def fill_for(baseline, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """What an off segment shows: ``"mean"`` (each segment's mean colour, as the LIME
    reference implementation), or a number / tensor broadcastable to the images."""
    if isinstance(baseline, str):
        if baseline != "mean":
            raise InputError(f"baseline must be a number, a tensor or 'mean', not {baseline!r}")
        count, channels = images.shape[:2]
        flat = labels.flatten(1)
        size = int(flat.amax()) + 1
        index = flat[:, None].expand(-1, channels, -1)
        sums = images.new_zeros(count, channels, size).scatter_add_(2, index, images.flatten(2))
        area = images.new_zeros(count, 1, size).scatter_add_(2, flat[:, None], images.new_ones(flat[:, None].shape))
        return (sums / area.clamp(min=1)).gather(2, index).view_as(images)
    return as_baseline(baseline, images)


class Coalitions:
    """Scores of the images with segments switched off, ``batch_size`` perturbed images at a time.

    Args:
        model, images, target: as the method got them (``target`` resolved on first use).
        labels: ``(N, H, W)`` from ``superpixels``; ``fill``: the off segments' pixels.
        probabilities: score class targets by softmax probability instead of logit.
    """

    def __init__(self, model: nn.Module, images: torch.Tensor, target: Target, labels: torch.Tensor,
                 fill: torch.Tensor, *, batch_size: int, probabilities: bool = False):
        self.model, self.images, self.target, self.fill = model, images, target, fill
        self.labels = labels.flatten(1)
        self.counts = [int(c) for c in labels.flatten(1).amax(1) + 1]
        self.batch_size = batch_size
        self.probabilities = probabilities

    def clean(self) -> torch.Tensor:
        """(N,) scores of the images themselves (settles ``"predicted"``)."""
        with torch.no_grad():
            return torch.cat([
                self.target.scores(self.model(self.images[part]), part, clean=True,
                                   probabilities=self.probabilities)
                for part in chunks(len(self.images), self.batch_size)
            ])

    def scores(self, rows: list[torch.Tensor], desc: str | None = None) -> list[torch.Tensor]:
        """Scores ``(M_i,)`` of each image ``i`` under its coalitions ``rows[i]`` ``(M_i, S_i)``
        bool (True = segment on), all images' rows sharing the forward passes."""
        width = max(self.counts)
        flat = torch.ones(sum(len(r) for r in rows), width, dtype=torch.bool, device=self.images.device)
        for start, r in zip(np.cumsum([0] + [len(r) for r in rows[:-1]]).tolist(), rows):
            flat[start:start + len(r), :r.shape[1]] = r
        image = torch.repeat_interleave(torch.tensor([len(r) for r in rows], device=flat.device))
        out = self.images.new_empty(len(flat))
        with torch.no_grad():
            for part in chunks(len(flat), self.batch_size, desc=desc):
                index = image[part]
                on = flat[part].gather(1, self.labels[index]).view(len(index), 1, *self.images.shape[-2:])
                perturbed = torch.where(on, self.images[index], self.fill[index])
                out[part] = self.target.scores(self.model(perturbed), index,
                                               probabilities=self.probabilities)
        return list(out.split([len(r) for r in rows]))


def paint(values: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Maps ``(N, 1, H, W)``: each segment's value ``values[n, s]`` on its pixels."""
    return values.gather(1, labels.flatten(1)).view(len(labels), 1, *labels.shape[-2:])


def padded(values: list[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """Per-image vectors of different lengths as ``(N, S_max)``, zeros past each one's end."""
    out = like.new_zeros(len(values), max(len(v) for v in values))
    for row, value in enumerate(values):
        out[row, :len(value)] = value.to(out)
    return out

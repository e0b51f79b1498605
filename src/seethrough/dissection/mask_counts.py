"""Count thresholded unit masks against label maps without upsampling whole activation maps.

Network Dissection thresholds each unit's activation map after upsampling it to the label
resolution, and a unit's mask covers about ``quantile`` (0.5 %) of the pixels. Upsampling is
linear interpolation: each label pixel is a convex combination of at most 2 x 2 neighbouring
activations (``rows`` and ``cols`` give the weights per axis). A pixel can therefore exceed the
threshold only if the largest of its 2 x 2 activations does. ``mask_counts`` finds those cells
on the small activation grid, interpolates only the label pixels that read them, and counts the
labels under the pixels above the threshold. The result is exactly what the dense masks give
(``IoUCounter.update``), at a few per cent of the work.

Example:
    >>> import torch
    >>> from seethrough.dissection.labels import LabelBatch
    >>> from seethrough.dissection.upsample import bilinear_matrix
    >>> acts = torch.tensor([[[[0.0, 1.0], [0.0, 0.0]]]])        # one unit on a 2 x 2 grid
    >>> labels = LabelBatch(pixel=torch.ones(1, 1, 4, 4, dtype=torch.long), image=torch.zeros(1, 1).long())
    >>> rows = cols = Bands.from_matrix(bilinear_matrix(2, 4))
    >>> per_image, area = mask_counts(acts, torch.tensor([0.5]), rows, cols, labels, concepts=2)
    >>> area.tolist(), per_image[0, 0].tolist()
    ([[4.0]], [0.0, 4.0])
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from seethrough.dissection import kernels
from seethrough.dissection.labels import LabelBatch
from seethrough.errors import InputError

_CHUNK = 1 << 22  # interpolated pixels held at once


@dataclass(frozen=True)
class Bands:
    """Label pixels along one axis grouped by the pair of activations they interpolate.

    Band ``b`` holds the pixels that read activations ``source[b]`` and ``source[b] + 1``
    (the latter past the edge has weight 0), padded to one width with NaN weights: a padded
    pixel's value is NaN, never above a threshold.
    """

    source: torch.Tensor  # (B,) long: first activation index of each band
    pixels: torch.Tensor  # (B, S) long: label pixel indices (0 where padded)
    weights: torch.Tensor  # (B, S, 2) float64: weights of source and source + 1; NaN: padding

    @classmethod
    def from_matrix(cls, matrix: torch.Tensor) -> Bands:
        """Bands of an interpolation matrix (target, source) with at most 2 adjacent taps a row."""
        matrix = matrix.double()
        target, source = matrix.shape
        taps = matrix != 0
        low = taps.float().argmax(1)
        high = source - 1 - taps.flip(1).float().argmax(1)
        if not taps.any(1).all() or (high - low > 1).any() or (matrix < 0).any():
            raise InputError("mask counting needs linear interpolation (<= 2 adjacent, "
                             "non-negative weights per pixel)")
        padded = torch.cat([matrix, torch.zeros(target, 1, dtype=matrix.dtype)], 1)
        pair = torch.stack([padded.gather(1, low[:, None]), padded.gather(1, low[:, None] + 1)], 2)
        starts, counts = torch.unique(low, return_counts=True)
        width = int(counts.max())
        pixels = torch.zeros(len(starts), width, dtype=torch.long)
        weights = torch.full((len(starts), width, 2), torch.nan, dtype=torch.float64)
        for band, start in enumerate(starts.tolist()):
            members = (low == start).nonzero().flatten()
            pixels[band, : len(members)] = members
            weights[band, : len(members)] = pair[members, 0]
        return cls(starts, pixels, weights)

    def select(self, tensor: torch.Tensor, dim: int, shift: int) -> torch.Tensor:
        """``tensor`` at indices ``source + shift`` along ``dim`` (a view when they are a range)."""
        first, count = int(self.source[0]), len(self.source)
        if int(self.source[-1]) - first == count - 1:
            return tensor.narrow(dim, first + shift, count)
        return tensor.index_select(dim, self.source.to(tensor.device) + shift)


def mask_counts(
    acts: torch.Tensor, thresholds: torch.Tensor, rows: Bands, cols: Bands, labels: LabelBatch,
    concepts: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image: labels under each unit's mask and the mask's area.

    Args:
        acts: (N, K, h, w) activations.
        thresholds: (K,) per unit; a label pixel is in the mask when its interpolated value
            is above the unit's threshold.
        rows, cols: ``Bands`` of the upsampling matrices (label rows x h, label cols x w).
        labels: the images' labels (N, L, H, W) as global concept indices.
        concepts: size of the vocabulary.

    Returns:
        ``per_image`` (N, K, concepts) float64 with column 0 zero, and ``area`` (N, K).
    """
    n, units = acts.shape[:2]
    height, width = labels.size
    thresholds = thresholds.to(acts.device, torch.float64)
    if acts.shape[-2:] == (1, 1):  # one value per map: the mask is the whole image or nothing
        on = (acts.reshape(n, units).double() > thresholds).double()
        per_image = on[:, :, None] * labels.label_counts(concepts).to(on)[:, None]
        area = on * (height * width)
    else:
        flat_labels = labels.pixel.to(acts.device, torch.long).reshape(n, -1, height * width)
        if kernels.enabled_for(acts):
            per_image, area = kernels.mask_counts(acts.float(), thresholds, rows, cols,
                                                  flat_labels, width, concepts)
        else:
            per_image, area = _torch_counts(acts, thresholds, rows, cols, flat_labels, width,
                                            concepts)
    per_image = per_image.double()
    per_image[:, :, 0] = 0
    return per_image, area.double()


def _torch_counts(acts: torch.Tensor, thresholds: torch.Tensor, rows: Bands, cols: Bands,
                  flat_labels: torch.Tensor, width: int, concepts: int
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """``mask_counts`` in torch ops (any device): filter the cells, interpolate in batches."""
    n, units = acts.shape[:2]
    device = acts.device
    padded = F.pad(acts.float(), (0, 1, 0, 1), mode="replicate")
    pairs = torch.maximum(rows.select(padded, 2, 0), rows.select(padded, 2, 1))
    cell_max = torch.maximum(cols.select(pairs, 3, 0), cols.select(pairs, 3, 1))
    # a filter only (the pixels are tested in float64 below): compare with the largest float32
    # not above each threshold, so that no cell with a pixel above the threshold is missed
    below = thresholds.float()
    lower = below.nextafter(torch.full_like(below, -torch.inf))
    below = torch.where(below.double() > thresholds, lower, below)
    image, unit, band_r, band_c = (cell_max > below[None, :, None, None]).nonzero(as_tuple=True)
    per_image = torch.zeros(n * units * concepts, dtype=torch.float64, device=device)
    area = torch.zeros(n * units, dtype=torch.float64, device=device)
    two = torch.arange(2, device=device)
    row_source, row_pixels, row_weights = (t.to(device) for t in (rows.source, rows.pixels, rows.weights))
    col_source, col_pixels, col_weights = (t.to(device) for t in (cols.source, cols.pixels, cols.weights))
    step = max(1, _CHUNK // (row_pixels.shape[1] * col_pixels.shape[1]))
    for start in range(0, len(image), step):
        i, k = image[start : start + step], unit[start : start + step]
        br, bc = band_r[start : start + step], band_c[start : start + step]
        r = (row_source[br, None] + two)[:, :, None]
        c = (col_source[bc, None] + two)[:, None, :]
        patch = padded[i[:, None, None], k[:, None, None], r, c].double()  # (M, 2, 2)
        values = row_weights[br] @ patch @ col_weights[bc].transpose(1, 2)
        inside = values > thresholds[k, None, None]  # NaN (padding) is never inside
        cell, a, b = inside.nonzero(as_tuple=True)
        pixel = row_pixels[br[cell], a] * width + col_pixels[bc[cell], b]
        owner = i[cell] * units + k[cell]
        area += torch.bincount(owner, minlength=n * units).double()
        under = flat_labels[i[cell], :, pixel]  # (E, L): every label layer under each pixel
        if under.numel() and (int(under.min()) < 0 or int(under.max()) >= concepts):
            raise kernels.label_error(concepts)
        per_image += torch.bincount((owner[:, None] * concepts + under).flatten(),
                                    minlength=n * units * concepts).double()
    return per_image.view(n, units, concepts), area.view(n, units)

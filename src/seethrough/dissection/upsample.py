"""Upsampling activation maps to the label resolution, as separable interpolation matrices.

Two modes:

* ``"bilinear"`` — a plain bilinear resize with half-pixel centres (NetDissect-Lite's
  ``imresize(..., mode="F")``, PyTorch ``interpolate(align_corners=False)``).
* ``"receptive_field"`` — the original Network Dissection: activation ``(i, j)`` sits at the
  centre of its receptive field, ``offset + (size - 1) / 2 + step * i`` in image pixels; labels
  are interpolated linearly between the centres and held constant beyond the outermost ones.
  The field map (offset, size, step) is the layer's true receptive field
  (``seethrough.represent.field_map``).

``upsample(acts, rows, cols)`` computes ``rows @ acts @ cols.T``.

Example:
    >>> import torch
    >>> m = bilinear_matrix(2, 4)
    >>> (m @ torch.tensor([0.0, 1.0], dtype=torch.float64)).tolist()
    [0.0, 0.25, 0.75, 1.0]
"""
from __future__ import annotations

import torch
from torch import nn

from seethrough.errors import InputError


def _linear_matrix(position: torch.Tensor, source: int) -> torch.Tensor:
    """Rows of linear-interpolation weights at fractional source indices (clamped to range)."""
    position = position.clamp(0, source - 1)
    low = position.floor().long().clamp(max=source - 1)
    high = (low + 1).clamp(max=source - 1)
    frac = position - low
    matrix = torch.zeros(len(position), source, dtype=torch.float64)
    rows = torch.arange(len(position))
    matrix.index_put_((rows, low), 1 - frac, accumulate=True)
    matrix.index_put_((rows, high), frac, accumulate=True)
    return matrix


def bilinear_matrix(source: int, target: int) -> torch.Tensor:
    """(target, source) weights of a half-pixel-centred linear resize."""
    position = (torch.arange(target, dtype=torch.float64) + 0.5) * source / target - 0.5
    return _linear_matrix(position, source)


def anchored_matrix(source: int, target: int, *, offset: float, step: float,
                    image: int) -> torch.Tensor:
    """(target, source) weights with activation ``i`` at image pixel ``offset + step * i``.

    ``offset`` is the centre of the first receptive field in pixel indices of an image of
    ``image`` pixels; label pixel ``q`` of ``target`` is at image position
    ``(q + 0.5) * image / target - 0.5``.
    """
    where = (torch.arange(target, dtype=torch.float64) + 0.5) * image / target - 0.5
    return _linear_matrix((where - offset) / step, source)


def upsample(acts: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Resize ``(..., h, w)`` maps to ``(..., H, W)`` with ``rows`` (H, h) and ``cols`` (W, w)."""
    return rows @ (acts @ cols.T)


def receptive_field(model: nn.Module, layer: str, input_size: tuple[int, int, int]
                    ) -> tuple[tuple[float, float], tuple[int, int], tuple[int, int]]:
    """Field map ``(centre of the first unit, size, step)`` per axis (y, x) of a layer's output,
    from ``seethrough.represent.field_map`` (the architecture through torch.fx, else the
    gradient support). A layer whose units see the whole image (squeeze-excitation) is anchored
    by its local geometry, the convolutions and poolings on its path; ``InputError`` when it has
    none."""
    from seethrough.represent.receptive import field_map

    fields = field_map(model, layer, input_size)
    if min(fields.step) < 1:
        raise InputError(f"the units of layer {layer!r} have no place in the image to anchor "
                         "them to; use upsample='bilinear'")
    centre = tuple(fields.start[a] + (fields.size[a] - 1) / 2 for a in range(2))
    return centre, tuple(fields.size), tuple(fields.step)

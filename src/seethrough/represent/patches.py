"""Maximally activating patches: per unit, the dataset images where it fires most, cropped to the
true receptive field of the position where it peaks.

One ``tally`` pass keeps, per unit, the ``k`` images with the largest maximum activation and
where that maximum is (``TopPositions``, mergeable across shards). The crops are then read back
from the dataset: the receptive field of the peak position (``receptive.field_map``), with the
part outside the image filled grey so that every crop shows the whole field at one scale and the
unit's centre stays in the middle.

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.Conv2d(4, 2, 3))
    >>> patches = top_patches(net, "2", torch.rand(6, 3, 16, 16), k=2, size=8, progress=False)
    >>> patches.crops.shape, patches.field_size
    (torch.Size([2, 2, 3, 8, 8]), (7, 7))
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from seethrough.data.concepts import unwrap
from seethrough.errors import InputError
from seethrough.represent.receptive import FieldMap, field_map
from seethrough.results import Result
from seethrough.tallying import Batch, default_collate, tally

#: the grey that fills the part of a receptive field outside the image
OUTSIDE = 0.5


class TopPositions:
    """A ``tally`` statistic: per unit, the ``k`` images with the largest maximum activation,
    with that maximum's position ``(row, col)`` in the layer's grid (first one on ties)."""

    def __init__(self, layer: str, k: int = 8, units: Sequence[int] | None = None):
        self.layer, self.k = layer, int(k)
        self.units = None if units is None else torch.as_tensor(list(units), dtype=torch.long)
        self.values = self.indices = self.positions = None

    def update(self, batch: Batch) -> None:
        acts = batch.acts[self.layer].detach()
        if acts.ndim != 4:
            raise InputError(f"layer {self.layer!r} has no spatial output {tuple(acts.shape)}: "
                             "choose a convolutional layer")
        if self.units is not None:
            acts = acts[:, self.units.to(acts.device)]
        width = acts.shape[-1]
        peak, where = acts.flatten(2).float().max(2)  # (N, U)
        positions = torch.stack([where // width, where % width], -1).cpu()  # (N, U, 2)
        self._keep(peak.cpu().T, batch.indices.cpu()[None].expand(peak.shape[1], -1),
                   positions.transpose(0, 1))

    def _keep(self, values, indices, positions) -> None:
        if self.values is not None:
            values = torch.cat([self.values, values], 1)
            indices = torch.cat([self.indices, indices], 1)
            positions = torch.cat([self.positions, positions], 1)
        order = values.argsort(dim=1, descending=True, stable=True)[:, : self.k]
        self.values, self.indices = values.gather(1, order), indices.gather(1, order)
        self.positions = positions.gather(1, order[..., None].expand(-1, -1, 2))

    def merge(self, other: TopPositions) -> TopPositions:
        if other.values is not None:
            self._keep(other.values, other.indices, other.positions)
        return self

    def state_dict(self) -> dict:
        return {"values": self.values, "indices": self.indices, "positions": self.positions}

    def load_state_dict(self, state: dict) -> None:
        self.values, self.indices = state["values"], state["indices"]
        self.positions = state["positions"]


def field_crop(image: torch.Tensor, fields: FieldMap, position: tuple[int, int],
               size: int) -> torch.Tensor:
    """The ``(3, size, size)`` crop of ``image`` under the receptive field of ``position``,
    grey outside the image; the whole image when the field is the whole image."""
    if fields.whole:
        crop = image
    else:
        (top, left), (height, width) = (
            tuple(s + p * t for s, p, t in zip(fields.start, position, fields.step)), fields.size)
        crop = torch.full((image.shape[0], height, width), OUTSIDE, dtype=image.dtype)
        y0, x0 = max(top, 0), max(left, 0)
        y1, x1 = min(top + height, image.shape[1]), min(left + width, image.shape[2])
        if y1 > y0 and x1 > x0:
            crop[:, y0 - top:y1 - top, x0 - left:x1 - left] = image[:, y0:y1, x0:x1]
    mode = "nearest" if max(crop.shape[1:]) < size else "bilinear"
    scaled = F.interpolate(crop[None].float(), size=(size, size), mode=mode,
                           **({"antialias": True, "align_corners": False}
                              if mode == "bilinear" else {}))
    return scaled[0].clamp(0, 1)


def read_images(data, indices: Sequence[int], collate=None) -> torch.Tensor:
    """The images of ``data`` at ``indices`` as one ``(M, C, H, W)`` tensor."""
    dataset = unwrap(data)
    collate = collate or default_collate
    return collate([dataset[int(i)] for i in indices])[0]


@dataclass
class Patches(Result):
    """Per unit of ``layer``, the top ``k`` dataset patches on the true receptive field.

    Attributes:
        units: ``(U,)`` unit indices; values, indices: ``(U, k)`` peak activation and dataset
            index; positions: ``(U, k, 2)`` peak ``(row, col)`` in the layer's grid;
            crops: ``(U, k, 3, S, S)``; field_size: the receptive field ``(height, width)`` in
            pixels (``None`` when it is the whole image).
    """

    layer: str
    units: torch.Tensor
    values: torch.Tensor
    indices: torch.Tensor
    positions: torch.Tensor
    crops: torch.Tensor
    field_size: tuple[int, int] | None

    def to_frame(self):
        """One row per (unit, rank): unit, rank, image, row, col, activation."""
        import pandas as pd

        rows = [{"layer": self.layer, "unit": int(unit), "rank": rank,
                 "image": int(self.indices[u, rank]), "row": int(self.positions[u, rank, 0]),
                 "col": int(self.positions[u, rank, 1]), "activation": float(self.values[u, rank])}
                for u, unit in enumerate(self.units) for rank in range(self.values.shape[1])]
        return pd.DataFrame(rows)

    def plot(self, units: int = 8):
        """The first ``units`` units as rows of their top patches."""
        from seethrough.represent.figures import patches_figure

        return patches_figure(self, units=units)

    def _settings(self) -> dict:
        return {"layer": self.layer, "field_size": self.field_size}

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {"units": self.units, "values": self.values, "indices": self.indices,
                "positions": self.positions, "crops": self.crops}

    @classmethod
    def _from_saved(cls, settings: dict, tensors: dict[str, torch.Tensor]) -> Patches:
        size = settings["field_size"]
        return cls(settings["layer"], tensors["units"], tensors["values"], tensors["indices"],
                   tensors["positions"], tensors["crops"], tuple(size) if size else None)

    def _title(self) -> str:
        return f"Top patches of {len(self.units)} units of {self.layer}"


def top_patches(model: nn.Module, layer: str, data, *, k: int = 8,
                units: Sequence[int] | None = None, size: int = 64, batch_size: int = 64,
                progress: bool | None = None, **tally_options) -> Patches:
    """The ``k`` maximally activating patches of each unit of ``layer`` over ``data``.

    Args:
        data: images ``(N, C, H, W)`` in [0, 1] or any dataset ``tally`` takes; all images
            must share one size (the receptive field is computed for it).
        units: the units to keep (default: all).
        size: side of each crop in pixels (fields smaller than this are enlarged with
            nearest-neighbour, larger ones shrunk with antialiasing).
    """
    if k < 1 or size < 1:
        raise InputError(f"k and size must be positive, not k={k}, size={size}")
    collate = tally_options.get("collate")
    stat = TopPositions(layer, k, units)
    tally(model, [layer], data, {"top": stat}, batch_size=batch_size, progress=progress,
          settings={"k": k, "units": None if units is None else list(units)},
          desc="top patches", **tally_options)
    count = stat.values.shape[0]
    chosen = (torch.arange(count) if units is None
              else torch.as_tensor(list(units), dtype=torch.long))
    needed = sorted(set(stat.indices.flatten().tolist()))
    images = dict(zip(needed, read_images(data, needed, collate)))
    first = images[needed[0]]
    fields = field_map(model, layer, input_size=tuple(first.shape))
    crops = torch.stack([
        torch.stack([field_crop(images[int(i)], fields, tuple(p.tolist()), size)
                     for i, p in zip(row_indices, row_positions)])
        for row_indices, row_positions in zip(stat.indices, stat.positions)])
    return Patches(layer, chosen, stat.values, stat.indices, stat.positions, crops,
                   None if fields.whole else tuple(fields.size))

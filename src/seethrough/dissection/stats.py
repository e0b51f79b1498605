"""Network Dissection's statistics in the shape ``tally`` feeds: one object per layer.

* ``LayerQuantiles``: the streaming quantile sketch of every unit (pass 1: thresholds);
* ``LayerTopImages``: per unit, the images with the largest maximum activation;
* ``LayerIoU``: intersection and union counts of the thresholded unit masks against the
  concept labels (pass 2).

Each creates its accumulator at the first batch (when the unit count is known), merges with
the same statistic of another shard, and saves and restores its state.

Example:
    >>> import torch
    >>> from seethrough.tallying import Batch
    >>> stat = LayerQuantiles("conv", bins=64)
    >>> stat.update(Batch(0, torch.arange(2), {"conv": torch.rand(2, 3, 4, 4)}))
    >>> stat.sketch.upper_quantile(0.5).shape
    torch.Size([3])
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import torch

from seethrough.dissection.counts import IoUCounter, TopImages
from seethrough.dissection.labels import Vocabulary
from seethrough.dissection.mask_counts import Bands, mask_counts
from seethrough.dissection.quantile import QuantileSketch
from seethrough.tallying import Batch


class _PerLayer(ABC):
    """Shared bookkeeping: the accumulator appears with the first batch (or a saved state)."""

    layer: str
    inner = None

    @abstractmethod
    def _make(self, units: int):
        """The accumulator for ``units`` units."""

    def merge(self, other: _PerLayer) -> _PerLayer:
        if other.inner is not None:
            if self.inner is None:
                self.inner = self._make(other.units)
                self.units = other.units
            self.inner.merge(other.inner)
        return self

    def state_dict(self) -> dict:
        return {} if self.inner is None else {"units": self.units, "state": self.inner.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if state:
            self.units = int(state["units"])
            self.inner = self._make(self.units)
            self.inner.load_state_dict(state["state"])

    def _ready(self, batch: Batch) -> torch.Tensor:
        acts = batch.acts[self.layer]
        if self.inner is None:
            self.units = acts.shape[1]
            self.inner = self._make(self.units)
        return acts


class LayerQuantiles(_PerLayer):
    """The quantile sketch of a layer's units (``QuantileSketch``)."""

    def __init__(self, layer: str, bins: int = 4096):
        self.layer, self.bins = layer, bins

    def _make(self, units: int) -> QuantileSketch:
        return QuantileSketch(units, self.bins)

    @property
    def sketch(self) -> QuantileSketch:
        return self.inner

    def update(self, batch: Batch) -> None:
        self._ready(batch)
        self.inner.update(batch.acts[self.layer])


class LayerTopImages(_PerLayer):
    """The ``k`` images with the largest maximum activation of each unit (``TopImages``)."""

    def __init__(self, layer: str, k: int = 8):
        self.layer, self.k = layer, k

    def _make(self, units: int) -> TopImages:
        return TopImages(units, self.k)

    def update(self, batch: Batch) -> None:
        acts = self._ready(batch)
        self.inner.update(acts.amax((2, 3)), batch.indices)


#: (activation size, label size) -> (row bands, column bands) of the upsampling
Geometry = Callable[[tuple[int, int], tuple[int, int]], tuple[Bands, Bands]]


class LayerIoU(_PerLayer):
    """IoU counts of a layer's units thresholded at ``thresholds`` (``IoUCounter``)."""

    def __init__(self, layer: str, vocabulary: Vocabulary, thresholds: torch.Tensor,
                 geometry: Geometry, device: torch.device | str = "cpu"):
        self.layer, self.vocabulary, self.thresholds = layer, vocabulary, thresholds
        self.geometry, self.device = geometry, torch.device(device)
        self.bands: tuple[Bands, Bands] | None = None
        self.label_size: tuple[int, int] | None = None

    def _make(self, units: int) -> IoUCounter:
        return IoUCounter(units, self.vocabulary)

    def update(self, batch: Batch) -> None:
        acts, labels = self._ready(batch), batch.labels
        if self.bands is None or self.label_size != labels.size:
            self.bands = self.geometry(tuple(acts.shape[-2:]), labels.size)
            self.label_size = labels.size
        counts = mask_counts(acts.to(self.device), self.thresholds, *self.bands, labels,
                             len(self.vocabulary))
        self.inner.add(*counts, labels)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "label_size": self.label_size}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.label_size = state.get("label_size")

"""A layer's features for every image of a dataset, in one ``tally`` pass.

``features(model, layer, data, pool="mean")`` gives an ``(N, D)`` float32 tensor: row ``i`` is
image ``i``'s activation at ``layer``, averaged (``"mean"``) or maximised (``"max"``) over
positions, or flattened whole (``"none"``, ``D = C * H * W`` in channel, row, column order).
Memory beyond the ``(N, D)`` answer is one batch of activations (``batch_size``).
``layer_features`` does several layers in the same pass; ``dataset_features`` also pools
each layer its own way and reads the samples' class labels; ``activation_grid`` gives one
image's channels at a layer.

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    >>> images = torch.rand(10, 3, 8, 8)
    >>> features(net, "1", images, batch_size=4, progress=False).shape
    torch.Size([10, 4])
    >>> features(net, "1", images, pool="none", progress=False).shape
    torch.Size([10, 144])
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from seethrough.data.concepts import unwrap
from seethrough.errors import InputError
from seethrough.tallying import Batch, tally

#: how positions are reduced
POOLS = ("mean", "max", "none")


def pooled(acts: torch.Tensor, pool: str) -> torch.Tensor:
    """``(N, D)`` rows of a ``(N, C, H, W)`` (or already flat ``(N, D)``) activation."""
    acts = acts.detach().float()
    if acts.ndim == 2:
        return acts
    if acts.ndim != 4:
        return acts.reshape(len(acts), -1)
    if pool == "mean":
        return acts.mean((2, 3))
    if pool == "max":
        return acts.amax((2, 3))
    return acts.contiguous().reshape(len(acts), -1)


class FeatureRows:
    """A ``tally`` statistic: the pooled rows of one layer, written at their dataset indices.

    Shards fill disjoint rows; ``merge`` copies the other's filled rows in. The state holds
    only the filled rows and their indices, so a shard sends back what it computed and no more.
    """

    def __init__(self, layer: str, length: int, pool: str = "mean"):
        self.layer, self.length, self.pool = layer, int(length), pool
        self.rows: torch.Tensor | None = None
        self.filled = torch.zeros(self.length, dtype=torch.bool)

    def update(self, batch: Batch) -> None:
        rows = pooled(batch.acts[self.layer], self.pool).cpu()
        if self.rows is None:
            self.rows = torch.zeros(self.length, rows.shape[1])
        self.rows[batch.indices] = rows
        self.filled[batch.indices] = True

    def merge(self, other: FeatureRows) -> FeatureRows:
        if other.rows is not None:
            if self.rows is None:
                self.rows = torch.zeros_like(other.rows)
            self.rows[other.filled] = other.rows[other.filled]
            self.filled |= other.filled
        return self

    def state_dict(self) -> dict:
        indices = self.filled.nonzero()[:, 0]
        return {"indices": indices, "rows": None if self.rows is None else self.rows[indices]}

    def load_state_dict(self, state: dict) -> None:
        self.filled = torch.zeros(self.length, dtype=torch.bool)
        self.filled[state["indices"]] = True
        self.rows = None
        if state["rows"] is not None:
            self.rows = torch.zeros(self.length, state["rows"].shape[1])
            self.rows[state["indices"]] = state["rows"]

    def result(self) -> torch.Tensor:
        """The ``(N, D)`` rows; an error if some images were not seen (an unmerged shard)."""
        if self.rows is None or not bool(self.filled.all()):
            missing = int((~self.filled).sum())
            raise InputError(f"{missing} of {self.length} images have no features yet: merge "
                             "every shard (tallying.merge_all) before reading them")
        return self.rows


class LabelRows:
    """A ``tally`` statistic: the ``label`` of every sample (-1 where there is none)."""

    def __init__(self, length: int):
        self.labels = torch.full((length,), -1, dtype=torch.long)

    def update(self, batch: Batch) -> None:
        labels = batch.labels.get("label") if isinstance(batch.labels, dict) else None
        if labels is not None:
            self.labels[batch.indices] = torch.as_tensor(labels).long().cpu()

    def merge(self, other: LabelRows) -> LabelRows:
        known = other.labels >= 0
        self.labels[known] = other.labels[known]
        return self

    def state_dict(self) -> dict:  # the known labels only: a shard sends back its own
        indices = (self.labels >= 0).nonzero()[:, 0]
        return {"length": len(self.labels), "indices": indices, "labels": self.labels[indices]}

    def load_state_dict(self, state: dict) -> None:
        self.labels = torch.full((state["length"],), -1, dtype=torch.long)
        self.labels[state["indices"]] = state["labels"]


def dataset_features(model: nn.Module, pools: dict[str, str], data, *, batch_size: int = 32,
                     progress: bool | None = None, **tally_options
                     ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """``({key: (N, D)}, labels (N,))`` from one pass: ``pools`` maps a key (a layer name, with
    any suffix after a space, e.g. ``"layer4 (mean)"``) to its pooling; labels are the samples'
    ``label`` (-1 where they have none)."""
    if not pools:
        raise InputError("name at least one layer (seethrough.layers(model) lists them)")
    for pool in pools.values():
        if pool not in POOLS:
            raise InputError(f"pool must be one of {', '.join(POOLS)}, not {pool!r}")
    length = len(unwrap(data))
    stats: dict = {key: FeatureRows(key.split(" ")[0], length, pool) for key, pool in pools.items()}
    labels = LabelRows(length)
    layers = sorted({stat.layer for stat in stats.values()})
    tally(model, layers, data, {**stats, " labels": labels}, batch_size=batch_size,
          progress=progress, settings={"pools": sorted(pools.items())}, desc="features",
          **tally_options)
    return {key: stats[key].result() for key in pools}, labels.labels


def activation_grid(model: nn.Module, layer: str, image: torch.Tensor) -> torch.Tensor:
    """One image's ``(C, h, w)`` activation at ``layer`` (channels unsorted; the figure orders
    them, ``figures.activation_grid_figure``)."""
    from seethrough.core import check_images, model_device, run_scope
    from seethrough.trace import capture

    check_images(image[None], model)
    with torch.no_grad(), run_scope(model):
        acts = capture(model, image[None].to(model_device(model)), layer)[layer].output
    if acts.ndim != 4:
        raise InputError(f"layer {layer!r} has no spatial output {tuple(acts.shape)}: choose a "
                         "convolutional layer")
    return acts[0].detach().float().cpu()


def layer_features(model: nn.Module, layers: Sequence[str], data, *, pool: str = "mean",
                   batch_size: int = 64, progress: bool | None = None,
                   **tally_options) -> dict[str, torch.Tensor]:
    """``{layer: (N, D) features}`` of several layers from one pass (see ``features``)."""
    found, _ = dataset_features(model, {layer: pool for layer in layers}, data,
                                batch_size=batch_size, progress=progress, **tally_options)
    return found


def features(model: nn.Module, layer: str, data, *, pool: str = "mean", batch_size: int = 64,
             progress: bool | None = None, **tally_options) -> torch.Tensor:
    """The ``(N, D)`` features of ``layer`` for every image of ``data``.

    Args:
        model: any ``nn.Module`` (left as it was).
        layer: a module name (``seethrough.layers(model)`` lists them).
        data: an ``(N, C, H, W)`` tensor of images in [0, 1], or any dataset ``tally`` takes
            (ConceptWorld, a Broden folder, an ``ImageSet``...).
        pool: ``"mean"`` (global average, the usual image descriptor), ``"max"`` or ``"none"``.
        tally_options: ``cache``, ``checkpoint``, ``shard``, ``collate``... as for ``tally``.
    """
    return layer_features(model, [layer], data, pool=pool, batch_size=batch_size,
                          progress=progress, **tally_options)[layer]

"""Edit a circuit and measure what it changes: ``edit(model, *changes)`` and ``effect``.

A change is one of:

* ``Off(layer, units)``: the units' outputs set to 0 (switched off);
* ``Clamp(layer, units, value)``: the units' outputs held at ``value`` (clamped on);
  both take ``where``, an ``(H, W)`` mask (at any resolution, e.g. the image's) to change the
  units only at the positions it covers (resized to the layer's grid: a position counts if
  any of its area is covered);
* ``SetWeights(parameter, index, value)``: a slice of a parameter replaced (``index`` as in
  ``tensor[index]``, e.g. ``(slice(None), [3, 5])`` for the inputs 3 and 5 of every unit);
* ``Direction(layer, vector, amount)``: a concept direction (a TCAV or Net2Vec vector over the
  layer's channels) added at every position, ``amount`` times its unit vector; with
  ``amount=None`` the direction is removed instead (each position projected onto its
  orthogonal complement).

``edit`` is a scope: on exit, also after an error, every parameter is put back byte for byte and
every hook removed. ``effect`` runs a model with and without changes on labelled data: per-class
accuracy and mean logit change, as a table and a figure.

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    ...                     nn.Linear(4, 2))
    >>> x = torch.rand(2, 3, 8, 8)
    >>> with edit(net, Off("1", [0, 1, 2, 3])):
    ...     torch.allclose(net(x), net[4].bias.expand(2, 2))
    True
    >>> before = net[0].weight.clone()
    >>> with edit(net, SetWeights("0.weight", (0,), 0.0)):
    ...     float(net[0].weight[0].detach().abs().sum())
    0.0
    >>> torch.equal(net[0].weight, before)
    True
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from seethrough.edits import channel_mask
from seethrough.errors import InputError
from seethrough.preserve import preserve
from seethrough.trace import LayerSpec, resolve_layer


@dataclass(frozen=True)
class Off:
    """Switch ``units`` (channels) of ``layer``'s output off: set them to 0 (only ``where`` a
    mask is true, if given)."""

    layer: LayerSpec
    units: Sequence[int]
    where: torch.Tensor | None = None


@dataclass(frozen=True)
class Clamp:
    """Hold ``units`` (channels) of ``layer``'s output at ``value`` (at every position, or
    ``where`` a mask is true)."""

    layer: LayerSpec
    units: Sequence[int]
    value: float
    where: torch.Tensor | None = None


@dataclass(frozen=True)
class SetWeights:
    """Replace ``parameter[index]`` (a dotted parameter name) with ``value``."""

    parameter: str
    index: object
    value: float | torch.Tensor


@dataclass(frozen=True)
class Direction:
    """Add ``amount`` times the unit vector of ``vector`` (one value per channel of ``layer``)
    at every position; ``amount=None`` removes the direction (projects it out)."""

    layer: LayerSpec
    vector: torch.Tensor | Sequence[float]
    amount: float | None = None


Change = Off | Clamp | SetWeights | Direction


def _activation_edit(change: Change, name: str):
    """``output -> new output`` for a change to a layer's output."""

    def apply(output: torch.Tensor) -> torch.Tensor:
        if output.dim() < 2:
            raise InputError(f"layer {name!r} has no channel dimension to edit")
        if isinstance(change, Direction):
            vector = torch.as_tensor(change.vector, dtype=output.dtype, device=output.device)
            if vector.numel() != output.shape[1]:
                raise InputError(f"the direction has {vector.numel()} values but {name!r} has "
                                 f"{output.shape[1]} channels")
            unit = (vector.reshape(-1) / vector.norm().clamp(min=1e-12)).view(
                1, -1, *([1] * (output.dim() - 2)))
            if change.amount is None:
                return output - (output * unit).sum(1, keepdim=True) * unit
            return output + change.amount * unit
        mask = channel_mask(output, change.units)
        if change.where is not None:
            mask = mask & _region(change.where, output, name)
        value = 0.0 if isinstance(change, Off) else float(change.value)
        return torch.where(mask, torch.as_tensor(value, dtype=output.dtype), output)

    return apply


def _region(where: torch.Tensor, output: torch.Tensor, name: str) -> torch.Tensor:
    """An ``(H, W)`` mask on ``output``'s grid, ``(1, 1, h, w)``: positions with any area covered."""
    import torch.nn.functional as F

    where = torch.as_tensor(where)
    if where.dim() != 2 or output.dim() != 4:
        raise InputError(f"where is an (H, W) mask for a layer with a (C, H, W) output; got a "
                         f"{tuple(where.shape)} mask for {name!r}'s {tuple(output.shape[1:])}")
    grid = F.interpolate(where[None, None].float().to(output.device), size=output.shape[-2:],
                         mode="area")
    return grid > 0


@contextmanager
def edit(model: nn.Module, *changes: Change) -> Iterator[nn.Module]:
    """Apply ``changes`` (see the module doc) inside the block; restore the model on exit."""
    parameters = dict(model.named_parameters())
    named = dict(model.named_modules())
    saved: dict[str, torch.Tensor] = {}
    with preserve(model):
        try:
            for change in changes:
                if isinstance(change, SetWeights):
                    if change.parameter not in parameters:
                        raise InputError(f"no parameter {change.parameter!r} in the model; "
                                         f"e.g. {', '.join(list(parameters)[:3])}")
                    parameter = parameters[change.parameter]
                    saved.setdefault(change.parameter, parameter.detach().clone())
                    with torch.no_grad():
                        parameter[change.index] = torch.as_tensor(change.value,
                                                                  dtype=parameter.dtype)
                elif isinstance(change, (Off, Clamp, Direction)):
                    name, module = resolve_layer(model, change.layer, named)
                    function = _activation_edit(change, name)
                    module.register_forward_hook(lambda _m, _i, out, f=function: f(out))
                else:
                    raise InputError(f"a change is Off, Clamp, SetWeights or Direction, not "
                                     f"{type(change).__name__}")
            yield model
        finally:
            with torch.no_grad():
                for name, value in saved.items():
                    parameters[name].copy_(value)


@dataclass
class Effect:
    """Per-class accuracy before and after a set of changes, and the mean logit change.

    Attributes:
        table: one row per class: ``class``, ``images``, ``accuracy_before``, ``accuracy_after``,
            ``logit_change`` (mean over that class's images of its own logit after minus before),
            and one row ``all``.
        logit_change: ``(classes, classes)`` mean change of every logit (columns) over the
            images of each true class (rows).
    """

    table: object
    logit_change: torch.Tensor
    title: str = ""

    def figure(self):
        """Accuracy per class before and after, beside each class's mean logit change."""
        import matplotlib.pyplot as plt
        import numpy as np

        rows = self.table[self.table["class"] != "all"]
        positions = np.arange(len(rows))
        figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.2))
        left.bar(positions - 0.2, rows["accuracy_before"], 0.4, label="before", color="#888")
        left.bar(positions + 0.2, rows["accuracy_after"], 0.4, label="after", color="#c33")
        left.set_xticks(positions, rows["class"], rotation=45, ha="right")
        left.set_ylim(0, 1)
        left.set_ylabel("accuracy")
        left.legend(frameon=False, fontsize=8)
        colours = ["#c33" if v < 0 else "#36c" for v in rows["logit_change"]]
        right.bar(positions, rows["logit_change"], color=colours)
        right.axhline(0, color="black", linewidth=0.6)
        right.set_xticks(positions, rows["class"], rotation=45, ha="right")
        right.set_ylabel("mean change of own logit")
        if self.title:
            figure.suptitle(self.title, fontsize=10)
        figure.tight_layout()
        return figure


def _batches(data, labels, batch_size: int):
    """``(images, labels)`` batches from tensors, or from a dataset of dicts / pairs."""
    if isinstance(data, torch.Tensor):
        if labels is None or len(labels) != len(data):
            raise InputError("effect on an image tensor needs labels, one per image")
        labels = torch.as_tensor(labels)
        for start in range(0, len(data), batch_size):
            yield data[start:start + batch_size], labels[start:start + batch_size]
        return
    from torch.utils.data import DataLoader

    from seethrough.tallying import default_collate

    for images, rest in DataLoader(data, batch_size=batch_size, collate_fn=default_collate):
        found = rest["label"] if isinstance(rest, dict) else rest
        if found is None:
            raise InputError("effect needs labels: a dataset of {'image', 'label'} dicts or "
                             "(image, label) pairs")
        yield images, torch.as_tensor(found)


def effect(model: nn.Module, changes: Change | Sequence[Change], data, labels=None, *,
           class_names: Sequence[str] | None = None, batch_size: int = 64,
           title: str = "") -> Effect:
    """Run ``model`` on ``data`` (images with ``labels``, or a labelled dataset) without and
    with ``changes``; return per-class accuracy and logit change (see ``Effect``)."""
    import pandas as pd

    from seethrough.core import model_device, run_scope

    changes = [changes] if not isinstance(changes, (list, tuple)) else list(changes)
    before, after, truth = [], [], []
    device = model_device(model)
    with torch.no_grad(), run_scope(model, mode="eval"):
        for images, found in _batches(data, labels, batch_size):
            images = images.to(device)
            before.append(model(images).float().cpu())
            with edit(model, *changes):
                after.append(model(images).float().cpu())
            truth.append(found.reshape(-1).long())
    before, after, truth = torch.cat(before), torch.cat(after), torch.cat(truth)
    classes = before.shape[1]
    names = list(class_names or getattr(model, "class_names", None) or range(classes))
    change = after - before
    rows, matrix = [], torch.zeros(classes, classes)
    for k in range(classes):
        mine = truth == k
        if not mine.any():
            continue
        matrix[k] = change[mine].mean(0)
        rows.append({"class": str(names[k]), "images": int(mine.sum()),
                     "accuracy_before": float((before[mine].argmax(1) == k).float().mean()),
                     "accuracy_after": float((after[mine].argmax(1) == k).float().mean()),
                     "logit_change": float(change[mine, k].mean())})
    rows.append({"class": "all", "images": len(truth),
                 "accuracy_before": float((before.argmax(1) == truth).float().mean()),
                 "accuracy_after": float((after.argmax(1) == truth).float().mean()),
                 "logit_change": float(change.gather(1, truth[:, None]).mean())})
    return Effect(pd.DataFrame(rows).round(4), matrix, title)

"""What to explain or attack: a class per image, ``"predicted"``, a scalar function of the
output, or a unit of an inner layer.

A ``Target`` turns a model run into one score per image. Class indices read the logit (or,
for the methods that use probabilities, the softmax probability); ``"predicted"`` takes the
class the model predicts on the clean image; a callable ``output -> (N,) tensor`` works for any
model (multi-output, segmentation, detection) and is applied to whatever the model returns;
``unit(layer, channel)`` reads a channel of an inner layer (its mean over space, or its value at
one position), so that e.g. guided backprop shows what part of an image a neuron responds to.
A unit target reads its layer while ``attached(model)`` holds a hook there; every method that
takes a target attaches it for you.

Example:
    >>> import torch
    >>> Target.of([2, 0], 2).scores(torch.tensor([[0.0, 1.0, 5.0], [3.0, 1.0, 0.0]])).tolist()
    [5.0, 3.0]
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from seethrough.errors import InputError


@dataclass(frozen=True)
class Unit:
    """A channel of an inner layer as a target: ``unit("features.6", 12)``."""

    layer: str | nn.Module
    channel: int
    position: tuple[int, int] | None = None

    def score(self, activation: torch.Tensor) -> torch.Tensor:
        """(N,) the channel's mean over space, or its value at ``position``."""
        if activation.dim() < 2 or not -activation.shape[1] <= self.channel < activation.shape[1]:
            raise InputError(f"unit target: channel {self.channel} is out of range for layer output "
                             f"{tuple(activation.shape)}")
        values = activation[:, self.channel]
        if self.position is None:
            return values.flatten(1).mean(1) if values.dim() > 1 else values
        if values.dim() != 3:
            raise InputError(f"unit target: a position needs an (N, C, H, W) layer output, got "
                             f"{tuple(activation.shape)}")
        row, col = self.position
        if not (0 <= row < values.shape[1] and 0 <= col < values.shape[2]):
            raise InputError(f"unit target: position {self.position} is outside the layer's "
                             f"{values.shape[1]}x{values.shape[2]} grid")
        return values[:, row, col]


def unit(layer: str | nn.Module, channel: int, *, position: tuple[int, int] | None = None) -> Unit:
    """Target a unit of an inner layer: its channel's mean activation (or one position).

    Example:
        >>> import torch
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True))
        >>> goal = Target.of(unit("0", 2), 1)
        >>> with goal.attached(net):
        ...     output = net(torch.rand(1, 3, 8, 8))
        ...     goal.scores(output).shape
        torch.Size([1])
    """
    if not isinstance(channel, int) or isinstance(channel, bool):
        raise InputError(f"a unit's channel is an int, not {channel!r}")
    return Unit(layer, channel, None if position is None else tuple(position))


TargetSpec = int | list | tuple | torch.Tensor | str | Unit | Callable[..., torch.Tensor]


def describe(output) -> str:
    """A short description of a model output's structure, for error messages."""
    if isinstance(output, torch.Tensor):
        return f"a tensor of shape {tuple(output.shape)}"
    if isinstance(output, dict):
        return f"a dict with keys {list(output)}"
    if isinstance(output, (tuple, list)):
        return f"a {type(output).__name__} of {len(output)} items"
    return f"a {type(output).__name__}"


class Target:
    """Scores per image from a model output; build one with ``Target.of(spec, count)``."""

    def __init__(self, count: int, *, classes: torch.Tensor | None = None, function=None,
                 unit: Unit | None = None, seen: dict | None = None):
        self.count = count
        self.function = function
        self.unit = unit
        #: class per image; -1 where "predicted" is not resolved yet
        self.classes = classes
        #: the unit's layer output of the latest forward pass (shared with ``take``n targets)
        self._seen = {} if seen is None else seen

    @property
    def is_class(self) -> bool:
        """True for class indices (and ``"predicted"``), False for a callable or a unit."""
        return self.classes is not None

    @contextmanager
    def attached(self, model: nn.Module) -> Iterator[Target]:
        """Hold a hook on a unit target's layer while the block runs (nothing for other targets).

        The hook keeps the layer's own output and hands a copy on to the network, so an in-place
        op after the layer cannot change what is scored.
        """
        if self.unit is None:
            yield self
            return
        from seethrough.trace import resolve_layer

        name, module = resolve_layer(model, self.unit.layer)

        def keep(module, inputs, output):
            if not isinstance(output, torch.Tensor):
                raise InputError(f"unit target: layer {name!r} returns {type(output).__name__}, "
                                 "not a tensor")
            self._seen["output"] = output
            return output.clone()

        handle = module.register_forward_hook(keep)
        try:
            yield self
        finally:
            handle.remove()
            self._seen.clear()

    @classmethod
    def of(cls, spec: TargetSpec | Target, count: int) -> Target:
        """Validate a user's target for a batch of ``count`` images."""
        if isinstance(spec, Target):
            if spec.count != count:
                raise InputError(f"target is for {spec.count} images, the batch has {count}")
            return spec
        if isinstance(spec, str):
            if spec != "predicted":
                raise InputError(
                    f"target {spec!r} is not understood: give class indices, \"predicted\", or a "
                    "function output -> (N,) scores"
                )
            return cls(count, classes=torch.full((count,), -1, dtype=torch.long))
        if isinstance(spec, Unit):
            return cls(count, unit=spec)
        if callable(spec) and not isinstance(spec, torch.Tensor):
            return cls(count, function=spec)
        if isinstance(spec, bool) or spec is None:
            raise InputError(f"target must be class indices, \"predicted\", a callable or a "
                             f"unit(layer, channel), not {spec!r}")
        try:
            classes = torch.as_tensor(spec)
        except (TypeError, ValueError, RuntimeError) as error:
            raise InputError(f"target {spec!r} is not a class index or a list of them") from error
        if classes.is_floating_point() or classes.is_complex() or classes.dtype == torch.bool:
            raise InputError(f"target class indices must be integers, not {classes.dtype}")
        if classes.dim() == 0:
            classes = classes.expand(count)
        if classes.dim() != 1 or classes.shape[0] != count:
            raise InputError(
                f"target has {classes.numel()} class indices for {count} images: give one per "
                "image, or a single int for all"
            )
        if (classes < 0).any():
            raise InputError(f"target class indices must be >= 0; got {classes.tolist()}")
        return cls(count, classes=classes.long().clone())

    @property
    def known(self) -> bool:
        """True when every image's target is fixed (no pending ``"predicted"``)."""
        return not self.is_class or bool((self.classes >= 0).all())

    def take(self, rows: torch.Tensor) -> Target:
        """The target of the images ``rows`` (for perturbed copies of the images)."""
        if not self.is_class:
            return Target(len(rows), function=self.function, unit=self.unit, seen=self._seen)
        return Target(len(rows), classes=self.classes[rows.cpu()])

    def scores(
        self, output, rows: slice | torch.Tensor | None = None, *, clean: bool = False,
        probabilities: bool = False,
    ) -> torch.Tensor:
        """One score per row of ``output``; ``rows`` says which image each row belongs to.

        Args:
            output: what the model returned for the rows.
            rows: image index per row (a slice or index tensor); ``None`` = all images in order.
            clean: the output is of the unperturbed images, so it may settle ``"predicted"``.
            probabilities: read softmax probabilities instead of logits (class targets only; a
                callable's or a unit's value is used as it is).
        """
        if self.unit is not None:
            if "output" not in self._seen:
                raise InputError("a unit target reads its layer only inside `target.attached(model)`"
                                 " (the methods do this for you)")
            return self._check(self.unit.score(self._seen["output"]), self._count(rows))
        if self.function is not None:
            return self._check(self.function(output), self._count(rows))
        if not isinstance(output, torch.Tensor):
            raise InputError(
                f"the model returns {describe(output)}, not one tensor of class scores: pass a "
                "callable target that picks one score per image, e.g. "
                "target=lambda out: out[0][:, 3]  or  target=lambda out: out['out'][:, 3].mean((1, 2))"
            )
        if output.dim() != 2:
            raise InputError(
                f"the model returns {describe(output)}; class index targets need (N, classes) "
                "scores: pass a callable target output -> (N,) scores, e.g. "
                "target=lambda out: out[:, 3].mean((1, 2)) for a segmentation map"
            )
        index = slice(None) if rows is None else rows
        if isinstance(index, torch.Tensor):
            index = index.cpu()
        classes = self.classes[index]
        if classes.shape[0] != output.shape[0]:
            raise InputError(f"{classes.shape[0]} targets for {output.shape[0]} model outputs")
        if (classes < 0).any():
            if not clean:
                raise RuntimeError("'predicted' must be resolved on clean images first")
            predicted = output.detach().argmax(1).cpu()
            classes = torch.where(classes < 0, predicted, classes)
            self.classes[index] = classes
        if int(classes.max()) >= output.shape[1]:
            raise InputError(
                f"target class {int(classes.max())} is out of range: the model has "
                f"{output.shape[1]} classes (0..{output.shape[1] - 1})"
            )
        if probabilities:
            output = output.softmax(1)
        return output.gather(1, classes.to(output.device)[:, None]).squeeze(1)

    def _count(self, rows) -> int:
        if rows is None:
            return self.count
        if isinstance(rows, slice):
            return len(range(*rows.indices(self.count)))
        return len(rows)

    @staticmethod
    def _check(value, count: int) -> torch.Tensor:
        if not isinstance(value, torch.Tensor) or value.shape != (count,):
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise InputError(
                f"a target must give one score per image, a tensor of shape "
                f"({count},); got {shape}"
            )
        return value

    def resolve(self, model: nn.Module, images: torch.Tensor, batch_size: int) -> None:
        """Settle ``"predicted"`` with no-grad passes over the clean images (if still pending)."""
        from seethrough.core.batching import chunks

        if self.known:
            return
        with torch.no_grad():
            for part in chunks(len(images), batch_size):
                self.scores(model(images[part]), part, clean=True)

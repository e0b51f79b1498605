"""What to explain: a class per image, ``"predicted"``, or any scalar function of the output.

A ``Target`` turns a model output into one score per image. Class indices read the logit (or,
for the methods that use probabilities, the softmax probability); ``"predicted"`` takes the
class the model predicts on the clean image; a callable ``output -> (N,) tensor`` works for any
model (multi-output, segmentation, detection) and is applied to whatever the model returns.

Example:
    >>> import torch
    >>> Target.of([2, 0], 2).scores(torch.tensor([[0.0, 1.0, 5.0], [3.0, 1.0, 0.0]])).tolist()
    [5.0, 3.0]
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from seethrough.errors import InputError

TargetSpec = int | list | tuple | torch.Tensor | str | Callable[..., torch.Tensor]


def check_images(images, model: nn.Module | None = None) -> torch.Tensor:
    """Return ``images`` as an (N, C, H, W) float tensor on the model's device, or raise."""
    if not isinstance(images, torch.Tensor):
        raise InputError(f"images must be a torch.Tensor (N, C, H, W), not {type(images).__name__}")
    if images.dim() != 4:
        hint = " (add a batch dimension: images[None])" if images.dim() == 3 else ""
        raise InputError(f"images must have shape (N, C, H, W); got {tuple(images.shape)}{hint}")
    if not images.is_floating_point():
        raise InputError(
            f"images must be floating point in [0, 1], not {images.dtype}: use images.float() / 255"
        )
    if images.shape[0] == 0:
        raise InputError("images is an empty batch")
    bad = (~torch.isfinite(images)).sum().item()
    if bad:
        raise InputError(f"images contain {bad} NaN or infinite values; clean them first")
    if model is not None:
        parameter = next(model.parameters(), None)
        if parameter is not None and parameter.device != images.device:
            images = images.to(parameter.device)
    return images


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

    def __init__(self, count: int, *, classes: torch.Tensor | None = None, function=None):
        self.count = count
        self.function = function
        #: class per image; -1 where "predicted" is not resolved yet
        self.classes = classes

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
        if callable(spec) and not isinstance(spec, torch.Tensor):
            return cls(count, function=spec)
        if isinstance(spec, bool) or spec is None:
            raise InputError(f"target must be class indices, \"predicted\" or a callable, not {spec!r}")
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
        return self.function is not None or bool((self.classes >= 0).all())

    def take(self, rows: torch.Tensor) -> Target:
        """The target of the images ``rows`` (for perturbed copies of the images)."""
        if self.function is not None:
            return Target(len(rows), function=self.function)
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
                callable's value is used as it is).
        """
        if self.function is not None:
            return self._call(output, self._count(rows))
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

    def _call(self, output, count: int) -> torch.Tensor:
        value = self.function(output)
        if not isinstance(value, torch.Tensor) or value.shape != (count,):
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise InputError(
                f"a target function must return one score per image, a tensor of shape "
                f"({count},); got {shape}"
            )
        return value

    def resolve(self, model: nn.Module, images: torch.Tensor, batch_size: int) -> None:
        """Settle ``"predicted"`` with no-grad passes over the clean images (if still pending)."""
        from seethrough.attribution.chunks import chunks

        if self.known:
            return
        with torch.no_grad():
            for part in chunks(len(images), batch_size):
                self.scores(model(images[part]), part, clean=True)

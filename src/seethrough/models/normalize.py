"""The normalization a model expects, as its first module, so every method works on [0, 1] images.

``resolve_normalization`` reads the ``normalize=`` argument of ``load_model``: ``"imagenet"``,
``None`` (or ``"none"``: images go to the network as they are) or a ``(mean, std)`` pair.

Example:
    >>> import torch
    >>> Normalize([0.5, 0.5, 0.5], [0.25, 0.25, 0.25])(torch.ones(1, 3, 1, 1)).flatten().tolist()
    [2.0, 2.0, 2.0]
    >>> resolve_normalization("imagenet") == (IMAGENET_MEAN, IMAGENET_STD), resolve_normalization(None)
    (True, None)
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from seethrough.errors import InputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel; mean and std are buffers (saved, moved with the model)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        mean = ", ".join(f"{v:.3f}" for v in self.mean.flatten().tolist())
        std = ", ".join(f"{v:.3f}" for v in self.std.flatten().tolist())
        return f"mean=({mean}), std=({std})"


class NoNormalization(nn.Identity):
    """The ``normalize`` slot of a model that takes its images as they are (identity).

    ``load_model(module)`` without ``normalize=`` puts this in front, so the network sees exactly
    the [0, 1] pixels it is given and layer names stay ``net.<name>``.
    """

    def extra_repr(self) -> str:
        return "none"


def resolve_normalization(normalize, channels: int | None = None):
    """``(mean, std)`` tuples of floats for ``"imagenet"`` or a pair, ``None`` for none; else raise.

    ``channels``, when given, is the number of colour channels the pair must cover.
    """
    if normalize is None or (isinstance(normalize, str) and normalize.lower() == "none"):
        return None
    if isinstance(normalize, str):
        if normalize.lower() == "imagenet":
            return IMAGENET_MEAN, IMAGENET_STD
        raise InputError(f"normalize must be 'imagenet', None or a (mean, std) pair, not {normalize!r}")
    try:
        mean, std = normalize
        mean = tuple(float(v) for v in torch.as_tensor(mean, dtype=torch.float64).flatten().tolist())
        std = tuple(float(v) for v in torch.as_tensor(std, dtype=torch.float64).flatten().tolist())
    except (TypeError, ValueError, RuntimeError):
        raise InputError(f"normalize must be 'imagenet', None or a (mean, std) pair of per-channel "
                         f"numbers, not {normalize!r}") from None
    bad = (not mean or len(mean) != len(std)
           or not all(math.isfinite(v) for v in mean + std) or min(std) <= 0)
    if bad or (channels is not None and len(mean) != channels):
        need = f"{channels} " if channels is not None else ""
        raise InputError(f"normalize=(mean, std) needs {need}finite means and as many positive stds "
                         f"(one per channel), got mean={mean}, std={std}")
    return mean, std


def describe_normalization(mean_std) -> str | dict:
    """What a model card records: ``"none"``, ``"imagenet"`` or ``{"mean": [...], "std": [...]}``."""
    if mean_std is None:
        return "none"
    mean, std = (tuple(float(v) for v in values) for values in mean_std)
    if mean == IMAGENET_MEAN and std == IMAGENET_STD:
        return "imagenet"
    return {"mean": list(mean), "std": list(std)}

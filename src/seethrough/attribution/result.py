"""The result of an attribution method: raw maps at input resolution, plus what produced them.

Example:
    >>> import torch
    >>> result = Attribution(torch.tensor([[[[-2.0, 1.0]]]]), method="saliency")
    >>> result.normalized().flatten().tolist()
    [-1.0, 0.5]
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from seethrough.core.targets import Target
from seethrough.errors import InputError


@dataclass
class Attribution:
    """Maps of where the evidence for a target is, one per image.

    Attributes:
        maps: ``(N, 1, H, W)`` at input resolution, raw values with their sign (not normalized).
        raw: the method's own map before reduction, when it has one: the per-RGB-channel
            gradient ``(N, C, H, W)``, the layer-resolution CAM ``(N, 1, h, w)``, the occlusion
            grid ``(N, 1, rows, cols)``, the masks per area ``(N, A, H, W)``; else ``None``.
        method: registry name of the method.
        target: class index per image (``"predicted"`` resolved), or ``None`` for a callable.
        options: every option the method ran with, defaults included (``layer`` resolved).
        goal: the ``core.Target`` explained (scores of a callable or unit target, for
            ``evaluate``).
    """

    maps: torch.Tensor
    raw: torch.Tensor | None = None
    method: str = ""
    target: torch.Tensor | None = None
    options: dict = field(default_factory=dict)
    goal: Target | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return self.maps.shape[0]

    def normalized(self, mode: str = "max_abs") -> torch.Tensor:
        """Per-image scaling for display; the stored maps stay raw.

        Args:
            mode: ``"max_abs"`` divides by the largest absolute value (sign kept, range
                [-1, 1]); ``"min_max"`` maps each image's range to [0, 1]; ``"positive"``
                keeps the positive part and divides by its maximum ([0, 1]).
        """
        maps = self.maps.detach()
        flat = maps.flatten(1)
        if mode == "max_abs":
            scale = flat.abs().amax(1)
            return maps / scale.clamp(min=torch.finfo(maps.dtype).tiny).view(-1, 1, 1, 1)
        if mode == "min_max":
            low, high = flat.amin(1).view(-1, 1, 1, 1), flat.amax(1).view(-1, 1, 1, 1)
            return (maps - low) / (high - low).clamp(min=torch.finfo(maps.dtype).tiny)
        if mode == "positive":
            positive = maps.clamp(min=0)
            scale = positive.flatten(1).amax(1).view(-1, 1, 1, 1)
            return positive / scale.clamp(min=torch.finfo(maps.dtype).tiny)
        raise InputError(f"unknown normalization {mode!r}; choose max_abs, min_max or positive")

    def to_numpy(self):
        """The maps as a float numpy array of shape ``(N, H, W)`` (on the CPU)."""
        return self.maps.detach().squeeze(1).cpu().numpy()

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
from seethrough.results import Result


@dataclass
class Attribution(Result):
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

    def to_frame(self):
        """One row per image: ``image``, ``target`` (when known), ``method``, map statistics."""
        import pandas as pd

        flat = self.maps.detach().float().flatten(1).cpu()
        frame = pd.DataFrame({"image": range(len(flat))})
        if self.target is not None:
            frame["target"] = self.target.detach().cpu().flatten().tolist()
        frame["method"] = self.method
        frame["min"] = flat.amin(1).tolist() if flat.shape[1] else float("nan")
        frame["max"] = flat.amax(1).tolist() if flat.shape[1] else float("nan")
        frame["mean"] = flat.mean(1).tolist()
        frame["mean_abs"] = flat.abs().mean(1).tolist()
        return frame

    def plot(self):
        """The maps as heatmaps (scaled by their largest absolute value), at most 8 images."""
        from seethrough.results import image_row_figure

        maps = self.normalized("max_abs")[:8].squeeze(1).cpu().float().numpy()
        targets = self.target.flatten().tolist() if self.target is not None else [None] * len(maps)
        titles = [f"image {i}" + (f", class {t}" if t is not None else "")
                  for i, t in zip(range(len(maps)), targets)]
        return image_row_figure(list(maps), titles, cmap="bwr", vmin=-1, vmax=1)

    # -- the Result protocol: ``goal`` (may hold a callable) is not saved, it loads as None ----
    def _settings(self) -> dict:
        return {"method": self.method, "options": self.options}

    def _tensors(self) -> dict[str, torch.Tensor]:
        tensors = {"maps": self.maps}
        if self.raw is not None:
            tensors["raw"] = self.raw
        if self.target is not None:
            tensors["target"] = self.target
        return tensors

    @classmethod
    def _from_saved(cls, settings: dict, tensors: dict[str, torch.Tensor]) -> Attribution:
        return cls(tensors["maps"], tensors.get("raw"), settings.get("method", ""),
                   tensors.get("target"), dict(settings.get("options", {})))

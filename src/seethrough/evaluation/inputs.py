"""Check and shape what the scores take: images, maps (or an ``Attribution``), masks, targets.

Every score works on batches: images ``(N, C, H, W)``, maps ``(N, 1, h, w)`` or ``(N, h, w)``
(resized to ``H x W`` bilinearly when the sizes differ), masks ``(N, H, W)`` bool.

Example:
    >>> import torch
    >>> as_maps(torch.rand(2, 8, 8), size=(16, 16)).shape
    torch.Size([2, 16, 16])
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from seethrough.errors import InputError

Target = int | Sequence[int] | torch.Tensor | str


def as_images(images: torch.Tensor) -> torch.Tensor:
    """A float batch ``(N, C, H, W)``; one image ``(C, H, W)`` becomes a batch of one."""
    if not isinstance(images, torch.Tensor):
        raise InputError(f"images must be a tensor (N, C, H, W), not {type(images).__name__}")
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dim() != 4:
        raise InputError(f"images must have shape (N, C, H, W), got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise InputError("images must be floating point in [0, 1]; divide uint8 images by 255")
    return images


def as_maps(maps, *, size: tuple[int, int], count: int | None = None) -> torch.Tensor:
    """Maps as ``(N, H, W)`` float at ``size``; accepts an ``Attribution`` (its ``.maps``)."""
    maps = getattr(maps, "maps", maps)
    if not isinstance(maps, torch.Tensor):
        raise InputError(f"maps must be a tensor (N, 1, H, W) or an Attribution, not {type(maps).__name__}")
    if maps.dim() == 4:
        if maps.shape[1] != 1:
            raise InputError(
                f"maps must have one channel (N, 1, H, W), got {tuple(maps.shape)}; sum or take "
                "the norm over channels first"
            )
        maps = maps[:, 0]
    if maps.dim() == 2:
        maps = maps.unsqueeze(0)
    if maps.dim() != 3:
        raise InputError(f"maps must have shape (N, 1, H, W) or (N, H, W), got {tuple(maps.shape)}")
    if count is not None and maps.shape[0] != count:
        raise InputError(f"{maps.shape[0]} maps for {count} images: give one map per image")
    maps = maps.detach().float()
    if not torch.isfinite(maps).all():
        raise InputError("maps contain NaN or infinite values")
    if tuple(maps.shape[-2:]) != tuple(size):
        maps = F.interpolate(maps.unsqueeze(1), size=size, mode="bilinear", align_corners=False)[:, 0]
    return maps


def as_masks(masks, *, size: tuple[int, int], count: int) -> torch.Tensor:
    """Ground-truth masks as bool ``(N, H, W)``; a list of ``(H, W)`` masks is stacked."""
    if isinstance(masks, (list, tuple)):
        masks = torch.stack([torch.as_tensor(m) for m in masks])
    if not isinstance(masks, torch.Tensor):
        raise InputError(f"masks must be a tensor (N, H, W) or a list of (H, W), not {type(masks).__name__}")
    if masks.dim() == 4 and masks.shape[1] == 1:
        masks = masks[:, 0]
    if masks.dim() == 2:
        masks = masks.unsqueeze(0)
    if masks.dim() != 3 or masks.shape[0] != count or tuple(masks.shape[-2:]) != tuple(size):
        raise InputError(
            f"masks must have shape ({count}, {size[0]}, {size[1]}) to match the maps, "
            f"got {tuple(masks.shape)}"
        )
    return masks.bool()


def model_device(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def as_targets(model: nn.Module, images: torch.Tensor, target: Target) -> torch.Tensor:
    """Class indices ``(N,)`` long: an int, a sequence, a tensor, or ``"predicted"``."""
    count = images.shape[0]
    if isinstance(target, str):
        if target != "predicted":
            raise InputError(f"target must be a class index, a list of them, or 'predicted', not {target!r}")
        with torch.no_grad():
            return model(images.to(model_device(model))).argmax(1).cpu()
    if isinstance(target, torch.Tensor) and target.is_floating_point():
        raise InputError("target must hold integer class indices, not floats")
    try:
        targets = torch.as_tensor(target, dtype=torch.long).reshape(-1).cpu()
    except (TypeError, ValueError) as error:
        raise InputError(f"target must be a class index, a list of them, or 'predicted': {error}") from None
    if targets.numel() == 1:
        targets = targets.expand(count).clone()
    if targets.numel() != count:
        raise InputError(f"{targets.numel()} targets for {count} images: give one per image or one for all")
    return targets

"""The one input check: images ``(N, C, H, W)`` in [0, 1] with the channels the model expects,
latents ``(N, D)`` for generators, and the maps and masks that scores compare. Each failure is
one line that names the fix.

Example:
    >>> import torch
    >>> check_images(torch.rand(2, 3, 8, 8)).shape
    torch.Size([2, 3, 8, 8])
    >>> check_images(torch.full((2, 3, 8, 8), 200.0))
    Traceback (most recent call last):
    ...
    seethrough.errors.InputError: images must be pixels in [0, 1], found values up to 200.0: these look like 0-255 pixels, divide by 255
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seethrough.core.device import model_device
from seethrough.errors import InputError

#: how far outside [0, 1] a pixel may stray (interpolation and float rounding)
RANGE_TOLERANCE = 1e-3


def expected_channels(model: nn.Module) -> int | None:
    """The colour channels a model takes: its ``input_size[0]``, else its first ``Conv2d``'s."""
    size = getattr(model, "input_size", None)
    if size:
        return int(size[0])
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return module.in_channels
    return None


def _check_range(images: torch.Tensor, name: str) -> None:
    low, high = float(images.min()), float(images.max())
    if low >= -RANGE_TOLERANCE and high <= 1 + RANGE_TOLERANCE:
        return
    if low >= 0 and high > 1.5:
        hint = "these look like 0-255 pixels, divide by 255"
    else:
        hint = ("these look normalized: pass pixels in [0, 1] and put the normalization in the "
                "model (seethrough.load_model(model, normalize=...))")
    shown = f"up to {high:.1f}" if low >= 0 else f"in [{low:.2f}, {high:.2f}]"
    raise InputError(f"{name} must be pixels in [0, 1], found values {shown}: {hint}")


def check_images(images, model: nn.Module | None = None, *, check_range: bool = True,
                 name: str = "images") -> torch.Tensor:
    """Return ``images`` as a float ``(N, C, H, W)`` tensor on the model's device, or raise.

    Checks: a tensor, 4-D, floating point, not empty, finite, in [0, 1] (``check_range``; the
    methods that feed perturbed copies to an inner method turn it off), and ``C`` equal to the
    model's channels (``expected_channels``) when a model is given.
    """
    if not isinstance(images, torch.Tensor):
        raise InputError(f"{name} must be a torch.Tensor (N, C, H, W), not {type(images).__name__}")
    if images.dim() != 4:
        hint = f" (add a batch dimension: {name}[None])" if images.dim() == 3 else ""
        raise InputError(f"{name} must have shape (N, C, H, W); got {tuple(images.shape)}{hint}")
    if not images.is_floating_point():
        raise InputError(
            f"{name} must be floating point in [0, 1], not {images.dtype}: use {name}.float() / 255"
        )
    if images.shape[0] == 0:
        raise InputError(f"{name} is an empty batch")
    bad = int((~torch.isfinite(images)).sum())
    if bad:
        raise InputError(f"{name} contain {bad} NaN or infinite values; clean them first")
    if check_range:
        _check_range(images, name)
    if model is not None:
        channels = expected_channels(model)
        if channels is not None and images.shape[1] != channels:
            hint = (f": repeat the grey channel, {name}.expand(-1, 3, -1, -1)"
                    if images.shape[1] == 1 and channels == 3 else
                    f": drop the alpha channel, {name}[:, :3]" if images.shape[1] == 4 and channels == 3
                    else "")
            raise InputError(f"{name} have {images.shape[1]} channels, the model takes "
                             f"{channels}{hint}")
        device = model_device(model)
        if images.device != device:
            images = images.to(device)
    return images


def check_latents(latents, dim: int | None = None, *, name: str = "latents") -> torch.Tensor:
    """Return ``latents`` as a float ``(N, D)`` tensor (``D == dim`` when given), or raise.

    Example:
        >>> check_latents(torch.randn(4, 8), 8).shape
        torch.Size([4, 8])
    """
    if not isinstance(latents, torch.Tensor):
        raise InputError(f"{name} must be a torch.Tensor (N, D), not {type(latents).__name__}")
    if latents.dim() != 2:
        hint = f" (add a batch dimension: {name}[None])" if latents.dim() == 1 else ""
        raise InputError(f"{name} must have shape (N, D); got {tuple(latents.shape)}{hint}")
    if not latents.is_floating_point():
        raise InputError(f"{name} must be floating point, not {latents.dtype}")
    if latents.shape[0] == 0:
        raise InputError(f"{name} is an empty batch")
    if dim is not None and latents.shape[1] != dim:
        raise InputError(f"{name} have {latents.shape[1]} dimensions, the generator takes {dim}")
    if not torch.isfinite(latents).all():
        raise InputError(f"{name} contain NaN or infinite values")
    return latents


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

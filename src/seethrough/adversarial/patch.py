"""A universal adversarial patch (Brown et al. 2017): one small image that, pasted anywhere on
any image, makes the model predict a chosen class (the lecture's adversarial T-shirt).

The patch is trained by expectation over transformations as in the paper: at every step each
training image gets the patch at a random place (and, with ``rotate=True``, a random quarter
turn), and Adam raises the mean log-probability of the target class. Success is measured on
held-out images at random places, among the images whose true class is not the target.

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    >>> found = universal_patch(net, torch.rand(8, 3, 16, 16), target=2, size=4, steps=3)
    >>> found.patch.shape
    torch.Size([3, 4, 4])
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from seethrough.core import check_images, model_device, run_scope
from seethrough.errors import InputError


@dataclass
class Patch:
    """A trained patch ``(3, size, size)`` for ``target``, with its training log-probabilities."""

    patch: torch.Tensor
    target: int
    history: list[float]


def paste(images: torch.Tensor, patch: torch.Tensor, generator: torch.Generator,
          rotate: bool = False) -> torch.Tensor:
    """``images`` with ``patch`` pasted at a random place in each (differentiable in ``patch``)."""
    out = images.clone()
    size = patch.shape[-1]
    height, width = images.shape[-2:]
    tops = torch.randint(0, height - size + 1, (len(images),), generator=generator)
    lefts = torch.randint(0, width - size + 1, (len(images),), generator=generator)
    turns = (torch.randint(0, 4, (len(images),), generator=generator) if rotate
             else torch.zeros(len(images), dtype=torch.long))
    for index, (top, left, turn) in enumerate(zip(tops.tolist(), lefts.tolist(), turns.tolist())):
        out[index, :, top:top + size, left:left + size] = torch.rot90(patch, turn, (1, 2))
    return out


def universal_patch(model: nn.Module, images: torch.Tensor, target: int, *, size: int,
                    steps: int = 200, batch_size: int = 32, lr: float = 0.05,
                    rotate: bool = True, seed: int = 0) -> Patch:
    """Train a ``size`` x ``size`` patch on ``images`` that turns predictions to ``target``."""
    check_images(images, model)
    if not 0 < size <= min(images.shape[-2:]):
        raise InputError(f"patch size must be from 1 to {min(images.shape[-2:])} px, not {size}")
    generator = torch.Generator().manual_seed(seed)
    device = model_device(model)
    parameter = torch.rand(3, size, size, generator=generator).to(device).requires_grad_()
    optimizer = torch.optim.Adam([parameter], lr=lr)
    history = []
    with run_scope(model):
        for _ in range(steps):
            batch = images[torch.randint(0, len(images), (batch_size,), generator=generator)]
            patched = paste(batch.to(device), parameter.clamp(0, 1), generator, rotate)
            log_p = F.log_softmax(model(patched), dim=1)[:, target].mean()
            optimizer.zero_grad()
            (-log_p).backward()
            optimizer.step()
            history.append(log_p.item())
    return Patch(parameter.detach().clamp(0, 1).cpu(), int(target), history)


def patch_success(model: nn.Module, patch: Patch, images: torch.Tensor, labels: torch.Tensor, *,
                  placements: int = 4, seed: int = 1, rotate: bool = True) -> float:
    """The share of (image, random place) pairs predicted as the patch's target, over images
    whose true class is not the target."""
    keep = torch.as_tensor(labels) != patch.target
    if not keep.any():
        raise InputError("every image is already of the target class: nothing to fool")
    generator = torch.Generator().manual_seed(seed)
    hits = []
    with torch.no_grad(), run_scope(model):
        for _ in range(placements):
            patched = paste(images[keep], patch.patch, generator, rotate)
            hits.append(model(patched.to(model_device(model))).argmax(1).cpu() == patch.target)
    return float(torch.cat(hits).float().mean())


def patch_sizes(model: nn.Module, train: torch.Tensor, test: torch.Tensor,
                test_labels: torch.Tensor, target: int, areas: Sequence[float], **options):
    """Success by patch size: one row per area (the patch's share of the image)."""
    import pandas as pd

    side = min(train.shape[-2:])
    rows = []
    for area in areas:
        size = max(1, round(side * area ** 0.5))
        patch = universal_patch(model, train, target, size=size, **options)
        rows.append({"area": area, "size": size, "target": target,
                     "success": patch_success(model, patch, test, test_labels)})
    return pd.DataFrame(rows)

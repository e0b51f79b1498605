"""Transformation robustness: random pad, jitter, scale and rotation before each step.

A feature visualization that survives small random moves is one the network really responds
to, not adversarial noise. The steps of a pipeline compose into **one affine map per batch item**,
applied with a single ``grid_sample`` call: every item gets its own random draw, gradients flow
back to the image, and the cost is one bilinear resampling whatever the number of steps.

The canvas follows Lucid: ``pad(p)`` grows it by ``2p`` (filled with ``value``, or reflected),
``jitter(d)`` is a random crop ``d`` pixels smaller; ``scale`` and ``rotate`` turn the content
about the centre inside a canvas of fixed size (Lucid resizes the canvas instead, which is not
possible when every item draws its own factor). The image is never upsampled: the model sees
``H + 2p - sum(d)`` pixels (236 for a 224 image with ``standard``), or a fixed ``size`` cut from
the centre of that canvas for models that accept only one input size (vision transformers).

Presets:
    ``standard`` (Lucid's ``transform.standard_transforms``, exactly as published): pad 12
        (constant 0.5), jitter 8, scale ``[1 + (i - 5) / 50 for i in range(11)]``, rotate by an
        angle drawn from ``list(range(-10, 11)) + 5 * [0]`` degrees (26 choices: 0 has 6 of them,
        so about 23 % of draws do not rotate), jitter 4.
    ``distill`` (Olah et al. 2017, "Feature Visualization", Distill): pad 16 (reflect), jitter 16,
        scale ``(1, 0.975, 1.025, 0.95, 1.05)``, rotate ``range(-5, 6)`` degrees, jitter 8.
    ``jitter``: jitter 4 only (for inversion and DeepDream-like use); ``none``: nothing.

Example:
    >>> t = Transforms.preset("standard")
    >>> t(torch.rand(2, 3, 64, 64), torch.Generator().manual_seed(0)).shape
    torch.Size([2, 3, 76, 76])
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from seethrough.core.registry import Registry
from seethrough.errors import InputError


@dataclass(frozen=True)
class Step:
    """One transformation: ``kind`` in pad / jitter / scale / rotate and its numbers."""

    kind: str
    amount: float = 0.0
    choices: tuple[float, ...] = ()
    mode: str = "constant"  # pad only: "constant" or "reflect"
    value: float = 0.5  # pad only


def pad(pixels: int, *, mode: str = "constant", value: float = 0.5) -> Step:
    """Grow the canvas by ``pixels`` on each side (constant ``value`` or ``mode="reflect"``)."""
    if mode not in ("constant", "reflect"):
        raise InputError(f"pad mode is 'constant' or 'reflect', not {mode!r}")
    return Step("pad", float(pixels), mode=mode, value=value)


def jitter(pixels: int) -> Step:
    """Random crop ``pixels`` smaller than the canvas (a random shift of 0..pixels)."""
    return Step("jitter", float(pixels))


def random_scale(factors: Sequence[float]) -> Step:
    """Zoom by a factor drawn from ``factors`` (per item)."""
    return Step("scale", choices=tuple(float(f) for f in factors))


def random_rotate(degrees: Sequence[float]) -> Step:
    """Rotate by an angle (degrees) drawn from ``degrees`` (per item)."""
    return Step("rotate", choices=tuple(float(a) for a in degrees))


#: Lucid's ``standard_transforms`` choices, verbatim (tensorflow/lucid, optvis/transform.py)
LUCID_SCALES: tuple[float, ...] = tuple(1 + (i - 5) / 50.0 for i in range(11))
LUCID_ANGLES: tuple[int, ...] = tuple(list(range(-10, 11)) + 5 * [0])

PRESETS: Registry[list[Step]] = Registry("transforms preset", {
    "standard": [pad(12, value=0.5), jitter(8), random_scale(LUCID_SCALES),
                 random_rotate(LUCID_ANGLES), jitter(4)],
    "distill": [pad(16, mode="reflect"), jitter(16), random_scale((1, 0.975, 1.025, 0.95, 1.05)),
                random_rotate(range(-5, 6)), jitter(8)],
    "jitter": [jitter(4)],
    "none": [],
})


class Transforms:
    """A pipeline of steps applied as one per-item affine resampling."""

    def __init__(self, steps: Sequence[Step]):
        self.steps = list(steps)
        pads = [s for s in self.steps if s.kind == "pad"]
        modes = {(s.mode, s.value) for s in pads}
        if len(modes) > 1:
            raise InputError("all pad steps of one pipeline must use the same mode and value")
        self.pad_mode, self.pad_value = next(iter(modes), ("constant", 0.5))

    @classmethod
    def preset(cls, name: str | Transforms | Sequence[Step] | None) -> Transforms:
        """``"standard"``, ``"distill"``, ``"jitter"``, ``"none"`` / None, a list of steps, or a pipeline."""
        if isinstance(name, Transforms):
            return name
        if name is None:
            return cls([])
        if isinstance(name, str):
            return cls(PRESETS.get(name))
        return cls(name)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        for step in self.steps:
            if step.kind == "pad":
                height, width = height + 2 * int(step.amount), width + 2 * int(step.amount)
            elif step.kind == "jitter":
                height, width = height - int(step.amount), width - int(step.amount)
        if height < 1 or width < 1:
            raise InputError("the jitter steps crop more than the whole image")
        return height, width

    def matrices(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """(n, 2, 3) maps from output-canvas pixel coordinates (origin at the centre) to source ones."""
        matrix = torch.eye(3).repeat(n, 1, 1)
        for step in self.steps:
            if step.kind == "jitter":
                d = int(step.amount)
                shift = torch.randint(0, d + 1, (n, 2), generator=generator).float() - d / 2
                move = torch.eye(3).repeat(n, 1, 1)
                move[:, :2, 2] = shift
                matrix = matrix @ move
            elif step.kind in ("scale", "rotate"):
                choices = torch.tensor(step.choices)
                picked = choices[torch.randint(0, len(choices), (n,), generator=generator)]
                move = torch.eye(3).repeat(n, 1, 1)
                if step.kind == "scale":
                    move[:, 0, 0] = move[:, 1, 1] = 1.0 / picked
                else:
                    angle = picked * math.pi / 180
                    cos, sin = angle.cos(), angle.sin()
                    move[:, 0, 0], move[:, 0, 1], move[:, 1, 0], move[:, 1, 1] = cos, -sin, sin, cos
                matrix = matrix @ move
        return matrix[:, :2]

    def __call__(self, images: torch.Tensor, generator: torch.Generator,
                 size: tuple[int, int] | None = None) -> torch.Tensor:
        """Transform a batch (N, C, H, W); a different random draw per item.

        ``size`` fixes the output canvas (centred) for models that need one input size (ViT).
        """
        n, _, h, w = images.shape
        if not self.steps and (size is None or tuple(size) == (h, w)):
            return images
        out_h, out_w = size or self.output_size(h, w)
        affine = self.matrices(n, generator).to(images)
        # pixel centres of the output canvas, origin at its centre
        ys = torch.arange(out_h, device=images.device, dtype=images.dtype) - (out_h - 1) / 2
        xs = torch.arange(out_w, device=images.device, dtype=images.dtype) - (out_w - 1) / 2
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        points = torch.stack([grid_x, grid_y, torch.ones_like(grid_x)], -1).view(1, -1, 3)
        source = points @ affine.transpose(1, 2)  # (n, out_h*out_w, 2) in source pixels (x, y)
        # to grid_sample's [-1, 1] with align_corners=False: pixel centre k -> (2k + 1) / size - 1
        scale = torch.tensor([2.0 / w, 2.0 / h], device=images.device, dtype=images.dtype)
        grid = (source * scale).view(n, out_h, out_w, 2)
        if self.pad_mode == "reflect":
            return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        shifted = images - self.pad_value
        return F.grid_sample(shifted, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + self.pad_value

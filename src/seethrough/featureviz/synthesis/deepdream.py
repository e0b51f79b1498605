"""DeepDream (Mordvintsev, Olah & Tyka 2015): amplify whatever a layer sees in a photo.

Gradient ascent on the image itself, on any objective (default: the layer's mean squared
activation), with the original recipe: steps normalized by the mean absolute gradient (step size
1.5/255), a random roll of up to 32 pixels before each step, and octaves (4 scales, factor 1.4)
from coarse to fine, carrying the detail added at each scale up to the next.

Constants of the original notebook (google/deepdream ``dream.ipynb``: ``make_step(step_size=1.5,
jitter=32)``, ``deepdream(iter_n=10, octave_n=4, octave_scale=1.4)``) and their values here:
``octaves=4`` (``OCTAVES``), ``octave_scale=1.4`` (``OCTAVE_SCALE``), ``steps=10`` per octave
(``STEPS``), ``step_size=1.5/255`` (``STEP_SIZE``: the notebook's 1.5 on 0..255 pixels, on our
[0, 1] images) times ``grad / mean(|grad|)`` (per image), ``jitter=32`` (``JITTER``: a roll by
``randint(-32, 33)`` pixels in each direction, undone after the step), pixels clipped to the valid
range after every step. The notebook's objective is ``L2`` of the layer (its gradient is the
activation itself); ``obj.layer`` is its mean square, whose gradient has the same direction.

Example:
    >>> import torchvision
    >>> net = torchvision.models.resnet18(num_classes=10)
    >>> deepdream(net, torch.rand(1, 3, 64, 64), layer="layer2", octaves=2, steps=2).shape
    torch.Size([1, 3, 64, 64])
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seethrough.errors import InputError
from seethrough.featureviz import objectives as obj
from seethrough.featureviz.render import Probe

OCTAVES = 4
OCTAVE_SCALE = 1.4
STEPS = 10
STEP_SIZE = 1.5 / 255
JITTER = 32


def deepdream(model: nn.Module, images: torch.Tensor, *, layer: str | None = None,
              objective: obj.Objective | None = None, octaves: int = OCTAVES,
              octave_scale: float = OCTAVE_SCALE, steps: int = STEPS, step_size: float = STEP_SIZE,
              jitter: int = JITTER, seed: int = 0,
              progress: bool | None = None) -> torch.Tensor:
    """Return ``images`` (N, 3, H, W in [0, 1]) dreamed by ``layer`` (or ``objective``)."""
    from tqdm.auto import tqdm

    if objective is None:
        if layer is None:
            raise InputError("deepdream needs layer= (e.g. 'features.10') or objective=")
        objective = obj.layer(layer)
    if images.dim() != 4 or images.shape[1] != 3:
        raise InputError(f"deepdream needs (N, 3, H, W) images in [0, 1], got {tuple(images.shape)}")
    generator = torch.Generator().manual_seed(seed)
    base = images.detach().clamp(0, 1)
    sizes = [base.shape[-2:]]
    for _ in range(octaves - 1):
        h, w = sizes[-1]
        sizes.append((max(8, round(h / octave_scale)), max(8, round(w / octave_scale))))
    pyramid = [F.interpolate(base, size=s, mode="bilinear", align_corners=False, antialias=True)
               for s in sizes]
    detail = torch.zeros_like(pyramid[-1])
    bar = tqdm(total=octaves * steps, desc="deepdream", disable=None if progress is None else not progress,
               leave=False)
    with Probe(model, objective) as probe:
        for octave in reversed(range(octaves)):
            base_octave = pyramid[octave]
            if detail.shape != base_octave.shape:
                detail = F.interpolate(detail, size=base_octave.shape[-2:], mode="bilinear",
                                       align_corners=False)
            image = (base_octave + detail).clamp(0, 1)
            for _ in range(steps):
                dy, dx = torch.randint(-jitter, jitter + 1, (2,), generator=generator).tolist()
                shifted = image.roll((dy, dx), (-2, -1)).requires_grad_(True)
                probe(shifted).sum().backward()
                grad = shifted.grad
                grad = grad / grad.abs().flatten(1).mean(1).clamp_min(1e-12).view(-1, 1, 1, 1)
                image = (shifted.detach() + step_size * grad).roll((-dy, -dx), (-2, -1)).clamp(0, 1)
                bar.update()
            detail = image - base_octave
    bar.close()
    return image.detach()

"""Yosinski et al. 2015 ("Understanding Neural Networks Through Deep Visualization"): regularizers
applied to the image between gradient steps, ``x <- r_theta(x + eta * grad)``.

Each regularizer is a callable ``(image, grad, step) -> image`` on ``(N, 3, H, W)`` images;
``grad`` is the gradient of the objective with respect to the image at the step's start and
``step`` counts from 0. ``Renderer(regularizers=[...])`` / ``visualize(regularizers=...)`` apply
them in order after each optimizer step. The paper's method is plain gradient ascent on the pixels:
``visualize(..., param="raw", optimizer=torch.optim.SGD, transforms="none",
regularizers=yosinski("3"), lr=...)``; ``param="raw"`` crops the pixels to [0, 1] after each step
as the authors' code crops to [0, 255]. The authors start from the mean image plus Gaussian noise
of sd 10 (on 0..255): ``param=RawPixelParam(shape, start="grey", sd=10 / 255)`` is close (grey
instead of the mean colour); ``param="raw"`` starts from uniform white noise.

The four regularizers, in the order of the authors' code (``optimize/gradient_optimizer.py`` of
yosinski/deep-visualization-toolbox):

* ``L2Decay(theta_decay)``: ``x <- (1 - theta_decay) x``.
* ``GaussianBlur(theta_b_width, theta_b_every)``: blur every ``theta_b_every`` steps (at steps 0,
  k, 2k, ...), sigma ``theta_b_width`` pixels (scipy's ``gaussian_filter``: kernel to 4 sigma).
* ``ClipSmallNorm(theta_n_pct)``: zero the pixels whose colour vector's norm is below the
  ``theta_n_pct`` percentile of the image's pixel norms.
* ``ClipSmallContribution(theta_c_pct)``: zero the pixels whose contribution
  ``|sum_c x_c * grad_c|`` (the first-order change of the objective were the pixel set to zero,
  summed over colours, then the absolute value, as the authors' code computes it) is below the
  ``theta_c_pct`` percentile.

"Zero" is the mean image in Caffe's mean-subtracted input; our images are in [0, 1], so every
regularizer works on ``x - center`` with ``center`` the ImageNet mean colour
``(0.485, 0.456, 0.406)`` by default (the decay pulls towards it, clipping sets pixels to it).
Percentiles are numpy's (linear interpolation, ``torch.quantile``), per image.

The paper's four hyperparameter combinations (Table 1, checked against the toolbox's README):

====  ===========  ============  ============  =========  =========
      theta_decay  theta_b_width theta_b_every theta_n_pct theta_c_pct
====  ===========  ============  ============  =========  =========
 1    0            0.5           4             50         0
 2    0.3          0             0             20         0
 3    0.0001       1.0           4             0          0
 4    0            0.5           4             0          90
====  ===========  ============  ============  =========  =========

The README's runs: 500, 750, 1000, 1000 iterations; learning rates on 0..255 pixels: constant 100
(combinations 2 and 3), else a "progress" policy (step so that the objective would rise by 2 under
a linear model, at most 100, resp. 1e8). Combination 3 made most of the paper's images. On [0, 1]
pixels the same update is ``lr / 255^2`` for a network fed 0..255 pixels; our models normalize
their [0, 1] input themselves, so the learning rate is yours to tune (``YOSINSKI_LR`` notes 100).

Example:
    >>> x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    >>> regs = yosinski("1")
    >>> [type(r).__name__ for r in regs]
    ['GaussianBlur', 'ClipSmallNorm']
    >>> out = x
    >>> for r in regs:
    ...     out = r(out, torch.zeros_like(x), 0)
    >>> out.shape
    torch.Size([1, 3, 8, 8])
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from seethrough.core.blur import gaussian_blur
from seethrough.core.registry import Registry

#: the ImageNet mean colour: "zero" of Caffe's mean-subtracted images, on our [0, 1] scale
IMAGENET_MEAN = (0.485, 0.456, 0.406)
#: the toolbox's constant learning rate (combinations 2 and 3), on 0..255 pixels
YOSINSKI_LR = 100.0

Center = float | Sequence[float]


def _center(center: Center, images: torch.Tensor) -> torch.Tensor:
    value = torch.as_tensor(center, dtype=images.dtype, device=images.device)
    return value.view(1, -1, 1, 1) if value.dim() == 1 else value


def _below_percentile(scores: torch.Tensor, percentile: float) -> torch.Tensor:
    """(N, H, W) -> mask of the entries strictly below the per-item percentile (numpy's)."""
    flat = scores.flatten(1).double()
    threshold = torch.quantile(flat, percentile / 100.0, dim=1, keepdim=True)
    return (flat < threshold).view_as(scores)


@dataclass(frozen=True)
class L2Decay:
    """``x <- center + (1 - decay) (x - center)`` (the paper's ``theta_decay``)."""

    decay: float
    center: Center = IMAGENET_MEAN

    def __call__(self, images: torch.Tensor, grad: torch.Tensor, step: int) -> torch.Tensor:
        c = _center(self.center, images)
        return c + (1.0 - self.decay) * (images - c)


@dataclass(frozen=True)
class GaussianBlur:
    """Blur with sigma ``width`` pixels every ``every`` steps (``theta_b_width``, ``theta_b_every``)."""

    width: float
    every: int

    def __call__(self, images: torch.Tensor, grad: torch.Tensor, step: int) -> torch.Tensor:
        if self.every <= 0 or self.width <= 0 or step % self.every:
            return images
        return gaussian_blur(images, self.width, radius=gaussian_radius(self.width))


def _clip_below(images: torch.Tensor, score: torch.Tensor, percentile: float,
                center: torch.Tensor) -> torch.Tensor:
    """``images`` with the pixels whose ``score`` (N, H, W) is below the percentile set to ``center``."""
    small = _below_percentile(score, percentile)
    return torch.where(small[:, None], center.expand_as(images), images)


@dataclass(frozen=True)
class ClipSmallNorm:
    """Set to ``center`` the pixels whose norm (over colours, of ``x - center``) is below the
    ``percentile`` (``theta_n_pct``)."""

    percentile: float
    center: Center = IMAGENET_MEAN

    def __call__(self, images: torch.Tensor, grad: torch.Tensor, step: int) -> torch.Tensor:
        if self.percentile <= 0:
            return images
        c = _center(self.center, images)
        return _clip_below(images, (images - c).norm(dim=1), self.percentile, c)


@dataclass(frozen=True)
class ClipSmallContribution:
    """Set to ``center`` the pixels whose contribution ``|sum_c (x - center)_c grad_c|`` is below
    the ``percentile`` (``theta_c_pct``)."""

    percentile: float
    center: Center = IMAGENET_MEAN

    def __call__(self, images: torch.Tensor, grad: torch.Tensor, step: int) -> torch.Tensor:
        if self.percentile <= 0:
            return images
        c = _center(self.center, images)
        return _clip_below(images, ((images - c) * grad).sum(1).abs(), self.percentile, c)


@dataclass(frozen=True)
class YosinskiSetting:
    """One row of the paper's Table 1 and the toolbox README's run for it."""

    decay: float
    blur_width: float
    blur_every: int
    norm_pct: float
    contribution_pct: float
    iterations: int

    def regularizers(self, center: Center = IMAGENET_MEAN) -> list:
        """The non-trivial regularizers of this row, in the authors' order."""
        found: list = []
        if self.decay > 0:
            found.append(L2Decay(self.decay, center))
        if self.blur_width > 0 and self.blur_every > 0:
            found.append(GaussianBlur(self.blur_width, self.blur_every))
        if self.norm_pct > 0:
            found.append(ClipSmallNorm(self.norm_pct, center))
        if self.contribution_pct > 0:
            found.append(ClipSmallContribution(self.contribution_pct, center))
        return found


#: Yosinski et al. 2015, Table 1 (rows "1" to "4"), with the README's iteration counts
YOSINSKI: Registry[YosinskiSetting] = Registry("Yosinski setting", {
    "1": YosinskiSetting(0.0, 0.5, 4, 50.0, 0.0, 500),
    "2": YosinskiSetting(0.3, 0.0, 0, 20.0, 0.0, 750),
    "3": YosinskiSetting(1e-4, 1.0, 4, 0.0, 0.0, 1000),
    "4": YosinskiSetting(0.0, 0.5, 4, 0.0, 90.0, 1000),
})


def yosinski(name: str = "3", *, center: Center = IMAGENET_MEAN) -> list:
    """The regularizers of row ``name`` ("1" ... "4") of Yosinski et al.'s Table 1."""
    return YOSINSKI.get(str(name)).regularizers(center)


def gaussian_radius(width: float) -> int:
    """The blur's kernel radius for sigma ``width``: scipy's ``int(4 sigma + 0.5)``."""
    return int(4.0 * width + 0.5) if width > 0 else 0


__all__ = [
    "IMAGENET_MEAN",
    "YOSINSKI",
    "YOSINSKI_LR",
    "ClipSmallContribution",
    "ClipSmallNorm",
    "GaussianBlur",
    "L2Decay",
    "YosinskiSetting",
    "gaussian_radius",
    "yosinski",
]

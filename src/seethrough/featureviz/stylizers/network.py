"""The image transformation network of Johnson, Alahi & Fei-Fei (2016), with a choice of norm.

Reflection padding everywhere; a 9x9 convolution, two stride-2 convolutions, residual blocks,
two upsample-then-convolve stages (nearest x2, then a 3x3 convolution: no transposed
convolutions, so no checkerboard) and a final 9x9 convolution to RGB squashed into [0, 1] by a
sigmoid (Johnson: a scaled tanh). Johnson et al. use widths 32-64-128 and 5 residual blocks;
the default here is 16-32-64 and 5 blocks, about 8x cheaper, so that training fits a laptop CPU.

Norms (``norm=``): ``"batch"`` (Johnson et al.), ``"instance"`` (Ulyanov, Vedaldi & Lempitsky
2016: normalize each image on its own) and ``"conditional"`` (Dumoulin, Shlens & Kudlur 2017:
instance norm with one learned scale and shift per style; styles mix by interpolating them).

Example:
    >>> net = TransformNet(channels=(8, 16, 32), blocks=1, norm="conditional", styles=2)
    >>> net(torch.rand(1, 3, 32, 32), torch.tensor([[0.5, 0.5]])).shape
    torch.Size([1, 3, 32, 32])
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from seethrough.errors import InputError

NORMS = ("instance", "batch", "conditional")


class ConditionalInstanceNorm(nn.Module):
    """Instance norm with one scale and one shift vector per style (Dumoulin et al. 2017).

    ``forward(x, weights)``: ``weights`` (N, styles) mixes the styles' scales and shifts (one-hot
    picks one style). ``scales[k]`` and ``shifts[k]`` are style ``k``'s only parameters.

    Example:
        >>> norm = ConditionalInstanceNorm(4, styles=3)
        >>> sum(p.numel() for p in (norm.scales[0], norm.shifts[0]))
        8
    """

    def __init__(self, channels: int, styles: int):
        super().__init__()
        self.channels = channels
        self.scales = nn.ParameterList(nn.Parameter(torch.ones(channels)) for _ in range(styles))
        self.shifts = nn.ParameterList(nn.Parameter(torch.zeros(channels)) for _ in range(styles))

    def add_style(self) -> tuple[nn.Parameter, nn.Parameter]:
        """Append a style initialised at the mean of the others; return its (scale, shift)."""
        scale = nn.Parameter(torch.stack(list(self.scales)).mean(0).detach().clone())
        shift = nn.Parameter(torch.stack(list(self.shifts)).mean(0).detach().clone())
        self.scales.append(scale)
        self.shifts.append(shift)
        return scale, shift

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        scale = weights @ torch.stack(list(self.scales))
        shift = weights @ torch.stack(list(self.shifts))
        return F.instance_norm(x, eps=1e-5) * scale[:, :, None, None] + shift[:, :, None, None]


class _Plain(nn.Module):
    """A norm that ignores the style weights (instance or batch norm)."""

    def __init__(self, norm: nn.Module):
        super().__init__()
        self.norm = norm

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


def make_norm(kind: str, channels: int, styles: int) -> nn.Module:
    if kind == "conditional":
        return ConditionalInstanceNorm(channels, styles)
    if kind == "instance":
        return _Plain(nn.InstanceNorm2d(channels, affine=True))
    return _Plain(nn.BatchNorm2d(channels))


class ConvLayer(nn.Module):
    """(nearest x2 upsampling), reflection padding, convolution, norm, ReLU."""

    def __init__(self, inputs: int, outputs: int, kernel: int, *, stride: int = 1,
                 upsample: bool = False, norm: str, styles: int, relu: bool = True):
        super().__init__()
        self.upsample, self.relu = upsample, relu
        self.pad = nn.ReflectionPad2d(kernel // 2)
        self.conv = nn.Conv2d(inputs, outputs, kernel, stride=stride)
        self.norm = make_norm(norm, outputs, styles)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = self.norm(self.conv(self.pad(x)), weights)
        return F.relu(x) if self.relu else x


class ResidualBlock(nn.Module):
    """conv-norm-ReLU-conv-norm plus the input (He et al. 2016, as in Johnson et al.)."""

    def __init__(self, channels: int, *, norm: str, styles: int):
        super().__init__()
        self.first = ConvLayer(channels, channels, 3, norm=norm, styles=styles)
        self.second = ConvLayer(channels, channels, 3, norm=norm, styles=styles, relu=False)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return x + self.second(self.first(x, weights), weights)


class TransformNet(nn.Module):
    """Johnson et al.'s transformation network: (N, 3, H, W) in [0, 1] to the same in [0, 1].

    Args:
        channels: widths of the three resolutions (Johnson: 32, 64, 128).
        blocks: residual blocks at a quarter resolution (Johnson: 5).
        norm: ``"instance"``, ``"batch"`` or ``"conditional"`` (``styles`` scale/shift sets).

    Sides that are not multiples of 4 are reflection-padded up to one and cropped back.

    Example:
        >>> TransformNet(channels=(4, 8, 8), blocks=1)(torch.rand(2, 3, 30, 34)).shape
        torch.Size([2, 3, 30, 34])
    """

    def __init__(self, *, channels: Sequence[int] = (16, 32, 64), blocks: int = 5,
                 norm: str = "instance", styles: int = 1):
        super().__init__()
        if norm not in NORMS:
            raise InputError(f"norm must be one of {', '.join(NORMS)}, not {norm!r}")
        if norm != "conditional" and styles != 1:
            raise InputError(f"{norm} norm learns one style; use norm='conditional' for "
                             f"{styles} styles")
        c1, c2, c3 = channels
        self.norm_kind, self.styles = norm, styles
        options = {"norm": norm, "styles": styles}
        self.layers = nn.ModuleList([
            ConvLayer(3, c1, 9, **options),
            ConvLayer(c1, c2, 3, stride=2, **options),
            ConvLayer(c2, c3, 3, stride=2, **options),
            *(ResidualBlock(c3, **options) for _ in range(blocks)),
            ConvLayer(c3, c2, 3, upsample=True, **options),
            ConvLayer(c2, c1, 3, upsample=True, **options),
        ])
        self.pad = nn.ReflectionPad2d(4)
        self.output = nn.Conv2d(c1, 3, 9)

    def norms(self) -> list[nn.Module]:
        """The normalization layers, in order."""
        return [m for m in self.modules() if isinstance(m, (ConditionalInstanceNorm, _Plain))]

    def forward(self, x: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise InputError(f"images must be (N, 3, H, W) in [0, 1], got {tuple(x.shape)}")
        height, width = x.shape[-2:]
        if min(height, width) < 8:
            raise InputError(f"images must be at least 8 x 8 pixels, got {height} x {width}")
        if weights is None:
            weights = torch.zeros(x.shape[0], self.styles, dtype=x.dtype, device=x.device)
            weights[:, 0] = 1
        bottom, right = -height % 4, -width % 4
        y = F.pad(x, (0, right, 0, bottom), mode="reflect") if bottom or right else x
        for layer in self.layers:
            y = layer(y, weights)
        y = torch.sigmoid(self.output(self.pad(y)))
        return y[..., :height, :width]

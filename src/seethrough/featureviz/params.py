"""How an image is made from the numbers the optimizer changes.

* ``pixel``: one number per pixel and colour.
* ``fourier``: the spectrum of each colour channel, scaled by ``1/f`` (Lucid's ``fft_image``:
  ``scale = 1 / max(f, 1/max(H, W))^decay_power``, initial sd 0.01, divided by 4), turned into
  pixels with ``torch.fft.irfft2(norm="ortho")``; gradient steps then change all frequencies at a
  similar rate, which removes the high-frequency noise of pixel optimization.
* Colour decorrelation (Lucid's ``_linear_decorrelate_color``): the optimizer works in a
  decorrelated colour space; a 3x3 square root of the colour covariance (normalized by its largest
  column norm) maps it back to RGB. The default is Lucid's ImageNet matrix
  ``[[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]]``; ``color_correlation_sqrt``
  estimates one from any images (e.g. ConceptWorld).
* A sigmoid maps the result into [0, 1] (Lucid's ``to_valid_rgb``).

Example:
    >>> param = ImageParam((2, 3, 32, 32), kind="fourier", seed=0)
    >>> image = param()
    >>> image.shape, bool(image.min() >= 0), bool(image.max() <= 1)
    (torch.Size([2, 3, 32, 32]), True, True)
"""
from __future__ import annotations

import torch

from seethrough.errors import InputError

#: Lucid's square root of ImageNet's colour covariance (columns: luminance and two chroma axes)
IMAGENET_COLOR_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
FOURIER_MAGIC = 4.0  # Lucid divides the inverse FFT by 4


def color_correlation_sqrt(images: torch.Tensor, *, method: str = "svd") -> torch.Tensor:
    """A 3x3 matrix ``S`` with ``S @ S.T`` = the pixel colour covariance of ``images``.

    ``method="svd"`` gives ``U diag(sqrt(s))`` (Lucid's form: first column = luminance);
    ``"cholesky"`` gives the lower-triangular factor.

    Example:
        >>> S = color_correlation_sqrt(torch.rand(4, 3, 16, 16))
        >>> S.shape
        torch.Size([3, 3])
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise InputError(f"color_correlation_sqrt needs (N, 3, H, W) images, got {tuple(images.shape)}")
    pixels = images.detach().double().permute(1, 0, 2, 3).reshape(3, -1)
    covariance = torch.cov(pixels)
    if method == "cholesky":
        return torch.linalg.cholesky(covariance + 1e-10 * torch.eye(3, dtype=covariance.dtype)).float()
    if method != "svd":
        raise InputError(f"method is 'svd' or 'cholesky', not {method!r}")
    u, s, _ = torch.linalg.svd(covariance)
    u = u * torch.where(u[0:1] < 0, -1.0, 1.0)  # make each column's first entry positive
    return (u * s.sqrt()).float()


def rfft2d_freqs(height: int, width: int) -> torch.Tensor:
    """Frequency magnitude of each entry of an ``rfft2`` spectrum of an H x W image."""
    fy = torch.fft.fftfreq(height)[:, None]
    fx = torch.fft.rfftfreq(width)[None, :]
    return (fx * fx + fy * fy).sqrt()


class ImageParam:
    """A batch of images as a function of optimizable tensors.

    Args:
        shape: ``(N, 3, H, W)``.
        kind: ``"fourier"`` (default of ``visualize``) or ``"pixel"``.
        decorrelate: optimize in a decorrelated colour space.
        color_sqrt: the 3x3 matrix for that (default Lucid's ImageNet one).
        sd: standard deviation of the random start (Lucid: 0.01).
        decay_power: exponent of the ``1/f`` scaling (Lucid: 1).
        seed: seed of the random start.
        device: where the tensors live.
    """

    def __init__(self, shape: tuple[int, int, int, int], *, kind: str = "fourier",
                 decorrelate: bool = True, color_sqrt: torch.Tensor | None = None, sd: float = 0.01,
                 decay_power: float = 1.0, seed: int = 0, device: torch.device | str = "cpu"):
        if kind not in ("fourier", "pixel"):
            raise InputError(f"param is 'fourier' or 'pixel', not {kind!r}")
        if len(shape) != 4 or shape[1] != 3:
            raise InputError(f"image shape is (N, 3, H, W), got {tuple(shape)}")
        self.shape = tuple(int(s) for s in shape)
        self.kind = kind
        self.decorrelate = decorrelate
        n, c, h, w = self.shape
        matrix = IMAGENET_COLOR_SQRT if color_sqrt is None else torch.as_tensor(color_sqrt, dtype=torch.float32)
        self.color = (matrix / matrix.norm(dim=0).max()).to(device)
        generator = torch.Generator().manual_seed(seed)
        if kind == "fourier":
            freqs = rfft2d_freqs(h, w)
            self.scale = (1.0 / freqs.clamp_min(1.0 / max(h, w)) ** decay_power).to(device)
            start = torch.randn((n, c) + tuple(freqs.shape) + (2,), generator=generator) * sd
        else:
            start = torch.randn(self.shape, generator=generator) * sd
        self.tensor = start.to(device).requires_grad_(True)

    def parameters(self) -> list[torch.Tensor]:
        return [self.tensor]

    def __call__(self) -> torch.Tensor:
        """The images, (N, 3, H, W) in [0, 1], differentiable in the parameters."""
        return torch.sigmoid(self._to_colour(self._raw()))

    def _raw(self) -> torch.Tensor:
        if self.kind == "pixel":
            return self.tensor
        spectrum = torch.view_as_complex(self.tensor) * self.scale
        return torch.fft.irfft2(spectrum, s=self.shape[-2:], norm="ortho") / FOURIER_MAGIC

    def _to_colour(self, raw: torch.Tensor) -> torch.Tensor:
        if not self.decorrelate:
            return raw
        return torch.einsum("ij,njhw->nihw", self.color, raw)

    @torch.no_grad()
    def set_image(self, images: torch.Tensor, *, eps: float = 1e-4) -> ImageParam:
        """Set the parameters so that ``self()`` returns ``images`` (clipped to [eps, 1-eps])."""
        if tuple(images.shape) != self.shape:
            raise InputError(f"image shape {tuple(images.shape)} differs from the parameter's {self.shape}")
        raw = torch.logit(images.to(self.tensor.device).clamp(eps, 1 - eps))
        if self.decorrelate:
            raw = torch.einsum("ij,njhw->nihw", torch.linalg.inv(self.color), raw)
        if self.kind == "fourier":
            spectrum = torch.fft.rfft2(raw * FOURIER_MAGIC, norm="ortho") / self.scale
            raw = torch.view_as_real(spectrum)
        self.tensor.copy_(raw)
        return self

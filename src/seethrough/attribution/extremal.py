"""Extremal perturbation (Fong, Patrick & Vedaldi 2019), as published and as TorchRay runs it.

"Understanding Deep Networks via Extremal Perturbations and Smooth Masks" (ICCV 2019) looks,
for a given area ``a``, for the smooth mask of that area that keeps the target's score highest
(or, deleted, drops it most). Its parts, each checked against TorchRay 1.0.0.2
(``torchray.attribution.extremal_perturbation``, the authors' reference code):

* ``SmoothMaxMask``: the smooth-max mask generator. One parameter in [0, 1] every ``step``
  pixels; each pixel takes a soft maximum (softmax weights, coldness 20) over the parameters
  of a square neighbourhood, each scaled by a flat-topped radial kernel
  ``exp(-2 max(0, d / sigma - 1/2)^2)``. The mask covers the image plus a margin of ``sigma``
  pixels (the "frame"), is clamped to [0, 1] and cropped to the image.
* ``blur_pyramid`` and ``perturb``: ``num_levels`` copies of the image blurred with Gaussians of
  ``sigma_l = max_blur * l / (num_levels - 1)`` (zero padding, radius ``ceil(4 sigma_l)``); a
  mask value ``m`` picks, per pixel, the linear interpolation between the two levels around
  ``(1 - m) (num_levels - 1)``: ``m = 1`` is the image, ``m = 0`` the strongest blur.
* the area constraint: ``||sort(M) - r_a||^2`` over the whole frame (``r_a``: zeros, then
  ``a H W`` ones; TorchRay: ``a`` of the frame), mean over pixels, with weight
  ``300 * 1.0035^t`` at iteration ``t``.

Example:
    >>> import torch, torchvision
    >>> model = torchvision.models.resnet18(num_classes=4).eval()
    >>> extremal_perturbation(model, torch.rand(1, 3, 64, 64), 0, iterations=3).raw.shape
    torch.Size([1, 1, 64, 64])
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from seethrough.attribution.layers import upsample
from seethrough.attribution.registry import register
from seethrough.attribution.result import Attribution
from seethrough.core import Target, gaussian_blur
from seethrough.core.batching import chunks
from seethrough.errors import InputError

#: softmax coldness of the smooth-max generator (TorchRay's ``MaskGenerator.coldness``)
COLDNESS = 20.0
VARIANTS = ("preserve", "delete", "dual")
PERTURBATIONS = ("blur", "fade")
GENERATORS = ("smooth_max", "bilinear")
REWARDS = ("simple", "contrastive")
AREA_OVER = ("image", "frame")
#: the pyramid's padding -> ``gaussian_blur``'s (``"constant"``: zeros, as TorchRay's imsmooth)
BLUR_PADDING = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate"}


class SmoothMaxMask:
    """The paper's smooth-max mask generator for images of ``size`` (H, W).

    ``grid`` is the parameter grid ``(ceil(H / step), ceil(W / step))``; parameter ``(i, j)``
    sits at image pixel ``(step i, step j)`` (shifted by ``sigma - round(sigma)``). A pixel
    looks at the parameters of the ``(2 r + 1)^2`` cells around its own ``step x step`` cell,
    ``r = 1 + ceil(sigma / step)`` (cells outside the grid count as 0), as TorchRay's
    ``MaskGenerator`` does, and takes ``sum_k v_k softmax(20 v)_k`` of their values ``v_k`` =
    parameter times kernel. ``frame`` is the mask's whole extent, the image plus a margin of
    about ``sigma`` pixels; the image starts at ``offset = round(sigma)`` in it.

    The kernel is computed in float32 in TorchRay's order of operations and the neighbours are
    reduced along the same axis, so the masks are the same to the bit: it matters, because at
    the start (all parameters 1) the mask is a periodic pattern of exactly tied values, and the
    order in which the area loss's sort breaks those ties decides which pixels go first (other
    tie-breaking changed masks of area 0.2 to r = 0.14 after 100 iterations). The gradient is
    written out (``_SmoothMax``): autograd's took up to twice the time.

    Example:
        >>> generator = SmoothMaxMask((32, 32), step=2, sigma=6.0)
        >>> mask = generator(torch.ones(1, 1, *generator.grid))
        >>> frame = generator(torch.ones(1, 1, *generator.grid), whole=True)
        >>> mask.shape, frame.shape[-2:] == generator.frame
        (torch.Size([1, 1, 32, 32]), True)
        >>> bool(mask.min() > 0.98)
        True
    """

    def __init__(self, size: tuple[int, int], step: int, sigma: float, *,
                 device: torch.device | str | None = None, dtype: torch.dtype = torch.float32):
        if isinstance(step, bool) or int(step) != step or step < 1:
            raise InputError(f"the mask step must be a positive integer (pixels), not {step!r}")
        if not sigma > 0:
            raise InputError(f"the mask sigma must be positive, not {sigma!r}")
        self.size = (int(size[0]), int(size[1]))
        self.step, self.sigma = int(step), float(sigma)
        self.grid = tuple(math.ceil(n / self.step) for n in self.size)
        self.offset = round(self.sigma)
        self.span = 2 * (1 + math.ceil(self.sigma / self.step)) + 1
        self.pad = 1 + math.ceil(2 * self.sigma / self.step)
        #: cells per axis: one per placement of the span x span neighbourhood on the padded grid
        self.cells = tuple(n + 2 * self.pad - self.span + 1 for n in self.grid)
        self.frame = tuple(self.step * c - self.step + 1 for c in self.cells)
        if any(f < self.offset + n for f, n in zip(self.frame, self.size)):
            raise InputError(f"mask sigma {sigma:g} is too small for step {step}: the mask frame "
                             f"{self.frame} does not cover the image (take sigma >= 3 step)")
        dy, dx = (self._offsets(f, device) for f in self.frame)
        distance = torch.sqrt(dy[:, None, :, None] ** 2 + dx[None, :, None, :] ** 2)
        kernel = torch.exp(-2 * (distance / self.sigma - 0.5).clamp(min=0) ** 2)
        #: (span^2, frame H, frame W) kernel weight of each neighbouring parameter
        self.kernel = kernel.permute(2, 3, 0, 1).reshape(-1, *self.frame).to(dtype).contiguous()
        #: the kernel zero-padded to whole cells, ``(span^2, cells H, step, cells W, step)``:
        #: ``neighbours`` multiplies it by each cell's parameters by broadcasting
        whole = self.kernel.new_zeros(len(self.kernel), *(self.step * c for c in self.cells))
        whole[:, :self.frame[0], :self.frame[1]] = self.kernel
        self._cell_kernel = whole.view(len(self.kernel), self.cells[0], self.step,
                                       self.cells[1], self.step)

    def _offsets(self, frame: int, device) -> torch.Tensor:
        """(frame, span) float32 offsets in pixels from each frame coordinate to the
        parameters of its neighbourhood (those outside the grid meet zero padding)."""
        u = torch.arange(frame, device=device)
        index = (u // self.step)[:, None] + torch.arange(self.span, device=device) - self.pad
        return u[:, None].float() - (self.sigma + self.step * index.float())

    def __call__(self, parameters: torch.Tensor, *, whole: bool = False) -> torch.Tensor:
        """``(K, 1, *grid)`` parameters -> ``(K, 1, H, W)`` mask in [0, 1]; ``whole``: the
        ``(K, 1, *frame)`` mask, margin included (``crop`` gives the image's part)."""
        frame = _SmoothMax.apply(parameters, self).clamp(0, 1)
        return frame if whole else self.crop(frame)

    def crop(self, frame: torch.Tensor) -> torch.Tensor:
        """The image's part of a whole-frame mask."""
        top = self.offset
        return frame[..., top:top + self.size[0], top:top + self.size[1]]

    def neighbours(self, parameters: torch.Tensor) -> torch.Tensor:
        """``(K, span^2, *frame)``: each pixel's neighbouring parameters times their kernel.

        A view of the whole cells' product: the kernel (zero-padded to whole cells) times each
        cell's parameters, broadcast over the cell's ``step x step`` pixels, in one pass (the
        products, and so the values, are those of the pixels first spelled out and then
        multiplied; spelling them out took as long again)."""
        count, span = len(parameters), self.span
        # F.unfold's im2col, for one channel, took 400 times as long as these strided views
        cells = F.pad(parameters[:, 0], (self.pad,) * 4).unfold(1, span, 1).unfold(2, span, 1)
        cells = cells.permute(0, 3, 4, 1, 2).reshape(count, span * span, self.cells[0], 1,
                                                     self.cells[1], 1)
        product = self._cell_kernel * cells
        return product.view(count, span * span, self.cells[0] * self.step,
                            self.cells[1] * self.step)[..., :self.frame[0], :self.frame[1]]

    def parameter_gradient(self, gradient: torch.Tensor) -> torch.Tensor:
        """``neighbours``' backward: ``(K, span^2, *frame)`` -> ``(K, 1, *grid)``.

        Each cell's ``step x step`` pixels are summed as ``sum((3, 5))`` sums them (each row of
        the cell summed, then the rows added in order: the same floats, to the bit), without
        its slow reduction over two strided dimensions."""
        count, step = len(gradient), self.step
        rows, cols = self.cells[0] * step, self.cells[1] * step
        pixels = gradient.new_empty(count, gradient.shape[1], rows, cols)
        pixels[..., self.frame[0]:, :] = 0
        pixels[..., :self.frame[0], self.frame[1]:] = 0
        torch.mul(gradient, self.kernel, out=pixels[..., :self.frame[0], :self.frame[1]])
        pixels = pixels.view(count, -1, self.cells[0], step, self.cells[1], step)
        if step == 1:
            cells = pixels[:, :, :, 0, :, 0]
        elif step == 2:  # the rows' sums a + b and c + d, added
            cells = ((pixels[:, :, :, 0, :, 0] + pixels[:, :, :, 0, :, 1])
                     + (pixels[:, :, :, 1, :, 0] + pixels[:, :, :, 1, :, 1]))
        else:
            cells = pixels[:, :, :, 0].sum(-1)
            for row in range(1, step):
                cells = cells + pixels[:, :, :, row].sum(-1)
        return F.fold(cells.flatten(2), self.grid, self.span, padding=self.pad)


class _SmoothMax(torch.autograd.Function):
    """``sum_k v_k softmax(c v)_k`` over each pixel's neighbours, whose derivative in ``v_k``
    is ``softmax(c v)_k (1 + c (v_k - out))``."""

    @staticmethod
    def forward(ctx, parameters, generator):
        values = generator.neighbours(parameters)
        weights = torch.softmax(COLDNESS * values, 1)
        out = (values * weights).sum(1, keepdim=True)
        ctx.save_for_backward(values, weights, out)
        ctx.generator = generator
        return out

    @staticmethod
    def backward(ctx, gradient):
        values, weights, out = ctx.saved_tensors
        local = (values - out).mul_(COLDNESS).add_(1).mul_(weights).mul_(gradient)
        return ctx.generator.parameter_gradient(local), None


class BilinearMask:
    """The fast generator: bilinear upsampling of the parameters, then a Gaussian blur of
    ``sigma`` (reflect padding). The mask is its own frame. Not clamped: the blur of values at
    the bounds can round to just outside [0, 1], and a clamp there would stop their gradients."""

    def __init__(self, size: tuple[int, int], step: float, sigma: float):
        self.size, self.frame, self.sigma = tuple(size), tuple(size), sigma
        self.grid = tuple(max(2, math.ceil(n / max(1.0, step))) for n in size)

    def __call__(self, parameters: torch.Tensor, *, whole: bool = False) -> torch.Tensor:
        return gaussian_blur(upsample(parameters, self.size), self.sigma)

    def crop(self, frame: torch.Tensor) -> torch.Tensor:
        return frame


def blur_pyramid(images: torch.Tensor, num_levels: int = 8, max_blur: float = 20.0,
                 kind: str = "blur", padding: str = "zeros") -> torch.Tensor:
    """``(N, L, C, H, W)`` increasingly perturbed copies of ``(N, C, H, W)`` images.

    Level ``l`` of ``L = num_levels`` is, for ``kind="blur"``, a Gaussian blur of sigma
    ``max_blur * l / (L - 1)`` with radius ``ceil(4 sigma)`` and ``padding`` ``"zeros"``
    (TorchRay's ``imsmooth``: the blur darkens towards the border), ``"reflect"`` (radius at
    most ``min(H, W) - 1``) or ``"replicate"``; for ``"fade"``, ``images * (1 - l / (L - 1))``.
    Level 0 is the image, level ``L - 1`` the strongest perturbation (TorchRay stores them in
    the opposite order).
    """
    if kind not in PERTURBATIONS:
        raise InputError(f"perturbation must be one of {', '.join(PERTURBATIONS)}, not {kind!r}")
    if isinstance(num_levels, bool) or not isinstance(num_levels, int) or num_levels < 2:
        raise InputError(f"num_levels must be an integer >= 2, not {num_levels!r}")
    if not max_blur > 0:
        raise InputError(f"max_blur must be positive, not {max_blur!r}")
    if padding not in BLUR_PADDING:
        raise InputError(f"blur_padding must be one of {', '.join(BLUR_PADDING)}, not {padding!r}")
    levels = []
    with torch.no_grad():
        for level in range(num_levels):
            strength = level / (num_levels - 1)
            if kind == "fade":
                levels.append(images * (1 - strength))
            else:
                sigma = max_blur * strength
                levels.append(gaussian_blur(images, sigma, radius=math.ceil(4 * sigma),
                                            padding=BLUR_PADDING[padding]))
    return torch.stack(levels, 1)


def perturb(pyramid: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The image a ``(N, 1, H, W)`` mask makes of a ``blur_pyramid``: per pixel, linear
    interpolation between levels at ``(1 - m) (L - 1)``; ``m = 1`` keeps the pixel.

    The level index is taken as TorchRay takes it (``floor(m (L - 1))``, counted from the
    strongest level), so the gradients agree at level boundaries too.
    """
    last = pyramid.shape[1] - 1
    position = mask * last
    below = position.detach().floor().clamp(0, last)
    fraction = position - below
    lower = (last - below).long()
    upper = (lower - 1).clamp(min=0)
    shape = (len(pyramid), 1, *pyramid.shape[2:])
    y0 = pyramid.gather(1, lower[:, None].expand(shape)).squeeze(1)
    y1 = pyramid.gather(1, upper[:, None].expand(shape)).squeeze(1)
    return y0 + fraction * (y1 - y0)


def _reward(target: Target, output, rows: torch.Tensor, kind: str) -> torch.Tensor:
    """The target's logit (``"simple"``), or its margin over the best other class
    (``"contrastive"``, class targets only)."""
    score = target.scores(output, rows)
    if kind == "simple":
        return score
    if not target.is_class:
        raise InputError("reward='contrastive' needs class targets (it compares the target's "
                         "logit with the other classes'), not a callable or a unit")
    if output.shape[1] < 2:
        raise InputError("reward='contrastive' needs a model with at least two classes")
    classes = target.classes[rows.cpu()].to(output.device)
    others = output.scatter(1, classes[:, None], float("-inf")).amax(1)
    return score - others


def _check(areas, variant, iterations, num_levels, perturbation, blur_padding, generator, reward,
           area_over):
    if variant not in VARIANTS:
        raise InputError(f"variant must be one of {', '.join(VARIANTS)}, not {variant!r}")
    for name, value, choices in (("perturbation", perturbation, PERTURBATIONS),
                                 ("blur_padding", blur_padding, tuple(BLUR_PADDING)),
                                 ("generator", generator, GENERATORS),
                                 ("reward", reward, REWARDS), ("area_over", area_over, AREA_OVER)):
        if value not in choices:
            raise InputError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
    if isinstance(areas, (int, float)) and not isinstance(areas, bool):
        areas = (areas,)
    areas = tuple(areas)
    if not areas or not all(isinstance(a, (int, float)) and 0 < a < 1 for a in areas):
        raise InputError(f"areas must be fractions in (0, 1), not {areas!r}")
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise InputError(f"iterations must be a positive integer, not {iterations!r}")
    if isinstance(num_levels, bool) or not isinstance(num_levels, int) or num_levels < 2:
        raise InputError(f"num_levels must be an integer >= 2, not {num_levels!r}")
    return tuple(float(a) for a in areas)


@register("extremal_perturbation")
def extremal_perturbation(
    model: nn.Module, images: torch.Tensor, target: Target, *, areas: tuple[float, ...] = (0.1,),
    variant: str = "preserve", iterations: int = 800, lr: float = 0.01, momentum: float = 0.9,
    regularization: float = 300.0, growth: float = 1.0035, step: int = 7, sigma: float = 21.0,
    max_blur: float = 20.0, num_levels: int = 8, perturbation: str = "blur",
    blur_padding: str = "zeros", generator: str = "smooth_max", reward: str = "simple",
    area_over: str = "image", start: float | None = None, jitter: bool = True,
    pixel_scale: float | None = None, batch_size: int = 32,
) -> Attribution:
    """Extremal perturbation (Fong, Patrick & Vedaldi 2019): the best smooth mask of each area.

    For each area ``a`` a mask ``M`` in [0, 1] of area ``a`` is learned that maximizes the
    reward of the perturbed image, ``variant``: ``"preserve"`` keeps ``M`` (the rest blurred)
    and rewards the target's score; ``"delete"`` blurs ``M`` and rewards a low score;
    ``"dual"`` runs both and rewards the difference. Loss: ``-reward + w_t ||sort(M) - r_a||^2``
    (mean over the pixels of the whole mask, margin included), ``w_t = regularization *
    growth^t``; SGD with momentum and dampening ``momentum``; the parameters are clamped to
    [0, 1] after each step; the mask returned is the one of the last forward pass. All areas
    of an image are optimized together (one row each, as TorchRay does), and rows of several
    images are batched (``batch_size`` rows per forward pass; the rows are independent, so run
    the model in eval mode). Deterministic: no random numbers are drawn.

    Defaults are TorchRay 1.0.0.2's ``extremal_perturbation`` (areas ``[0.1]``, 800
    iterations, ``num_levels=8``, ``step=7``, ``sigma=21``, ``jitter=True``, ``"preserve"``,
    ``"blur"``, ``simple_reward``) and the constants it hard-codes: SGD ``lr=0.01``, momentum
    0.9, ``regul_weight`` 300 growing by 1.0035 per iteration, ``Perturbation``'s
    ``max_blur=20`` with ``imsmooth``'s zero padding, masks started at 1. Where this differs:

    * ``area_over="image"`` (default): ``r_a`` has ``a * H * W`` ones, so a mask inside the
      image covers the fraction ``a`` of it, as the paper defines the area. TorchRay puts
      ``a * |frame|`` ones (frame = image plus a margin of ~``sigma`` px), so its masks cover
      about ``a * |frame| / (H W)`` of the image (0.13 for 0.1 at 224 px); ``"frame"`` does
      that. Either way the margin is sorted too: leaving it out makes it free area, and masks
      crowded to the image border (measured on ConceptNet).
    * Pixel sizes (``step``, ``sigma``, ``max_blur``) are TorchRay's at 224 px and scaled by
      ``pixel_scale`` (default ``min(H, W) / 224``; ``step`` rounded, at least 1). TorchRay
      uses them as given whatever the image size: ``pixel_scale=1``.
    * Jitter: TorchRay flips the perturbed image horizontally at even iterations (its doc
      says "randomly", its code alternates); so does this.
    * TorchRay explains one image and an int class; any ``Target`` works here (a callable's
      or a unit's value is the score); ``reward="contrastive"`` is TorchRay's
      ``contrastive_reward`` (the target logit minus the best other one; class targets only).

    Other options: ``perturbation="fade"`` fades to black (TorchRay's ``FADE_PERTURBATION``);
    ``blur_padding="reflect"`` or ``"replicate"`` instead of zeros (the zero-padded blur
    darkens towards the border); ``start``: the parameters' initial value (default 1, or 0.5
    for the bilinear generator).

    ``generator="bilinear"`` is the fast simplified version this toolkit had before:
    parameters upsampled bilinearly and blurred (``sigma``) instead of the smooth max, no
    margin, started at 0.5 (with this generator, started at 1 the ranking loss's tie-breaking
    placed the masks at the image edge). With ``num_levels=2, blur_padding="reflect"`` too it
    is that version (its single blur ``x * M + blur(x) * (1 - M)``), but for the blur's radius
    (4 sigma, was 3) and the mask returned (the last forward pass's, was one step later). It
    skips the smooth max's ``(2 r + 1)^2 = 81`` neighbours per pixel and the margin; how much
    that saves depends on the model.

    ``raw`` is the mask per area (N, A, H, W); ``maps`` their mean (areas summed as in the
    paper's figures, divided by their number).
    """
    areas = _check(areas, variant, iterations, num_levels, perturbation, blur_padding, generator,
                   reward, area_over)
    target.resolve(model, images, batch_size)
    scale = min(images.shape[-2:]) / 224 if pixel_scale is None else float(pixel_scale)
    if not scale > 0:
        raise InputError(f"pixel_scale must be positive, not {pixel_scale!r}")
    size = tuple(images.shape[-2:])
    if generator == "smooth_max":
        make = SmoothMaxMask(size, max(1, round(step * scale)), sigma * scale,
                             device=images.device, dtype=images.dtype)
        initial = 1.0
    else:
        make, initial = BilinearMask(size, step * scale, sigma * scale), 0.5
    initial = initial if start is None else float(start)
    if not 0 <= initial <= 1:
        raise InputError(f"start must be a mask value in [0, 1], not {start!r}")
    # the ranking loss sorts the whole mask, margin included (left out, the margin is free
    # area and masks crowd to the image's border); r_a has a * (frame or image) ones
    pixels, counted = make.frame[0] * make.frame[1], size[0] * size[1]
    if area_over == "frame":
        counted = pixels
    reference = torch.zeros(len(areas), pixels, dtype=images.dtype, device=images.device)
    for index, area in enumerate(areas):
        reference[index, int(pixels - counted * area):] = 1
    masks = []
    for part in chunks(len(images) * len(areas), batch_size, desc="extremal perturbation"):
        rows = torch.arange(part.start, part.stop, device=images.device)
        image, area = rows // len(areas), rows % len(areas)
        pyramid = blur_pyramid(images[image], num_levels, max_blur * scale, perturbation,
                               blur_padding)
        parameters = torch.full((len(rows), 1, *make.grid), initial, dtype=images.dtype,
                                device=images.device, requires_grad=True)
        optimizer = torch.optim.SGD([parameters], lr=lr, momentum=momentum, dampening=momentum)
        scored = torch.cat([image, image]) if variant == "dual" else image
        weight = regularization
        with torch.enable_grad():
            for iteration in range(iterations):
                frame = make(parameters, whole=True)
                mask = make.crop(frame)
                if variant == "preserve":
                    perturbed = perturb(pyramid, mask)
                elif variant == "delete":
                    perturbed = perturb(pyramid, 1 - mask)
                else:
                    perturbed = torch.cat([perturb(pyramid, mask), perturb(pyramid, 1 - mask)])
                if jitter and iteration % 2 == 0:
                    perturbed = perturbed.flip(3)
                gain = _reward(target, model(perturbed), scored, reward)
                if variant == "delete":
                    gain = -gain
                elif variant == "dual":
                    gain = gain[:len(rows)] - gain[len(rows):]
                ranked = frame.flatten(1).sort(1).values
                penalty = ((ranked - reference[area]) ** 2).mean(1) * weight
                optimizer.zero_grad()
                (penalty - gain).sum().backward()
                optimizer.step()
                with torch.no_grad():
                    parameters.clamp_(0, 1)
                weight *= growth
        masks.append(mask.detach().clamp(0, 1))
    raw = torch.cat(masks).view(len(images), len(areas), *size)
    return Attribution(raw.mean(1, keepdim=True), raw=raw,
                       options={"areas": areas, "start": initial, "pixel_scale": scale})

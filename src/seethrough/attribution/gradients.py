"""Gradient methods: saliency, input x gradient, integrated gradients, guided backprop, deconvnet.

Each computes the gradient of the target score with respect to the input with one
``torch.autograd.grad`` on the summed scores of a chunk of images, so a batch costs one
forward and one backward pass (integrated gradients: one per ``batch_size`` path points).
The score is the target's logit (Simonyan et al. use the class score before the softmax).
The model runs in the mode it is in; use ``model.eval()`` first so batch norm and dropout do
not mix images or add noise.

Example:
    >>> import torch, torchvision
    >>> model = torchvision.models.resnet18(num_classes=4).eval()
    >>> saliency(model, torch.rand(2, 3, 32, 32), target=1).maps.shape
    torch.Size([2, 1, 32, 32])
"""
from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import nn

from seethrough.attribution.registry import register
from seethrough.attribution.result import Attribution
from seethrough.core import Target
from seethrough.core.batching import chunks
from seethrough.errors import InputError
from seethrough.relu_rules import relu_backward


def input_gradients(
    model: nn.Module, images: torch.Tensor, target: Target, *, batch_size: int,
    rule: str | None = None, rows: torch.Tensor | None = None, clean: bool = True,
) -> torch.Tensor:
    """``d score / d images`` (N, C, H, W), chunked; ``rule`` changes every ReLU's backward."""
    grads = torch.empty_like(images)
    for part in chunks(len(images), batch_size, desc="gradients"):
        with torch.enable_grad(), relu_backward(rule) if rule else nullcontext():
            leaf = images[part].detach().requires_grad_()
            index = part if rows is None else rows[part]
            score = target.scores(model(leaf), index, clean=clean).sum()
            if not score.requires_grad:
                raise InputError("the target score does not depend on the input images")
            (grads[part],) = torch.autograd.grad(score, leaf)
    return grads


def abs_max(raw: torch.Tensor) -> torch.Tensor:
    """Largest absolute value over colour channels: (N, C, H, W) -> (N, 1, H, W)."""
    return raw.abs().amax(1, keepdim=True)


def channel_sum(raw: torch.Tensor) -> torch.Tensor:
    """Sum over colour channels, sign kept: (N, C, H, W) -> (N, 1, H, W)."""
    return raw.sum(1, keepdim=True)


@register("saliency")
def saliency(model: nn.Module, images: torch.Tensor, target: Target, *, batch_size: int = 32) -> Attribution:
    """Gradient saliency (Simonyan et al. 2014): ``max_c |d S / d x_c|``.

    ``raw`` is the signed gradient per colour channel (N, C, H, W).

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 2))
        >>> saliency(net, torch.rand(1, 3, 4, 4), target=0).maps.shape
        torch.Size([1, 1, 4, 4])
    """
    grads = input_gradients(model, images, target, batch_size=batch_size)
    return Attribution(abs_max(grads), raw=grads)


@register("input_x_gradient")
def input_x_gradient(
    model: nn.Module, images: torch.Tensor, target: Target, *, batch_size: int = 32
) -> Attribution:
    """Input times gradient (Shrikumar et al. 2016): ``sum_c x_c * d S / d x_c``, signed.

    ``raw`` is ``x * gradient`` per colour channel.
    """
    raw = images * input_gradients(model, images, target, batch_size=batch_size)
    return Attribution(channel_sum(raw), raw=raw)


@register("guided_backprop")
def guided_backprop(
    model: nn.Module, images: torch.Tensor, target: Target, *, batch_size: int = 32
) -> Attribution:
    """Guided backpropagation (Springenberg et al. 2015).

    Every ReLU (modules, in-place, ``F.relu``, ``ReLU6``) passes gradient back only where its
    input and the incoming gradient are both positive (``seethrough.relu_rules``). ``maps`` is
    ``max_c |grad|`` as for saliency; ``raw`` the guided gradient per colour channel, which
    is what the paper shows as an image.
    """
    grads = input_gradients(model, images, target, batch_size=batch_size, rule="guided")
    return Attribution(abs_max(grads), raw=grads)


@register("deconvnet")
def deconvnet(model: nn.Module, images: torch.Tensor, target: Target, *, batch_size: int = 32) -> Attribution:
    """Deconvnet (Zeiler & Fergus 2014): ReLUs pass back the positive part of the gradient.

    ``maps`` is ``max_c |grad|``; ``raw`` the reconstruction per colour channel.
    """
    grads = input_gradients(model, images, target, batch_size=batch_size, rule="deconvnet")
    return Attribution(abs_max(grads), raw=grads)


def quadrature(rule: str, n_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Points ``alpha`` in [0, 1] and weights (summing to 1) to integrate over the path.

    ``gauss_legendre`` (exact for polynomials of degree ``2 n - 1``), ``riemann_right``
    (the paper's sum, ``alpha = k / n``), ``riemann_middle``, ``trapezoid``.

    Example:
        >>> alphas, weights = quadrature("riemann_right", 4)
        >>> alphas.tolist(), weights.tolist()
        ([0.25, 0.5, 0.75, 1.0], [0.25, 0.25, 0.25, 0.25])
    """
    if not isinstance(n_steps, int) or n_steps < 1:
        raise InputError(f"n_steps must be a positive integer, not {n_steps!r}")
    k = torch.arange(n_steps, dtype=torch.float64)
    if rule == "gauss_legendre":
        # Golub-Welsch: nodes are the eigenvalues of the Jacobi matrix of Legendre polynomials
        beta = (k[1:] / torch.sqrt(4 * k[1:] ** 2 - 1))
        jacobi = torch.diag(beta, 1) + torch.diag(beta, -1)
        nodes, vectors = torch.linalg.eigh(jacobi)
        alphas, weights = (nodes + 1) / 2, vectors[0] ** 2
    elif rule == "riemann_right":
        alphas, weights = (k + 1) / n_steps, torch.full_like(k, 1 / n_steps)
    elif rule == "riemann_middle":
        alphas, weights = (k + 0.5) / n_steps, torch.full_like(k, 1 / n_steps)
    elif rule == "trapezoid":
        if n_steps < 2:
            raise InputError("the trapezoid rule needs n_steps >= 2")
        alphas = k / (n_steps - 1)
        weights = torch.full_like(k, 1 / (n_steps - 1))
        weights[[0, -1]] /= 2
    else:
        raise InputError(
            f"unknown rule {rule!r}; choose gauss_legendre, riemann_right, riemann_middle or trapezoid"
        )
    return alphas.float(), weights.float()


def as_baseline(baseline, images: torch.Tensor) -> torch.Tensor:
    """A baseline (number or tensor broadcastable to the images) expanded to their shape."""
    value = torch.as_tensor(baseline, dtype=images.dtype, device=images.device)
    try:
        return value.expand_as(images) if value.dim() else value.expand(images.shape)
    except RuntimeError as error:
        raise InputError(
            f"baseline of shape {tuple(value.shape)} does not broadcast to images "
            f"{tuple(images.shape)}: give a number, (C, H, W), (1, C, H, W) or (N, C, H, W)"
        ) from error


@register("integrated_gradients")
def integrated_gradients(
    model: nn.Module, images: torch.Tensor, target: Target, *, n_steps: int = 50,
    baseline: float | torch.Tensor = 0.0, rule: str = "gauss_legendre", batch_size: int = 32,
) -> Attribution:
    """Integrated gradients (Sundararajan et al. 2017): ``(x - x') * mean gradient on the path``.

    Defaults: 50 steps and a black baseline (0), as in the paper; any baseline broadcastable to
    the images works. The paper sums gradients at ``k / n`` (``rule="riemann_right"``); the
    default here is Gauss-Legendre quadrature (as in Captum), which at the same cost is exact
    for polynomials of degree ``2 n - 1``. The ``N * n_steps`` path points run ``batch_size``
    at a time, so memory depends on ``batch_size`` only. ``"predicted"`` is the class predicted
    on the image itself (one extra forward pass; pass class indices to avoid it).

    Completeness: ``maps.sum() ~= f(x) - f(x')``, closer with more steps.
    ``raw`` is the attribution per colour channel; ``maps`` its sum over channels.
    """
    alphas, weights = (t.to(images) for t in quadrature(rule, n_steps))  # device and dtype
    start = as_baseline(baseline, images)
    target.resolve(model, images, batch_size)
    total = torch.zeros_like(images)
    for part in chunks(len(images) * n_steps, batch_size, desc="integrated gradients"):
        pair = torch.arange(part.start, part.stop, device=images.device)
        image, step = pair // n_steps, pair % n_steps
        alpha = alphas[step].view(-1, 1, 1, 1)
        with torch.enable_grad():
            leaf = torch.lerp(start[image], images[image], alpha).requires_grad_()
            score = target.scores(model(leaf), image).sum()
            if not score.requires_grad:
                raise InputError("the target score does not depend on the input images")
            (grad,) = torch.autograd.grad(score, leaf)
        total.index_add_(0, image, grad * weights[step].view(-1, 1, 1, 1))
    raw = (images - start) * total
    return Attribution(channel_sum(raw), raw=raw)

"""Methods that compare an image with a reference input: DeepLIFT, DeepLIFT-SHAP, GradientSHAP.

DeepLIFT (Shrikumar et al. 2017) explains ``f(x) - f(x')`` by backpropagating *multipliers*:
linear layers pass them back as gradients do, and every elementwise nonlinearity ``y = g(z)``
uses the Rescale rule ``m = (g(z) - g(z')) / (z - z')`` (the gradient where ``|z - z'|`` <
``1e-10``, Captum's threshold). The image and its reference run in one batch ``[x; x']`` so
each nonlinearity sees both; while the method runs, ``rescale_rule`` patches the activation
functions (``F.relu``, ``torch.relu``, ``Tensor.relu`` and their in-place forms, ``ReLU6`` /
``hardtanh``, ELU, LeakyReLU, SiLU, GELU, Softplus, Hardswish, Hardsigmoid, Mish, sigmoid,
tanh) however the model calls them, module or function (DenseNet's ``F.relu``), and puts them
back on exit; the model itself is never touched. An in-place activation returns a new tensor
instead (the input is left as it was). Max pooling uses the rule of Captum (``maxpool="delta"``):
the window's change ``max(x) - max(x')`` is split between the argmax of the image and that of
the reference, which keeps summation-to-delta; unlike Captum the split is scatter-added, so
overlapping windows (ResNet's 3x3 / 2 pool) keep it too. ``maxpool="gradient"`` is the official
deeplift code's default (the gradient through the max). Products of activations (attention,
squeeze-excitation gates) get plain gradients, as in Captum.

Summation-to-delta: ``maps.sum() == f(x) - f(x')`` up to float rounding for networks of linear
layers, pooling and the activations above.

Versus Captum's ``DeepLift`` (tests/attribution/test_reference.py): equal to rounding on nets of
convolutions, max pools and the activations it supports. It differs where (a) windows of a
max pool overlap (its ``max_unpool2d`` overwrites, its map no longer sums to the delta), (b)
an activation module feeds a MaxPool module directly (its module hooks do not compose; with a
linear identity in between it agrees with us), (c) a module is reused (ResNet's ``relu``: it
refuses) or an activation is a function call, a SiLU / GELU / ReLU6 (it passes the gradient).

Warning:
    As in ``relu_rules``, the patch is process-wide while the method runs; other threads keep
    plain gradients (the rule applies only to calls from the thread running DeepLIFT).

Example:
    >>> import torch, torchvision
    >>> model = torchvision.models.resnet18(num_classes=4).eval()
    >>> deeplift(model, torch.rand(2, 3, 32, 32), target=1).maps.shape
    torch.Size([2, 1, 32, 32])
"""
from __future__ import annotations

import threading
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from seethrough.attribution.gradients import channel_sum
from seethrough.attribution.registry import register
from seethrough.attribution.result import Attribution
from seethrough.core import Target
from seethrough.core.batching import chunks
from seethrough.errors import InputError

#: Captum's threshold below which an input change counts as none (the gradient is used)
EPS = 1e-10
#: the elementwise activation functions the Rescale rule replaces (module, attribute)
ACTIVATIONS = (
    [(F, name) for name in ("relu", "relu_", "relu6", "hardtanh", "elu", "leaky_relu", "silu",
                            "gelu", "softplus", "hardswish", "hardsigmoid", "mish", "sigmoid",
                            "tanh")]
    + [(torch, name) for name in ("relu", "relu_", "sigmoid", "tanh")]
    + [(torch.Tensor, name) for name in ("relu", "relu_", "sigmoid", "tanh")]
)


class _State(threading.local):
    rows = -1      # rows of the current batch [x; x']: other calls keep their plain gradient
    busy = False   # inside a rule: nested activation calls run as they are


_STATE = _State()


def _halves(t: torch.Tensor) -> torch.Tensor:
    """``[a; b] -> [a - b; a - b]`` (the change from reference to input, for both halves)."""
    a, b = t.chunk(2)
    delta = a - b
    return torch.cat([delta, delta])


class _Rescale(torch.autograd.Function):
    """The Rescale rule's multiplier ``(g(x) - g(x')) / (x - x')``, kept once per pair (both
    halves of the batch share it) and applied to the gradient in the backward pass. Where
    ``|x - x'|`` < ``EPS`` the slope ``g'(x)`` is computed on those elements only."""

    @staticmethod
    def forward(ctx, x, function):
        y = function(x)  # an in-place activation works on a copy (see _patched)
        x_in, x_ref = x.chunk(2)
        y_in, y_ref = y.chunk(2)
        dx = x_in - x_ref
        small = dx.abs() < EPS
        multiplier = (y_in - y_ref).div_(dx.masked_fill_(small, 1.0))
        if small.any():
            with torch.enable_grad():
                leaf = x_in[small].detach().requires_grad_()
                (slope,) = torch.autograd.grad(function(leaf).sum(), leaf)
            multiplier[small] = slope
        ctx.save_for_backward(multiplier)
        return y

    @staticmethod
    def backward(ctx, grad):
        (multiplier,) = ctx.saved_tensors
        return (grad.unflatten(0, (2, -1)) * multiplier).flatten(0, 1), None


class _MaxPoolDelta(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, pool):
        y, indices = pool(x)
        y_in, y_ref = y.chunk(2)
        top = torch.maximum(y_in, y_ref)
        ctx.save_for_backward(x, indices, torch.cat([top - y_ref, y_in - top]))
        return y

    @staticmethod
    def backward(ctx, grad):
        x, indices, share = ctx.saved_tensors

        def scatter(values):  # the adjoint of max pooling with these indices (adds overlaps)
            flat = x.new_zeros(*x.shape[:2], x.shape[2] * x.shape[3])
            flat.scatter_add_(2, indices.flatten(2), values.flatten(2))
            return flat.view(x.shape)

        contribution = sum(scatter(grad * share).chunk(2))
        dx = _halves(x)
        small = dx.abs() < EPS
        rescaled = torch.cat([contribution, contribution]) / torch.where(small, torch.ones_like(dx), dx)
        return torch.where(small, scatter(grad), rescaled), None


def _patched(original, kind: str, inplace: bool = False):
    def function(x, *args, **kwargs):
        if (_STATE.busy or not isinstance(x, torch.Tensor) or not torch.is_grad_enabled()
                or not x.requires_grad or x.dim() == 0 or x.shape[0] != _STATE.rows):
            return original(x, *args, **kwargs)
        if kind == "pool":
            if kwargs.get("return_indices") or len(args) >= 6 or x.dim() != 4:
                return original(x, *args, **kwargs)
            kwargs = {**kwargs, "return_indices": True}
            rule, apply = _MaxPoolDelta, (lambda t: original(t, *args, **kwargs))
        elif inplace or kwargs.get("inplace") or any(a is True for a in args):
            rule, apply = _Rescale, (lambda t: original(t.clone(), *args, **kwargs))
        else:
            rule, apply = _Rescale, (lambda t: original(t, *args, **kwargs))
        _STATE.busy = True
        try:
            return rule.apply(x, apply)
        finally:
            _STATE.busy = False

    return function


@contextmanager
def rescale_rule(rows: int, *, maxpool: str = "delta"):
    """Within the block, activations called on a batch of ``rows`` (the ``[x; x']`` batch of
    ``rows / 2`` pairs) backpropagate DeepLIFT multipliers; other calls are unchanged."""
    targets = list(ACTIVATIONS) + ([(F, "max_pool2d")] if maxpool == "delta" else [])
    originals = {(owner, name): getattr(owner, name) for owner, name in targets}
    previous = _STATE.rows
    try:
        for (owner, name), original in originals.items():
            kind = "pool" if name == "max_pool2d" else "act"
            setattr(owner, name, _patched(original, kind, inplace=name.endswith("_")))
        _STATE.rows = rows
        yield
    finally:
        _STATE.rows = previous
        for (owner, name), original in originals.items():
            setattr(owner, name, original)


def references(baselines, images: torch.Tensor, *, name: str = "baselines") -> torch.Tensor:
    """Reference images ``(B, C, H, W)`` from a number, an image ``(C, H, W)`` or a stack;
    ``None``: an all-black and an all-white image (Captum's GradientShap tutorial)."""
    if baselines is None:
        return torch.stack([torch.zeros_like(images[0]), torch.ones_like(images[0])])
    value = torch.as_tensor(baselines, dtype=images.dtype).to(images.device)
    if value.dim() == 0:
        return value.expand(images.shape[1:])[None].clone()
    if value.dim() == 3:
        value = value[None]
    if value.dim() != 4 or value.shape[1:] != images.shape[1:] or not len(value):
        raise InputError(f"{name} must be a number, an image {tuple(images.shape[1:])} or a stack "
                         f"(B, {', '.join(map(str, images.shape[1:]))}); got {tuple(value.shape)}")
    return value


def multipliers(
    model: nn.Module, inputs: torch.Tensor, refs: torch.Tensor, rows: torch.Tensor, target: Target,
    *, maxpool: str,
) -> torch.Tensor:
    """DeepLIFT multipliers ``d score / d input`` under the Rescale rule for pairs (input, ref);
    ``rows`` is the image index of each pair. One forward/backward pass on ``[inputs; refs]``."""
    with torch.enable_grad(), rescale_rule(2 * len(inputs), maxpool=maxpool):
        leaf = torch.cat([inputs, refs]).detach().requires_grad_()
        score = target.scores(model(leaf), torch.cat([rows, rows])).sum()
        if not score.requires_grad:
            raise InputError("the target score does not depend on the input images")
        (grad,) = torch.autograd.grad(score, leaf)
    return grad[: len(inputs)]


def _check_maxpool(maxpool: str) -> None:
    if maxpool not in ("delta", "gradient"):
        raise InputError(f"maxpool must be 'delta' or 'gradient', not {maxpool!r}")


def _pairs(model, images, refs, target, *, per_image: bool, maxpool: str, batch_size: int,
           desc: str) -> torch.Tensor:
    """Mean DeepLIFT contributions of every image against its reference (``per_image``) or
    against each of ``refs`` (DeepLIFT-SHAP)."""
    _check_maxpool(maxpool)
    target.resolve(model, images, batch_size)
    count = 1 if per_image else len(refs)
    total = torch.zeros_like(images)
    for part in chunks(len(images) * count, max(1, batch_size // 2), desc=desc):
        pair = torch.arange(part.start, part.stop, device=images.device)
        image, ref = pair // count, (pair // count if per_image else pair % count)
        inputs, start = images[image], refs[ref]
        grad = multipliers(model, inputs, start, image, target, maxpool=maxpool)
        total.index_add_(0, image, (inputs - start) * grad)
    return total / count


@register("deeplift")
def deeplift(
    model: nn.Module, images: torch.Tensor, target: Target, *, baseline: float | torch.Tensor = 0.0,
    maxpool: str = "delta", batch_size: int = 32,
) -> Attribution:
    """DeepLIFT with the Rescale rule (Shrikumar et al. 2017; see the module doc).

    ``baseline``: the reference, zeros by default as in the paper (and Captum); a number or a
    tensor broadcastable to the images. ``raw`` is the contribution of every colour channel,
    ``(x - x') * multiplier``; ``maps`` its sum over channels, which sums to ``f(x) - f(x')``.
    Each chunk of ``batch_size // 2`` images runs with its references in one batch.
    """
    from seethrough.attribution.gradients import as_baseline

    refs = as_baseline(baseline, images)
    raw = _pairs(model, images, refs, target, per_image=True, maxpool=maxpool,
                 batch_size=batch_size, desc="deeplift")
    return Attribution(channel_sum(raw), raw=raw)


@register("deeplift_shap")
def deeplift_shap(
    model: nn.Module, images: torch.Tensor, target: Target, *,
    baselines: float | torch.Tensor | None = None, maxpool: str = "delta", batch_size: int = 32,
) -> Attribution:
    """DeepLIFT-SHAP (Lundberg & Lee 2017): DeepLIFT averaged over a distribution of references.

    ``baselines``: reference images ``(B, C, H, W)`` (e.g. a sample of the training data, as the
    paper's DeepSHAP); Captum requires them. The default ``None`` uses two references, an
    all-black and an all-white image (Captum's GradientShap tutorial, for [0, 1] pixels). Costs
    ``B`` DeepLIFT runs; ``maps`` sums to ``f(x) - mean f(x')``.
    """
    refs = references(baselines, images)
    raw = _pairs(model, images, refs, target, per_image=False, maxpool=maxpool,
                 batch_size=batch_size, desc="deeplift-shap")
    return Attribution(channel_sum(raw), raw=raw)


@register("gradient_shap")
def gradient_shap(
    model: nn.Module, images: torch.Tensor, target: Target, *,
    baselines: float | torch.Tensor | None = None, n_samples: int = 5, stdevs: float = 0.0,
    seed: int = 0, batch_size: int = 32,
) -> Attribution:
    """GradientSHAP (Lundberg & Lee 2017; Captum's ``GradientShap``): expected gradients.

    For each of ``n_samples`` draws: a reference ``x'`` from ``baselines`` (uniformly), Gaussian
    noise of standard deviation ``stdevs`` (absolute, as Captum) added to the image, a point
    ``x' + a (x~ - x')`` with ``a ~ U(0, 1)``; the attribution is the mean of
    ``(x~ - x') * gradient at the point``. In expectation (``stdevs=0``) it is integrated
    gradients averaged over the references. Defaults as Captum: 5 samples, no noise; ``baselines``
    as ``deeplift_shap`` (black and white when ``None``). The draws are seeded (``seed``) and the
    same for every image, so an image's result does not depend on the rest of the batch.
    """
    if not isinstance(n_samples, int) or n_samples < 1:
        raise InputError(f"n_samples must be a positive integer, not {n_samples!r}")
    if not isinstance(stdevs, (int, float)) or stdevs < 0:
        raise InputError(f"stdevs must be a number >= 0, not {stdevs!r}")
    refs = references(baselines, images)
    target.resolve(model, images, batch_size)
    generator = torch.Generator().manual_seed(seed)
    choice = torch.randint(len(refs), (n_samples,), generator=generator).to(images.device)
    alphas = torch.rand(n_samples, generator=generator).to(images)
    noise = (torch.randn((n_samples, *images.shape[1:]), generator=generator) * stdevs).to(images)
    total = torch.zeros_like(images)
    for part in chunks(len(images) * n_samples, batch_size, desc="gradient-shap"):
        pair = torch.arange(part.start, part.stop, device=images.device)
        image, sample = pair // n_samples, pair % n_samples
        start = refs[choice[sample]]
        delta = images[image] + noise[sample] - start
        with torch.enable_grad():
            leaf = (start + alphas[sample].view(-1, 1, 1, 1) * delta).requires_grad_()
            score = target.scores(model(leaf), image).sum()
            if not score.requires_grad:
                raise InputError("the target score does not depend on the input images")
            (grad,) = torch.autograd.grad(score, leaf)
        total.index_add_(0, image, delta * grad)
    raw = total / n_samples
    return Attribution(channel_sum(raw), raw=raw)

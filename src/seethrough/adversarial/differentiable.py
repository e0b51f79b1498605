"""Attribution maps with a gradient to the input: what attacks on explanations, and attacks on
detectors that read them, differentiate.

A ReLU network's input gradient is piecewise constant in the input, so the derivative of a
saliency-type map (saliency, input x gradient, integrated gradients) with respect to the input
is zero almost everywhere, and an attack on it would not move; Ghorbani et al. (2019) replace
ReLU by softplus to compute the attack's gradient. Here the model is left as it is: inside the
double backward only, every ReLU's derivative is replaced by softplus's, ``sigmoid(beta * x)``
(``smooth_relu``, a ``relu_backward`` rule), which gives the map a nonzero derivative.
Grad-CAM needs no change: its map depends on the input through the layer's activation at
first order (``create_graph=True`` suffices).

``attack_maps`` gives maps whose value is always the registry method's own and whose gradient
is the differentiable form's: exact for Grad-CAM, the smooth-ReLU map's for the gradient
methods, and a surrogate's for any other method (BPDA, Athalye et al. 2018).

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
    ...                       nn.Flatten(), nn.Linear(8, 3)).eval()
    >>> x = torch.rand(1, 3, 32, 32, requires_grad=True)
    >>> maps = attack_maps(model, x, torch.tensor([0]), "saliency")
    >>> grad, = torch.autograd.grad(maps.sum(), x)
    >>> bool(grad.abs().sum() > 0), maps.shape
    (True, torch.Size([1, 1, 32, 32]))
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from seethrough.errors import InputError
from seethrough.relu_rules import relu_backward

#: softplus sharpness of the smooth ReLU derivative, ``sigmoid(beta * x)``
BETA = 10.0
#: methods with a map that is differentiable in the input (with the smooth ReLU derivative)
DIFFERENTIABLE = ("saliency", "input_x_gradient", "integrated_gradients", "gradcam")
#: for methods without a differentiable map, the one whose gradient stands in (BPDA); others:
#: saliency
SURROGATES = {"cam": "gradcam", "gradcam_plus_plus": "gradcam", "scorecam": "gradcam"}
#: the options each differentiable form understands (others of the registry method are ignored)
_OPTIONS = {
    "saliency": (), "input_x_gradient": (),
    "integrated_gradients": ("n_steps", "baseline", "rule"),
    "gradcam": ("layer", "relu", "grid"),
}


@contextmanager
def smooth_relu(beta: float = BETA) -> Iterator[None]:
    """Within the block every ReLU (and ReLU6) keeps its forward value but backpropagates with
    softplus's derivative ``sigmoid(beta * x)`` (zero above ReLU6's 6), a derivative that is
    itself differentiable: the input gradient gets a nonzero second derivative."""
    def rule(grad: torch.Tensor, x: torch.Tensor, passes: torch.Tensor) -> torch.Tensor:
        below_top = torch.where(x > 0, passes, torch.ones_like(passes))
        return grad * torch.sigmoid(beta * x) * below_top

    with relu_backward(rule):
        yield


def _logits(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    logits = model(images)
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise InputError("explanation attacks need a model that returns (N, classes) logits")
    return logits


def _class_scores(model: nn.Module, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    return _logits(model, images).gather(1, classes[:, None]).squeeze(1)


def _gradient(model: nn.Module, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    score = _class_scores(model, images, classes).sum()
    if not score.requires_grad:
        raise InputError("the class score does not depend on the input images")
    (grad,) = torch.autograd.grad(score, images, create_graph=True)
    return grad


def differentiable_maps(model: nn.Module, images: torch.Tensor, classes: torch.Tensor,
                        method: str, *, beta: float = BETA, **options) -> torch.Tensor:
    """``(N, 1, H, W)`` maps of ``method`` (one of ``DIFFERENTIABLE``) with their graph to
    ``images`` (which must require grad): ``torch.autograd.grad`` of a function of them reaches
    the images.

    Saliency, input x gradient and integrated gradients run with the smooth ReLU derivative
    (``smooth_relu(beta)``), so on a ReLU network their values differ a little from the
    registry's; Grad-CAM's equal them. ``options`` are the registry method's (``layer``,
    ``n_steps``, ``baseline``, ``rule``, ...); the others are ignored.
    """
    if method not in DIFFERENTIABLE:
        raise InputError(f"{method!r} has no differentiable form here; these have one: "
                         f"{', '.join(DIFFERENTIABLE)}")
    options = {key: value for key, value in options.items() if key in _OPTIONS[method]}
    if method == "gradcam":
        return _gradcam(model, images, classes, **options)
    with smooth_relu(beta):
        if method == "saliency":
            return _gradient(model, images, classes).abs().amax(1, keepdim=True)
        if method == "input_x_gradient":
            return (images * _gradient(model, images, classes)).sum(1, keepdim=True)
        return _integrated_gradients(model, images, classes, **options)


def _integrated_gradients(model, images, classes, *, n_steps: int = 50, baseline=0.0,
                          rule: str = "gauss_legendre") -> torch.Tensor:
    from seethrough.attribution.gradients import as_baseline, quadrature

    alphas, weights = (t.to(images.device) for t in quadrature(rule, n_steps))
    start = as_baseline(baseline, images)
    total = torch.zeros_like(images)
    for alpha, weight in zip(alphas, weights):
        point = torch.lerp(start, images, alpha)
        total = total + weight * _gradient(model, point, classes)
    return ((images - start) * total).sum(1, keepdim=True)


def _gradcam(model, images, classes, *, layer=None, relu: bool = True, grid=None) -> torch.Tensor:
    from seethrough.attribution.cams import layer_name, weighted_sum
    from seethrough.attribution.layers import to_grid, upsample
    from seethrough.trace import Trace

    name = layer_name(model, layer)
    with Trace(model, name, retain_grad=True) as trace:
        scores = _class_scores(model, images, classes).sum()
    activation = trace[name].output
    if not activation.requires_grad:
        raise InputError(f"layer {name!r} does not depend on the input images")
    (grad,) = torch.autograd.grad(scores, activation, create_graph=True)
    activation, grad = to_grid(activation, name, grid), to_grid(grad, name, grid)
    cam = weighted_sum(grad.mean((2, 3)), activation, relu=relu)
    return upsample(cam, tuple(images.shape[-2:]))


def registry_maps(model: nn.Module, images: torch.Tensor, classes: torch.Tensor, method: str,
                  options: dict | None = None, batch_size: int = 32) -> torch.Tensor:
    """The registry's ``(N, 1, H, W)`` maps of ``method`` for ``classes`` (no graph)."""
    from seethrough.attribution import attribute

    return attribute(model, images.detach(), classes, method=method, batch_size=batch_size,
                     **(options or {})).maps.detach()


def attack_maps(model: nn.Module, images: torch.Tensor, classes: torch.Tensor, method: str, *,
                options: dict | None = None, beta: float = BETA,
                batch_size: int = 32) -> torch.Tensor:
    """Maps whose value is the registry's and whose gradient to ``images`` is the
    differentiable form's: exact for Grad-CAM, the smooth-ReLU map's for saliency, input x
    gradient and integrated gradients, and a surrogate's (``SURROGATES``, else saliency) for
    any other method: BPDA (Athalye et al. 2018). ``value + soft - soft.detach()``."""
    options = dict(options or {})
    if method == "gradcam":
        return differentiable_maps(model, images, classes, method, **options)
    surrogate = method if method in DIFFERENTIABLE else SURROGATES.get(method, "saliency")
    soft = differentiable_maps(model, images, classes, surrogate, beta=beta, **options)
    value = registry_maps(model, images, classes, method, options, batch_size)
    return value + soft - soft.detach()

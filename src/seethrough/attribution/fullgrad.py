"""FullGrad (Srinivas & Fleuret 2019): input-gradient times input plus every bias's gradient.

For a ReLU network (piecewise linear, biases included) the output decomposes exactly as
``f(x) = sum(x * df/dx) + sum_b b * df/db`` (the full-gradient completeness); the bias terms of
convolutions and BatchNorms are spatial maps ``b_c * df/dz_c`` at their layer's resolution.
``full_gradients`` gives the signed terms; the ``fullgrad`` method post-processes them as the
paper: each map ``psi`` = absolute value, min-max normalised, resized to the input, and sums.

Example:
    >>> import torch, torchvision
    >>> model = torchvision.models.resnet18(num_classes=4).eval()
    >>> fullgrad(model, torch.rand(2, 3, 32, 32), target=1).maps.shape
    torch.Size([2, 1, 32, 32])
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seethrough.attribution.registry import register
from seethrough.attribution.result import Attribution
from seethrough.core import Target
from seethrough.core.batching import chunks
from seethrough.errors import InputError

_SPATIAL = (nn.Conv2d, nn.BatchNorm2d)
_OTHER = (nn.Linear, nn.Conv1d, nn.Conv3d, nn.BatchNorm1d, nn.BatchNorm3d)
NORMALIZE = ("layer", "channel")


def effective_bias(module: nn.Module) -> torch.Tensor | None:
    """A layer's bias as added to its output: a BatchNorm's is ``beta - mean * gamma / std``
    (eval mode, running statistics, as the official code); ``None`` when it has none."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        if module.running_mean is None:
            return module.bias
        scale = torch.rsqrt(module.running_var + module.eps)
        if module.weight is not None:
            scale = scale * module.weight
        shift = -module.running_mean * scale
        return shift if module.bias is None else shift + module.bias
    return getattr(module, "bias", None)


def full_gradients(
    model: nn.Module, images: torch.Tensor, target: Target, *, batch_size: int = 32,
) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """The full-gradient terms: ``x * df/dx`` (N, C, H, W); ``b * df/dz`` for every Conv2d /
    BatchNorm2d with a bias, (N, K, h, w) each, in the order they run; the summed bias terms of
    other layers (Linear, 1-D / 3-D ones), (N,). All three sum to the score (ReLU nets)."""
    layers = [m for m in model.modules() if isinstance(m, _SPATIAL + _OTHER)
              and effective_bias(m) is not None]
    inputs = torch.zeros_like(images)
    spatial: list[list[torch.Tensor]] = []
    other = images.new_zeros(len(images))
    for part in chunks(len(images), batch_size, desc="fullgrad"):
        outputs: list[tuple[nn.Module, torch.Tensor]] = []

        def keep(module, args, output, outputs=outputs):
            if not isinstance(output, torch.Tensor) or not output.requires_grad:
                return None
            outputs.append((module, output))
            return output.clone()  # an in-place op after the layer must not change the kept one

        handles = [m.register_forward_hook(keep) for m in layers]
        try:
            with torch.enable_grad():
                leaf = images[part].detach().requires_grad_()
                score = target.scores(model(leaf), part, clean=True).sum()
                if not score.requires_grad:
                    raise InputError("the target score does not depend on the input images")
                grads = torch.autograd.grad(score, [leaf] + [o for _, o in outputs],
                                            allow_unused=True)
        finally:
            for handle in handles:
                handle.remove()
        inputs[part] = leaf.detach() * grads[0]
        maps = []
        for (module, output), grad in zip(outputs, grads[1:]):
            if grad is None:
                grad = torch.zeros_like(output)
            bias = effective_bias(module).detach().to(grad)
            if isinstance(module, nn.Linear):  # its bias runs along the last dimension
                term = grad * bias
            else:
                term = grad * bias.view(1, -1, *([1] * (grad.dim() - 2)))
            if isinstance(module, _SPATIAL) and term.dim() == 4:
                maps.append(term)
            else:
                other[part] += term.flatten(1).sum(1)
        spatial.append(maps)
    layers_out = [torch.cat(per) for per in zip(*spatial)] if spatial and spatial[0] else []
    return inputs, layers_out, other


def _psi(term: torch.Tensor, size, normalize: str) -> torch.Tensor:
    """abs, min-max normalise (over each map's channels and space, or per channel), resize,
    sum over channels: (N, K, h, w) -> (N, 1, H, W)."""
    term = term.abs()
    dims = (2, 3) if normalize == "channel" else (1, 2, 3)
    low, high = term.amin(dims, keepdim=True), term.amax(dims, keepdim=True)
    term = (term - low) / (high - low + 1e-7)
    if tuple(term.shape[-2:]) != tuple(size):
        term = F.interpolate(term, size=size, mode="bilinear", align_corners=False)
    return term.sum(1, keepdim=True)


@register("fullgrad")
def fullgrad(
    model: nn.Module, images: torch.Tensor, target: Target, *, normalize: str = "layer",
    batch_size: int = 32,
) -> Attribution:
    """FullGrad saliency (Srinivas & Fleuret 2019): ``psi(x * df/dx) + sum_l psi(b_l * df/dz_l)``.

    ``psi``: absolute value, min-max normalisation, bilinear resize to the input, channel sum;
    the bias maps are those of every Conv2d and BatchNorm2d (BatchNorm's effective bias, eval
    mode). ``normalize="layer"`` (default) min-max normalises each layer's map over all its
    channels, as the paper's code; ``"channel"`` normalises each channel on its own, as
    pytorch-grad-cam's ``FullGrad``, which also rescales the final map to [0, 1] (here
    ``maps`` keeps the sum, which ranks pixels the same). ``raw`` is the signed ``x * df/dx``.
    """
    if normalize not in NORMALIZE:
        raise InputError(f"normalize must be 'layer' or 'channel', not {normalize!r}")
    inputs, layers, _ = full_gradients(model, images, target, batch_size=batch_size)
    size = images.shape[-2:]
    maps = _psi(inputs, size, normalize)
    for term in layers:
        maps = maps + _psi(term, size, normalize)
    return Attribution(maps, raw=inputs)

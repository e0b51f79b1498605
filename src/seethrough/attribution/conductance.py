"""Conductance (Dhamdhere et al. 2018): integrated gradients that flow through inner units.

On the straight path ``x(a) = x' + a (x - x')`` from the reference to the image, the
conductance of a unit ``y`` is ``integral dF/dy * dy/da da``: how much of ``F(x) - F(x')``
passes through it. ``layer_conductance`` gives it for every unit of a layer (they sum to
``F(x) - F(x')`` when every path goes through the layer); ``neuron_conductance`` splits one
unit's conductance over the input pixels, ``(x_i - x'_i) integral dF/dy * dy/dx_i da`` (the
pixels sum to the unit's layer conductance).

Example:
    >>> import torch, torchvision
    >>> model = torchvision.models.resnet18(num_classes=4).eval()
    >>> layer_conductance(model, torch.rand(2, 3, 64, 64), 1, n_steps=4).raw.shape
    torch.Size([2, 512, 2, 2])
"""
from __future__ import annotations

import torch
from torch import nn

from seethrough.attribution.cams import layer_name
from seethrough.attribution.gradients import as_baseline, channel_sum, quadrature
from seethrough.attribution.layers import to_grid, upsample
from seethrough.attribution.registry import register
from seethrough.attribution.result import Attribution
from seethrough.core import Target
from seethrough.core.batching import chunks
from seethrough.core.capture import layer_gradient
from seethrough.errors import InputError
from seethrough.trace import Trace


def _check_steps(n_steps) -> None:
    if not isinstance(n_steps, int) or isinstance(n_steps, bool) or n_steps < 1:
        raise InputError(f"n_steps must be a positive integer, not {n_steps!r}")


def conductances(model: nn.Module, images: torch.Tensor, target: Target, name: str, start: torch.Tensor,
                 n_steps: int, batch_size: int) -> torch.Tensor:
    """Per-unit conductance of layer ``name`` as the layer outputs it: on ``n_steps + 1`` evenly
    spaced points ``a_k = k / n`` of the path, ``sum_k (g_k + g_k+1) / 2 * (y_k+1 - y_k)``
    (gradients ``g``, trapezoid rule; Captum takes ``g_k``), which telescopes: the units sum to
    ``F(x) - F(x')`` up to the quadrature error of the gradient only."""
    _check_steps(n_steps)
    count = n_steps + 1
    alphas = torch.linspace(0, 1, count, device=images.device, dtype=images.dtype)
    total = carry = None
    for part in chunks(len(images) * count, batch_size, desc="conductance"):
        pair = torch.arange(part.start, part.stop, device=images.device)
        image = pair // count
        points = torch.lerp(start[image], images[image], alphas[pair % count].view(-1, 1, 1, 1))
        ys, gs = layer_gradient(model, points, target, name, image, clean=False)
        if carry is not None:  # the previous chunk's last point, to pair it with this chunk's first
            image, ys, gs = torch.cat([carry[0], image]), torch.cat([carry[1], ys]), torch.cat([carry[2], gs])
        if total is None:
            total = ys.new_zeros((len(images), *ys.shape[1:]))
        same = image[1:] == image[:-1]
        terms = (gs[1:] + gs[:-1]) / 2 * (ys[1:] - ys[:-1])
        total.index_add_(0, image[:-1][same], terms[same])
        carry = (image[-1:], ys[-1:], gs[-1:])
    return total


@register("layer_conductance")
def layer_conductance(
    model: nn.Module, images: torch.Tensor, target: Target, *, layer: str | None = None,
    n_steps: int = 50, baseline: float | torch.Tensor = 0.0, grid: tuple[int, int] | None = None,
    batch_size: int = 32,
) -> Attribution:
    """Layer conductance (Dhamdhere et al. 2018; Captum's ``LayerConductance``).

    ``layer`` as for the CAMs (default: ``default_layer(model)``), 50 steps and a black
    baseline as integrated gradients. ``raw`` is the conductance of every unit ``(N, C, h, w)``
    (token layers reshaped to their grid, the class token dropped); ``maps`` its sum over
    channels, upsampled bilinearly to the input. Completeness: ``raw.sum()`` ~ ``f(x) - f(x')``.
    Costs ``n_steps + 1`` passes per image, each stopping its backward at the layer.
    """
    name = layer_name(model, layer)
    start = as_baseline(baseline, images)
    target.resolve(model, images, batch_size)
    raw = to_grid(conductances(model, images, target, name, start, n_steps, batch_size), name, grid)
    return Attribution(upsample(raw.sum(1, keepdim=True), images.shape[-2:]), raw=raw,
                       options={"layer": name})


def _per_image(neuron, count: int) -> bool:
    """Whether ``neuron`` is one ``(channel,)`` per image (as ``options["neuron"]`` records an
    automatic choice), so that a recorded run can be replayed."""
    return (isinstance(neuron, list) and len(neuron) == count and count > 0
            and all(isinstance(n, (tuple, list)) and len(n) == 1 for n in neuron)
            and all(_neuron(n) for n in neuron))


def _neuron(neuron) -> tuple[int, ...]:
    if (not isinstance(neuron, (tuple, list)) or len(neuron) not in (1, 3)
            or not all(isinstance(i, int) and not isinstance(i, bool) for i in neuron)):
        raise InputError(f"neuron must be (channel,) or (channel, y, x) integers, not {neuron!r}")
    return tuple(neuron)


def _select(grid: torch.Tensor, channels: torch.Tensor, position: tuple[int, ...]) -> torch.Tensor:
    """The selected unit of every row: its channel summed over space, or one position."""
    if not (0 <= int(channels.min()) and int(channels.max()) < grid.shape[1]):
        raise InputError(f"neuron channel {int(channels.max())} is out of range: the layer has "
                         f"{grid.shape[1]} channels")
    values = grid[torch.arange(len(grid), device=grid.device), channels]
    if not position:
        return values.sum()
    row, col = position
    if not (0 <= row < values.shape[1] and 0 <= col < values.shape[2]):
        raise InputError(f"neuron position {(row, col)} is outside the layer's "
                         f"{values.shape[1]}x{values.shape[2]} grid")
    return values[:, row, col].sum()


@register("neuron_conductance")
def neuron_conductance(
    model: nn.Module, images: torch.Tensor, target: Target, *, layer: str | None = None,
    neuron: tuple[int, ...] | None = None, n_steps: int = 50, baseline: float | torch.Tensor = 0.0,
    rule: str = "gauss_legendre", grid: tuple[int, int] | None = None, batch_size: int = 32,
) -> Attribution:
    """Neuron conductance (Dhamdhere et al. 2018; Captum's ``NeuronConductance``) to the pixels.

    ``neuron``: ``(channel,)`` (the whole channel: the sum of its units' conductances) or
    ``(channel, y, x)`` of ``layer`` (default ``default_layer(model)``; token layers as their
    grid), or a list of one ``(channel,)`` per image. ``None`` (default) picks, per image, the
    channel with the largest layer conductance for the target (``n_steps + 1`` more passes) and
    records that list in ``options["neuron"]``. Path quadrature as ``integrated_gradients``
    (``rule``, default Gauss-Legendre; Captum's default is the trapezoid). ``raw`` per colour
    channel, ``maps`` their sum; the pixels sum to the neuron's layer conductance.
    """
    name = layer_name(model, layer)
    position: tuple[int, ...] = ()
    start = as_baseline(baseline, images)
    target.resolve(model, images, batch_size)
    if neuron is None:
        cond = to_grid(conductances(model, images, target, name, start, n_steps, batch_size), name, grid)
        channels = cond.sum((2, 3)).argmax(1)
        chosen = [(int(c),) for c in channels]
    elif _per_image(neuron, len(images)):
        channels = torch.tensor([n[0] for n in neuron], dtype=torch.long, device=images.device)
        chosen = [tuple(n) for n in neuron]
    else:
        index = _neuron(neuron)
        channels = torch.full((len(images),), index[0], dtype=torch.long, device=images.device)
        position, chosen = index[1:], index
    alphas, weights = (t.to(images) for t in quadrature(rule, n_steps))
    total = torch.zeros_like(images)
    for part in chunks(len(images) * n_steps, batch_size, desc="neuron conductance"):
        pair = torch.arange(part.start, part.stop, device=images.device)
        image, step = pair // n_steps, pair % n_steps
        kept: list[torch.Tensor] = []

        def keep(output: torch.Tensor, kept: list = kept) -> torch.Tensor:
            kept.append(output)
            return output.clone()  # in-place ops after the layer must not touch it

        with torch.enable_grad():
            leaf = torch.lerp(start[image], images[image], alphas[step].view(-1, 1, 1, 1)).requires_grad_()
            with Trace(model, name, retain_output=False, edit=keep):
                score = target.scores(model(leaf), image).sum()
            if not kept or not score.requires_grad:
                raise InputError(f"the target score does not depend on layer {name!r}")
            (grad,) = torch.autograd.grad(score, kept[-1], retain_graph=True)
            unit = _select(to_grid(grad * kept[-1], name, grid), channels[image], position)
            (through,) = torch.autograd.grad(unit, leaf)
        total.index_add_(0, image, through * weights[step].view(-1, 1, 1, 1))
    raw = (images - start) * total
    return Attribution(channel_sum(raw), raw=raw, options={"layer": name, "neuron": chosen})

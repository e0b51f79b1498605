"""The "Zoom In" circuit picture of one unit (Olah et al. 2020): ``circuit_figure``.

A unit's feature visualization sits in the middle; its strongest excitatory inputs from an
earlier layer on the left and its strongest inhibitory ones on the right, each with its own
feature visualization and its spatial weight map to the unit (``circuit_weights``: the kernel
when the layers are adjacent, expanded weights further apart). An arrow from each input to the
unit is as wide as the input's total weight (the sum of its map) and coloured by its sign.

Inputs are ranked by the sum of their spatial weight map (``strongest_inputs``), as Olah et al.
read circuits off the weights alone: no data is needed, and an input that the data rarely turns
on still ranks high.

Example:
    >>> import torch
    >>> w = torch.tensor([[[[1.0, 1.0]], [[-3.0, 0.0]], [[0.5, 0.0]], [[-0.1, 0.0]]]])
    >>> positive, negative, totals = strongest_inputs(w, 0, count=2)
    >>> positive, negative, totals.tolist()
    ([0, 2], [1, 3], [2.0, -3.0, 0.5, -0.10000000149011612])
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch
from torch import nn

from seethrough.circuits.weights import circuit_weights
from seethrough.errors import InputError
from seethrough.trace import LayerSpec, resolve_layer

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["DEFAULT_STEPS", "circuit_figure", "strongest_inputs"]

#: feature-visualization steps when ``circuit_figure`` renders the units itself (a quick look;
#: ``seethrough.featureviz.visualize`` uses 256 by default)
DEFAULT_STEPS = 32
#: the largest side ``circuit_figure`` renders at by default
MAX_SIZE = 128
CMAP = "RdBu_r"


def strongest_inputs(weights: torch.Tensor, unit: int, count: int = 3,
                     ) -> tuple[list[int], list[int], torch.Tensor]:
    """The ``count`` inputs with the largest positive and the ``count`` with the most negative
    total weight to ``unit``, strongest first, and every input's total.

    Args:
        weights: ``(units_b, units_a, ...)`` as from ``circuit_weights``.
        unit: the row of ``weights`` (a unit of ``layer_b``).
        count: at most this many on each side (fewer when fewer totals have that sign).

    Returns ``(positive_indices, negative_indices, totals)``; ``totals`` ``(units_a,)`` is the
    sum of each input's spatial weight map.
    """
    if weights.dim() < 2:
        raise InputError(f"weights are (units_b, units_a, ...), not {tuple(weights.shape)}")
    if not 0 <= unit < weights.shape[0]:
        raise InputError(f"unit {unit} is out of range: the layer has {weights.shape[0]} units")
    totals = weights[unit].flatten(1).sum(1)
    order = totals.argsort(descending=True, stable=True)
    positive = [int(i) for i in order if totals[i] > 0][:count]
    negative = [int(i) for i in order.flip(0) if totals[i] < 0][:count]
    return positive, negative, totals


def circuit_figure(model: nn.Module, layer: LayerSpec, unit: int, *,
                   inputs_layer: LayerSpec | None = None, count: int = 3,
                   steps: int = DEFAULT_STEPS, size: int | None = None,
                   visualizations: Mapping[tuple[str, int], torch.Tensor] | None = None,
                   ) -> Figure:
    """A matplotlib ``Figure``: ``unit`` of ``layer`` and its strongest inputs as a small graph.

    Args:
        model: an image model taking [0, 1] images (left as it was).
        layer: the unit's layer; its weights are read at the convolution there (the layer
            itself, or the last ``Conv2d`` inside it, with a BatchNorm right after it folded in).
        unit: the channel of ``layer``.
        inputs_layer: where the inputs are (default: the module whose output that convolution
            reads, e.g. the previous block); a layer further back gets expanded weights.
        count: inputs shown on each side, ranked by the sum of their spatial weight map
            (``strongest_inputs``).
        steps, size: feature-visualization steps and image side for the units not in
            ``visualizations`` (default size: the model's input side, at most 128).
        visualizations: ``{(layer name, unit): (3, H, W) image}`` already rendered (e.g. by a
            report), reused instead of rendering; names as ``seethrough.layers`` prints them.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
        ...                     nn.Conv2d(4, 2, 3, padding=1))
        >>> figure = circuit_figure(net, "2", 0, count=1, steps=2, size=16)
        >>> sum(1 for axis in figure.axes if axis.images)  # the unit, and 2 x (input, its map)
        5
    """
    from seethrough.represent.kernels import conv_at, input_layer

    name, _ = resolve_layer(model, layer)
    conv_name, _ = conv_at(model, name)
    probe = tuple(getattr(model, "input_size", None) or (3, 224, 224))
    reads = input_layer(model, conv_name, probe)
    inputs_name = reads if inputs_layer is None else resolve_layer(model, inputs_layer)[0]
    if inputs_name is None:
        raise InputError(f"{conv_name} reads the model's input: there are no units to show as "
                         "its inputs")
    weights = circuit_weights(model, inputs_name, conv_name).cpu()
    positive, negative, totals = strongest_inputs(weights, unit, count)
    side = size or min(int(probe[-1]), MAX_SIZE)
    images = _visualizations(model, {name: [unit], inputs_name: positive + negative},
                             dict(visualizations or {}), steps, side)
    maps = {i: weights[unit, i] for i in positive + negative}
    return _draw(name, unit, inputs_name, positive, negative, totals, maps, images,
                 expanded=inputs_name != reads)


def _visualizations(model: nn.Module, wanted: dict[str, list[int]],
                    given: dict[tuple[str, int], torch.Tensor], steps: int,
                    size: int) -> dict[tuple[str, int], torch.Tensor]:
    """Every ``(layer, unit)`` in ``wanted``: from ``given``, else rendered (one call a layer)."""
    from seethrough.featureviz import objectives
    from seethrough.featureviz.render import visualize

    images = dict(given)
    for layer, units in wanted.items():
        missing = [u for u in dict.fromkeys(units) if (layer, u) not in images]
        if missing:
            result = visualize(model, objectives.channel(layer, missing), steps=steps, size=size,
                               progress=False)
            images.update({(layer, u): image for u, image in zip(missing, result.images)})
    return images


def _draw(layer: str, unit: int, inputs_layer: str, positive: list[int], negative: list[int],
          totals: torch.Tensor, maps: dict[int, torch.Tensor],
          images: dict[tuple[str, int], torch.Tensor], expanded: bool) -> Figure:
    from matplotlib import colormaps
    from matplotlib.figure import Figure
    from matplotlib.patches import ConnectionPatch

    from seethrough.results import image_uint8

    rows = max(len(positive), len(negative), 1)
    height = 1.7 * rows + 1.5
    figure = Figure(figsize=(11, height))
    grid = figure.add_gridspec(rows + 1, 7, width_ratios=[1, 1, 0.9, 1.8, 0.9, 1, 1],
                               height_ratios=[1] * rows + [0.12], hspace=0.45, wspace=0.1,
                               left=0.02, right=0.98, top=1 - 0.85 / height, bottom=0.45 / height)
    short_layer, short_inputs = layer.removeprefix("net."), inputs_layer.removeprefix("net.")
    target = figure.add_subplot(grid[:rows, 3])
    target.imshow(image_uint8(images[(layer, unit)]))
    target.set_title(f"{short_layer} unit {unit}", fontsize=10, fontweight="bold")
    target.set_axis_off()
    bound = max((float(m.abs().max()) for m in maps.values()), default=1.0) or 1.0
    widest = max((abs(float(totals[i])) for i in maps), default=1.0) or 1.0
    cmap = colormaps[CMAP]
    shown = None
    for side, indices in ((0, positive), (1, negative)):
        for row, index in enumerate(indices):
            viz_column, map_column = (0, 1) if side == 0 else (6, 5)
            viz = figure.add_subplot(grid[row, viz_column])
            viz.imshow(image_uint8(images[(inputs_layer, index)]))
            viz.set_title(f"{short_inputs} unit {index}", fontsize=8)
            viz.set_axis_off()
            weight = figure.add_subplot(grid[row, map_column])
            shown = weight.imshow(maps[index].numpy(), cmap=CMAP, vmin=-bound, vmax=bound,
                                  interpolation="nearest")
            total = float(totals[index])
            weight.set_title(f"sum {total:+.3g}", fontsize=8)
            weight.set_xticks([])
            weight.set_yticks([])
            figure.add_artist(ConnectionPatch(
                xyA=(1.0 if side == 0 else 0.0, 0.5), coordsA="axes fraction", axesA=weight,
                xyB=(0.0 if side == 0 else 1.0, 0.5), coordsB="axes fraction", axesB=target,
                arrowstyle="-|>", mutation_scale=12, shrinkA=4, shrinkB=4,
                linewidth=0.8 + 5 * abs(total) / widest,
                color=cmap(0.85 if total > 0 else 0.15)))
    for columns, text in ((slice(0, 2), "excite"), (slice(5, 7), "inhibit")):
        box = grid[0, columns].get_position(figure)
        figure.text((box.x0 + box.x1) / 2, box.y1 + 0.3 / height, text, ha="center",
                    fontsize=10, fontweight="bold", color=cmap(0.9 if text == "excite" else 0.1))
    how = "expanded weights" if expanded else "kernel"
    figure.suptitle(f"{short_layer} unit {unit} and its strongest inputs in {short_inputs}: "
                    f"each input's {how} to the unit, ranked by its sum (arrow width = |sum|)",
                    fontsize=9)
    if shown is not None:
        bar = figure.colorbar(shown, cax=figure.add_subplot(grid[rows, 2:5]),
                              orientation="horizontal")
        bar.set_label(f"weight from {short_inputs} to {short_layer} (same scale for every map)",
                      fontsize=8)
        bar.ax.tick_params(labelsize=7)
    return figure

"""What the representation views look at when not told: layers for a dimension profile, the
output layer, the classes a model predicts, the units that respond most consistently.

Example:
    >>> import torchvision
    >>> model = torchvision.models.resnet18(num_classes=3).eval()
    >>> profile_layers(model, (3, 64, 64), 3)
    {'conv1': 'none', 'layer2': 'none', 'layer4': 'none', 'layer4 (mean)': 'mean', 'fc': 'none'}
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from seethrough.core import model_device, run_scope
from seethrough.core.layer_table import layers, layers_by_resolution, spread, stage_layers

#: flattened layers larger than this are left out of a dimension profile (memory: N x D)
MAX_FLAT = 2 ** 17
#: the suffix of a profile key whose layer is averaged over positions
MEAN = " (mean)"


def output_layer(model: nn.Module, shape: tuple[int, ...]) -> str | None:
    """The last module called once with a 2-D output (the logits, usually)."""
    rows = [row for row in layers(model, shape).rows
            if row.output_shape and len(row.output_shape) == 2 and row.calls <= 1]
    return rows[-1].name if rows else None


def profile_layers(model: nn.Module, shape: tuple[int, ...], count: int) -> dict[str, str]:
    """``{key: pool}`` for a dimension profile: ``count`` stages spread over the network, each
    small enough to flatten whole (``MAX_FLAT``), the last stage averaged over positions (key
    ``"<layer> (mean)"``) and the output."""
    table = {row.name: row.output_shape for row in layers(model, shape).rows}
    stages = stage_layers(model, shape) or layers_by_resolution(model, shape)
    small = [s for s in stages if table.get(s) and int(np.prod(table[s][1:])) <= MAX_FLAT]
    chosen = {layer: "none" for layer in spread(small, count)}
    if stages:
        chosen[stages[-1] + MEAN] = "mean"
    output = output_layer(model, shape)
    if output is not None:
        chosen[output] = "none"
    return chosen


def predicted_classes(model: nn.Module, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """The class the model predicts for each image ``(N,)``."""
    with torch.no_grad(), run_scope(model):
        return torch.cat([model(chunk.to(model_device(model))).argmax(1).cpu()
                          for chunk in images.split(batch_size)])


def consistent_units(values: torch.Tensor, count: int) -> list[int]:
    """Rows of ``values`` (units x top-k activations) whose k-th best value is highest: units
    that respond strongly to many images, not to one outlier."""
    return values[:, -1].argsort(descending=True, stable=True)[:count].tolist()

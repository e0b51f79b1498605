"""List a model's layers with their type, output shape and parameter count (one dry run).

Example:
    >>> from torch import nn
    >>> table = layers(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()), (3, 16, 16))
    >>> [(row.name, row.output_shape) for row in table.rows]
    [('0', (1, 8, 14, 14)), ('1', (1, 8, 14, 14))]
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from seethrough.core.device import model_device
from seethrough.core.scope import run_scope
from seethrough.results import Result
from seethrough.trace import Trace


@dataclass
class LayerRow:
    name: str
    type: str
    output_shape: tuple | None
    parameters: int
    depth: int
    calls: int = 0


@dataclass
class LayerTable(Result):
    rows: list[LayerRow] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [row.name for row in self.rows]

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame([row.__dict__ for row in self.rows])

    def __str__(self) -> str:
        width = max([len(r.name) + 2 * r.depth for r in self.rows] + [5])
        lines = [f"{'layer':<{width}}  {'type':<24} {'output shape':<22} {'params':>10}"]
        for row in self.rows:
            shape = "x".join(map(str, row.output_shape[1:])) if row.output_shape else "-"
            if row.calls > 1:
                shape += f" (x{row.calls} calls)"
            name = "  " * row.depth + row.name
            lines.append(f"{name:<{width}}  {row.type:<24} {shape:<22} {row.parameters:>10,}")
        return "\n".join(lines)

    def plot(self):
        """Parameters of each top-level layer (the first 40), on a log scale when they vary."""
        from seethrough.results import bar_figure

        top = [row for row in self.rows if row.depth == 0][:40]
        figure = bar_figure([row.name for row in top], [row.parameters for row in top],
                            ylabel="parameters", title="parameters per top-level layer")
        counts = [row.parameters for row in top if row.parameters > 0]
        if counts and max(counts) > 100 * min(counts):
            figure.axes[0].set_yscale("symlog")
        return figure

    def _title(self) -> str:
        return f"LayerTable: {len(self.rows)} layers"

    def _settings(self) -> dict:
        return {"rows": [row.__dict__ for row in self.rows]}

    @classmethod
    def _from_saved(cls, settings: dict, tensors: dict[str, torch.Tensor]) -> LayerTable:
        rows = []
        for row in settings["rows"]:
            shape = row.get("output_shape")
            rows.append(LayerRow(**{**row, "output_shape": None if shape is None else tuple(shape)}))
        return cls(rows)


def _shape(output) -> tuple | None:
    if isinstance(output, torch.Tensor):
        return tuple(output.shape)
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return tuple(output[0].shape)
    return None


def layers(model: nn.Module, input_shape: tuple[int, ...] | None = None) -> LayerTable:
    """Every named module of ``model`` with type, output shape (for one image) and parameters.

    ``input_shape`` is (C, H, W); by default the model's own ``input_size`` or (3, 224, 224).
    """
    input_shape = tuple(input_shape or getattr(model, "input_size", (3, 224, 224)))
    named = [(name, module) for name, module in model.named_modules() if name]
    shapes: dict[str, tuple | None] = {}
    calls: dict[str, int] = {}

    def hook_for(name):
        def hook(module, inputs, output):
            calls[name] = calls.get(name, 0) + 1
            shapes.setdefault(name, _shape(output))

        return hook

    with run_scope(model, mode="eval"), torch.no_grad():
        for name, module in named:
            module.register_forward_hook(hook_for(name))
        model(torch.zeros(1, *input_shape, device=model_device(model)))
    rows = [
        LayerRow(
            name=name,
            type=type(module).__name__,
            output_shape=shapes.get(name),
            parameters=sum(p.numel() for p in module.parameters()),
            depth=name.count("."),
            calls=calls.get(name, 0),
        )
        for name, module in named
    ]
    return LayerTable(rows)


def stage_layers(model: nn.Module, input_shape: tuple[int, int, int] | None = None) -> list[str]:
    """Names of the children of the container holding the most 4D-output children, in run order.

    For MobileNetV2 these are ``net.features.0`` ... ``net.features.18``; for a ResNet
    ``conv1`` ... ``layer4`` (without the ReLU/pool/norm modules, which add nothing new).
    """
    input_shape = input_shape or tuple(getattr(model, "input_size", (3, 224, 224)))
    best: list[str] = []
    for name, container in model.named_modules():
        children = [f"{name}.{child}" if name else child for child, module in container.named_children()
                    if any(isinstance(m, nn.Conv2d) for m in module.modules())]
        if len(children) > len(best):
            best = children
    if not best:
        return []
    with torch.no_grad(), run_scope(model, mode="eval"), Trace(model, best, stop=True) as trace:
        model(torch.rand((1,) + tuple(input_shape), device=model_device(model)))
    return [name for name in best if trace[name].outputs and trace[name].output.dim() == 4]


def spread(names: list[str], count: int, *, upto: float = 1.0) -> list[str]:
    """``count`` names evenly spread over the first ``upto`` fraction of ``names``."""
    pool = names[: max(1, round(len(names) * upto))]
    if count >= len(pool):
        return pool
    step = (len(pool) - 1) / max(1, count - 1)
    return [pool[round(i * step)] for i in range(count)]


def layers_by_resolution(model: nn.Module, input_size: tuple[int, int, int] | None = None, *,
                         count: int | None = None) -> list[str]:
    """One layer per spatial resolution below the input's (1x1 left out), shallow to deep: the
    last of the network's stages (``stage_layers``) at that resolution, else the last module;
    ``count`` keeps that many, spread evenly, the deepest included.

    Example:
        >>> import torchvision
        >>> layers_by_resolution(torchvision.models.resnet18(), (3, 64, 64))
        ['conv1', 'layer1', 'layer2', 'layer3', 'layer4']
        >>> layers_by_resolution(torchvision.models.resnet18(), (3, 64, 64), count=3)
        ['conv1', 'layer2', 'layer4']
    """
    shape = tuple(input_size or getattr(model, "input_size", (3, 224, 224)))
    table = {row.name: row.output_shape for row in layers(model, shape).rows}
    stages = stage_layers(model, shape) or list(table)
    chosen: dict[tuple, str] = {}
    for name in stages:
        out = table.get(name)
        if out and len(out) == 4 and out[-2:] != shape[-2:] and out[-2:] != (1, 1):
            chosen.pop(out[-2:], None)  # keep the deepest, in network order
            chosen[out[-2:]] = name
    names = list(chosen.values())
    if count is None or count >= len(names):
        return names
    return spread(names[::-1], count)[::-1]

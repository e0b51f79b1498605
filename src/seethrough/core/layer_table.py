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


@dataclass
class LayerRow:
    name: str
    type: str
    output_shape: tuple | None
    parameters: int
    depth: int
    calls: int = 0


@dataclass
class LayerTable:
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

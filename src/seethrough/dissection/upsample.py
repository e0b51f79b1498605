"""Upsampling activation maps to the label resolution, as separable interpolation matrices.

Two modes:

* ``"bilinear"`` — a plain bilinear resize with half-pixel centres (NetDissect-Lite's
  ``imresize(..., mode="F")``, PyTorch ``interpolate(align_corners=False)``).
* ``"receptive_field"`` — the original Network Dissection: activation ``(i, j)`` sits at the
  centre of its receptive field, ``offset + (size - 1) / 2 + step * i`` in image pixels; labels
  are interpolated linearly between the centres and held constant beyond the outermost ones.
  The field map (offset, size, step) is composed from the convolutions and poolings on the
  path to the layer (``receptive_field``).

``upsample(acts, rows, cols)`` computes ``rows @ acts @ cols.T``.

Example:
    >>> import torch
    >>> m = bilinear_matrix(2, 4)
    >>> (m @ torch.tensor([0.0, 1.0], dtype=torch.float64)).tolist()
    [0.0, 0.25, 0.75, 1.0]
"""
from __future__ import annotations

import torch
from torch import nn

from seethrough.core import model_device
from seethrough.errors import InputError
from seethrough.trace import Trace, resolve_layer


def _linear_matrix(position: torch.Tensor, source: int) -> torch.Tensor:
    """Rows of linear-interpolation weights at fractional source indices (clamped to range)."""
    position = position.clamp(0, source - 1)
    low = position.floor().long().clamp(max=source - 1)
    high = (low + 1).clamp(max=source - 1)
    frac = position - low
    matrix = torch.zeros(len(position), source, dtype=torch.float64)
    rows = torch.arange(len(position))
    matrix.index_put_((rows, low), 1 - frac, accumulate=True)
    matrix.index_put_((rows, high), frac, accumulate=True)
    return matrix


def bilinear_matrix(source: int, target: int) -> torch.Tensor:
    """(target, source) weights of a half-pixel-centred linear resize."""
    position = (torch.arange(target, dtype=torch.float64) + 0.5) * source / target - 0.5
    return _linear_matrix(position, source)


def anchored_matrix(source: int, target: int, *, offset: float, step: float,
                    image: int) -> torch.Tensor:
    """(target, source) weights with activation ``i`` at image pixel ``offset + step * i``.

    ``offset`` is the centre of the first receptive field in pixel indices of an image of
    ``image`` pixels; label pixel ``q`` of ``target`` is at image position
    ``(q + 0.5) * image / target - 0.5``.
    """
    where = (torch.arange(target, dtype=torch.float64) + 0.5) * image / target - 0.5
    return _linear_matrix((where - offset) / step, source)


def upsample(acts: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Resize ``(..., h, w)`` maps to ``(..., H, W)`` with ``rows`` (H, h) and ``cols`` (W, w)."""
    return rows @ (acts @ cols.T)


_GEOMETRIC = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)


def _pair(value) -> tuple[int, int]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def receptive_field(model: nn.Module, layer: str, input_size: tuple[int, int, int]
                    ) -> tuple[tuple[float, float], tuple[int, int], tuple[int, int]]:
    """Field map ``(centre of the first unit, size, step)`` per axis (y, x) of a layer's output.

    Composes the convolutions and poolings that run before the layer's output (in module
    order), keeping only those that act on the resolution reached so far, so side branches
    (a ResNet's 1x1 downsample) are not counted twice. Raises ``InputError`` when the composed
    map does not reproduce the layer's output size.
    """

    name, _ = resolve_layer(model, layer)
    order = list(model.named_modules())
    end = max(i for i, (n, _) in enumerate(order) if n == name or n.startswith(name + "."))
    candidates = [n for n, m in order[: end + 1] if isinstance(m, _GEOMETRIC)]
    probe = torch.zeros(1, *input_size, device=model_device(model))
    with torch.no_grad(), Trace(model, [*candidates, name], retain_input=True,
                                stop=True) as trace:
        model(probe)
    out_shape = trace[name].output.shape
    if len(out_shape) != 4:
        raise InputError(f"layer {layer!r} has no spatial output {tuple(out_shape)}: use a conv layer")
    offset, size, step = [0.0, 0.0], [1, 1], [1, 1]
    current = list(input_size[1:])
    for module_name in candidates:
        record, module = trace.records[module_name], dict(order)[module_name]
        if not record.inputs or list(record.inputs[0].shape[-2:]) != current:
            continue
        kernel, stride = _pair(module.kernel_size), _pair(module.stride or module.kernel_size)
        padding = _pair(module.padding)
        dilation = _pair(getattr(module, "dilation", 1))
        if isinstance(padding[0], str):
            padding = tuple((d * (k - 1)) // 2 for k, d in zip(kernel, dilation))
        for axis in range(2):
            effective = dilation[axis] * (kernel[axis] - 1) + 1
            offset[axis] += (-padding[axis]) * step[axis]
            size[axis] += (effective - 1) * step[axis]
            step[axis] *= stride[axis]
        current = list(record.outputs[0].shape[-2:]) if record.outputs else current
    if current != list(out_shape[-2:]):
        raise InputError(
            f"cannot infer the receptive fields of layer {layer!r} from its convolutions and "
            "poolings; use upsample='bilinear'"
        )
    centre = tuple(offset[a] + (size[a] - 1) / 2 for a in range(2))
    return centre, tuple(size), tuple(step)

"""True receptive fields: which image pixels each position of a layer's output can see.

``field_map(model, layer)`` reads the model's ``torch.fx`` graph and composes the geometry of
every convolution and pooling on every path from the image to the layer: residual sums and
concatenations take the hull of their branches, and a branch pooled over the whole image
(squeeze-and-excitation gating) makes every position see the whole image. Where the graph cannot
be traced or holds an op it cannot map (upsampling, an untraceable module), it measures the
fields instead, as the gradient support of a linear, positive copy of the model.

Position ``i`` of an axis sees pixels ``start + step * i`` to ``start + step * i + size - 1``,
clipped to the part of the image the layer sees at all (``seen``, the image unless unpadded
convolutions or poolings drop border pixels). The fields are those of the model in eval mode.

Example:
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.MaxPool2d(2), nn.Conv2d(4, 4, 3))
    >>> fields = field_map(net, "2", input_size=(3, 32, 32))
    >>> fields.start, fields.size, fields.step, fields.output_size
    ((-1, -1), (8, 8), (2, 2), (14, 14))
    >>> fields.box((0, 0)), receptive_field(net, "2", (13, 13), input_size=(3, 32, 32))
    ((0, 0, 7, 7), (25, 25, 32, 32))
"""
from __future__ import annotations

import copy
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import reduce
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata
from torch.overrides import TorchFunctionMode

from seethrough.core import model_device, run_scope
from seethrough.errors import InputError
from seethrough.preserve import HOOK_DICTS
from seethrough.trace import Trace, capture, resolve_layer

METHODS = ("auto", "fx", "gradient")
Pair = tuple[int, int]


@dataclass(frozen=True)
class FieldMap:
    """The receptive fields of a layer's output grid, per axis ``(y, x)``.

    Attributes:
        start, size, step: position ``i`` sees pixels ``[start + step * i, ... + size)``.
        input_size: ``(H, W)`` of the image; output_size: ``(h, w)`` of the layer.
        seen: per axis the pixels ``[first, end)`` that reach the layer at all; boxes are clipped
            to them.
        whole: every position sees the whole image (global pooling, gating, or huge fields);
            ``box`` then gives the whole image.
    """

    start: Pair
    size: Pair
    step: Pair
    input_size: Pair
    output_size: Pair
    seen: tuple[Pair, Pair]
    whole: bool

    def box(self, position: Sequence[int]) -> tuple[int, int, int, int]:
        """``(top, left, bottom, right)`` in pixels, bottom and right exclusive."""
        row, col = self._check(position)
        if self.whole:
            return 0, 0, *self.input_size
        (top, bottom), (left, right) = (self._span(axis, i) for axis, i in enumerate((row, col)))
        return top, left, bottom, right

    def centre(self, position: Sequence[int]) -> tuple[float, float]:
        """The centre of the field in pixel indices, before clipping."""
        return tuple(self.start[axis] + self.step[axis] * i + (self.size[axis] - 1) / 2
                     for axis, i in enumerate(self._check(position)))

    def _span(self, axis: int, index: int) -> Pair:
        first, end = self.seen[axis]
        low = self.start[axis] + self.step[axis] * index
        return max(first, low), min(end, low + self.size[axis])

    def _check(self, position: Sequence[int]) -> Pair:
        h, w = self.output_size
        try:
            row, col = (operator.index(i) for i in position)
        except (TypeError, ValueError):
            row = col = -1
        if not (0 <= row < h and 0 <= col < w):
            raise InputError(f"position {position!r} is not in the layer's {h}x{w} output: "
                             f"pass (row, col) with 0 <= row < {h} and 0 <= col < {w}")
        return row, col


def field_map(model: nn.Module, layer: str, input_size: Sequence[int] | None = None, *,
              method: str = "auto") -> FieldMap:
    """The receptive fields of ``layer``'s output for images of ``input_size`` ``(C, H, W)``.

    ``input_size`` defaults to the model's own (``model.input_size``), else ``(3, 224, 224)``.
    ``method``: ``"fx"`` composes the graph's geometry, ``"gradient"`` measures the fields,
    ``"auto"`` composes and measures where composing fails. The model is left as it was.
    """
    if method not in METHODS:
        raise InputError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    size = _input_size(model, input_size)
    name, _ = resolve_layer(model, layer)
    output_size = _output_size(model, name, size)
    if method != "gradient":
        try:
            return _composed_map(model, name, size, output_size)
        except _NotMapped as reason:
            if method == "fx":
                raise InputError(f"cannot compose the receptive fields of layer {name!r} from the "
                                 f"graph ({reason}): use method='gradient'") from None
    return _measured_map(model, name, size, output_size)


def receptive_field(model: nn.Module, layer: str, position: Sequence[int],
                    input_size: Sequence[int] | None = None, *,
                    method: str = "auto") -> tuple[int, int, int, int]:
    """``(top, left, bottom, right)`` pixels that ``layer``'s output ``position`` can see."""
    return field_map(model, layer, input_size, method=method).box(position)


def _input_size(model: nn.Module, input_size: Sequence[int] | None) -> tuple[int, int, int]:
    size = tuple(input_size or getattr(model, "input_size", (3, 224, 224)))
    if len(size) != 3 or not all(isinstance(n, int) and n > 0 for n in size):
        raise InputError(f"input_size must be (channels, height, width), not {size}")
    return size


def _output_size(model: nn.Module, name: str, input_size: tuple[int, int, int]) -> Pair:
    probe = torch.zeros(1, *input_size, device=model_device(model))
    with run_scope(model, mode="eval"):
        shape = capture(model, probe, name)[name].output.shape
    if len(shape) != 4:
        raise InputError(f"layer {name!r} has no spatial output (shape {tuple(shape)}): "
                         "pick a convolutional layer")
    return shape[2], shape[3]


# ---- composing the graph's geometry ------------------------------------------------------


class _NotMapped(Exception):
    """The graph cannot give the fields; the message says why."""


@dataclass(frozen=True)
class _Axis:
    """One axis: output position ``i`` of ``count`` sees ``[start + step * i, ... + size)``
    within ``[first, end)``."""

    start: int
    size: int
    step: int
    count: int
    first: int
    end: int

    def window(self, window: _Window, count: int) -> _Axis:
        """After a convolution or pooling with ``count`` outputs."""
        start = self.start - self.step * window.before
        size = self.size + self.step * window.dilation * (window.kernel - 1)
        step = self.step * window.stride
        last = start + step * (count - 1) + size
        return _Axis(start, size, step, count, max(self.first, start), min(self.end, last))

    def pooled(self) -> _Axis:
        """All positions in one."""
        return replace(self, size=self.step * (self.count - 1) + self.size, count=1)

    def covers(self, extent: int) -> bool:
        """Every position sees ``[0, extent)``."""
        last = self.start + self.step * (self.count - 1)
        return (self.first, self.end) == (0, extent) and last <= 0 and self.start + self.size >= extent


def _hull(a: _Axis, b: _Axis) -> _Axis | None:
    if a.count != b.count or (a.step != b.step and a.count > 1):
        return None
    start, end = min(a.start, b.start), max(a.start + a.size, b.start + b.size)
    return _Axis(start, end - start, a.step, a.count, min(a.first, b.first), max(a.end, b.end))


@dataclass(frozen=True)
class _Field:
    """The fields of a tensor whose last two dimensions are the grid ``count``."""

    axes: tuple[_Axis, _Axis]
    whole: bool = False

    @property
    def count(self) -> Pair:
        return self.axes[0].count, self.axes[1].count

    def covers(self, image: Pair) -> bool:
        return all(axis.covers(extent) for axis, extent in zip(self.axes, image))


@dataclass(frozen=True)
class _Opaque:
    """A tensor whose fields the graph cannot give; ``why`` names the op."""

    why: str


Value = _Field | _Opaque | None  # None: a constant or a size, not a function of the image


class _Window(NamedTuple):
    """A convolution or pooling along one axis."""

    kernel: int
    stride: int
    before: int
    total: int
    dilation: int
    ceil: bool

    def count(self, n: int) -> int:
        """Outputs for ``n`` inputs, as PyTorch computes them."""
        span = n + self.total - self.dilation * (self.kernel - 1) - 1
        if not self.ceil:
            return span // self.stride + 1
        count = -(-span // self.stride) + 1
        return count - 1 if (count - 1) * self.stride >= n + self.before else count


def _pair(value) -> Pair:
    values = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(values) != 2 or not all(isinstance(v, int) for v in values):
        raise _NotMapped(f"window parameter {value!r} is not two whole numbers")
    return values


def _windows(kernel, stride, padding, dilation, ceil) -> tuple[_Window, _Window]:
    kernel, dilation = _pair(kernel), _pair(dilation)
    stride = _pair(stride) if stride not in (None, (), []) else kernel
    if padding in ("valid", "same"):
        total = [d * (k - 1) if padding == "same" else 0 for k, d in zip(kernel, dilation)]
        before = [t // 2 for t in total]
    else:
        before = _pair(padding)
        total = [2 * p for p in before]
    return tuple(_Window(*values, bool(ceil))
                 for values in zip(kernel, stride, before, total, dilation))


_SIGNATURES = {  # positional parameters of the functional forms
    "conv2d": ("input", "weight", "bias", "stride", "padding", "dilation"),
    "max_pool2d": ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode",
                   "return_indices"),
    "avg_pool2d": ("input", "kernel_size", "stride", "padding", "ceil_mode"),
}
_NORM_SIGNATURES = {
    "batch_norm": ("input", "running_mean", "running_var", "weight", "bias", "training"),
    "instance_norm": ("input", "running_mean", "running_var", "weight", "bias",
                      "use_input_stats"),
    "layer_norm": ("input", "normalized_shape"),
    "group_norm": ("input", "num_groups"),
}


def _bind(args: Sequence, kwargs: dict, names: Sequence[str]) -> dict:
    return {**dict(zip(names, args)), **kwargs}


def _node_windows(node: fx.Node, op: str, modules: dict) -> tuple[_Window, _Window]:
    if node.op == "call_module":
        module = modules[node.target]
        if getattr(module, "padding_mode", "zeros") != "zeros":
            raise _NotMapped(f"{module.padding_mode!r} padding")
        return _windows(module.kernel_size, module.stride, module.padding,
                        getattr(module, "dilation", 1), getattr(module, "ceil_mode", False))
    values = _bind(node.args, node.kwargs, _SIGNATURES[op])
    kernel = values.get("kernel_size")
    if kernel is None:
        kernel = tuple(values["weight"].meta["tensor_meta"].shape[-2:])
    return _windows(kernel, values.get("stride", 1 if op == "conv2d" else None),
                    values.get("padding", 0), values.get("dilation", 1),
                    values.get("ceil_mode", False))


_POINTWISE = frozenset({
    # activations, dropout and normalization with fixed statistics ("_": in place)
    "relu", "relu_", "relu6", "hardtanh", "hardtanh_", "leaky_relu", "leaky_relu_", "elu",
    "elu_", "selu", "celu", "gelu", "silu", "mish", "hardswish", "hardsigmoid", "sigmoid",
    "sigmoid_", "tanh", "tanh_", "softplus", "prelu", "threshold", "clamp", "clamp_", "clip",
    "clamp_min", "dropout", "dropout2d", "batch_norm", "stochastic_depth",
    # arithmetic with tensors or scalars (operators and functions)
    "add", "add_", "iadd", "sub", "sub_", "isub", "rsub", "mul", "mul_", "imul", "div", "div_",
    "truediv", "itruediv", "neg", "pos", "abs", "exp", "sqrt", "pow", "maximum", "minimum",
    # copies, casts and reshapes (the last two dimensions must stay the grid: checked)
    "contiguous", "clone", "detach", "float", "double", "half", "to", "type_as", "view",
    "reshape", "view_as", "reshape_as", "flatten", "unflatten", "squeeze", "unsqueeze",
    "expand", "expand_as",
})
_FIRST_ONLY = frozenset({"to", "type_as", "view_as", "reshape_as", "expand_as"})
_POINTWISE_MODULES = (
    nn.BatchNorm2d, nn.SyncBatchNorm, nn.Identity, nn.Flatten, nn.Unflatten, nn.Softmax2d,
    nn.ReLU, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.Threshold,
    nn.Dropout, nn.Dropout2d, nn.AlphaDropout, nn.FeatureAlphaDropout,
)
_MODULE_OPS = (
    (nn.Conv2d, "conv2d"), (nn.MaxPool2d, "max_pool2d"), (nn.AvgPool2d, "avg_pool2d"),
    ((nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d), "adaptive_avg_pool2d"),
    (_POINTWISE_MODULES, "relu"),
)
#: ops along a dimension: (position, keyword, default) of the dimension argument
_ALONG = {"cat": (1, "dim", 0), "concat": (1, "dim", 0), "split": (2, "dim", 0),
          "chunk": (2, "dim", 0), "unbind": (1, "dim", 0), "softmax": (1, "dim", None),
          "log_softmax": (1, "dim", None)}
_REDUCTIONS = frozenset({"mean", "sum", "amax", "amin", "std", "var"})


def _op(node: fx.Node, modules: dict) -> str:
    """The op's name: a torch function's or tensor method's; for a module, its functional form."""
    if node.op == "call_module":
        module = modules[node.target]
        return next((op for kinds, op in _MODULE_OPS if isinstance(module, kinds)),
                    f"module {node.target} ({type(module).__name__})")
    if node.op == "call_method":
        return node.target
    home = getattr(node.target, "__module__", None) or ""
    name = getattr(node.target, "__name__", repr(node.target))
    trusted = home.startswith(("torch", "_operator"))  # torch, torchvision and operators
    return name if trusted else f"function {name}"


def _arg(node: fx.Node, position: int, keyword: str, default=None):
    return node.args[position] if len(node.args) > position else node.kwargs.get(keyword, default)


def _grid(node: fx.Node) -> tuple[int, ...] | None:
    """The last two dimensions of a tensor output (``()`` below two); None for a tuple."""
    meta = node.meta["tensor_meta"]
    if not isinstance(meta, TensorMetadata):
        return None
    return tuple(meta.shape[-2:]) if len(meta.shape) >= 2 else ()


def _ndim(node: fx.Node) -> int:
    """The number of dimensions of the node's first tensor input."""
    for arg in node.all_input_nodes:
        meta = arg.meta.get("tensor_meta")
        if isinstance(meta, TensorMetadata):
            return len(meta.shape)
    raise _NotMapped("it has no tensor input")


def _spatial(dims, ndim: int) -> set[int]:
    """Which of the last two dimensions ``dims`` (an int, a sequence, or None: all) names."""
    if dims in (None, (), []):
        dims = range(ndim)
    elif not isinstance(dims, (tuple, list)):
        dims = [dims]
    if not all(isinstance(d, int) for d in dims):
        raise _NotMapped(f"dimension {dims!r} is computed")
    return {d % ndim for d in dims} & {ndim - 2, ndim - 1}


def _keeps_grid(index, ndim: int) -> bool:
    """An index of ints and slices that leaves the last two dimensions whole."""
    items = index if isinstance(index, tuple) else (index,)
    if not all(item is Ellipsis or isinstance(item, (int, slice)) for item in items):
        return False
    if any(item is Ellipsis for item in items):
        tail = items[[item is Ellipsis for item in items].index(True) + 1:]
    else:
        tail = items[ndim - 2:]
    return all(item == slice(None) for item in tail)


class _Composer:
    """The fields of every node of a traced graph, in graph order."""

    def __init__(self, graph_module: fx.GraphModule, image: Pair):
        self.modules = dict(graph_module.named_modules())
        self.image = image
        self.env: dict[fx.Node, Value] = {}
        self.rules: dict[str, Callable[[fx.Node, list[_Field]], Value]] = {
            **dict.fromkeys(_POINTWISE, self._pointwise),
            **dict.fromkeys(_SIGNATURES, self._window),
            **dict.fromkeys(_ALONG, self._along),
            **dict.fromkeys(_REDUCTIONS, self._reduction),
            "adaptive_avg_pool2d": self._adaptive, "adaptive_max_pool2d": self._adaptive,
            "getitem": self._getitem, "transpose": self._transpose, "permute": self._permute,
        }

    def run(self, graph: fx.Graph, last: fx.Node) -> Value:
        """The value of ``last``; nodes after it are not visited."""
        axes = tuple(_Axis(0, 1, 1, n, 0, n) for n in self.image)
        first = next(node for node in graph.nodes if node.op == "placeholder")
        for node in graph.nodes:
            value = _Field(axes) if node is first else self._value(node)
            self.env[node] = value
            if _in_place(node):
                self.env[node.args[0]] = value  # later readers see the changed tensor
            if node is last:
                return value
        raise _NotMapped("the layer's node is not in the graph")

    def _value(self, node: fx.Node) -> Value:
        if node.op in ("placeholder", "get_attr", "output") or "tensor_meta" not in node.meta:
            return None
        op = _op(node, self.modules)
        inputs = node.args[:1] if op in _FIRST_ONLY else (node.args, node.kwargs)
        fields = [self.env[arg] for arg in _nodes(inputs) if self.env[arg] is not None]
        if not fields:
            return None
        opaque = next((f for f in fields if isinstance(f, _Opaque)), None)
        if opaque is not None:
            return opaque
        if all(f.count == (1, 1) for f in fields):  # everything pooled: any op keeps it pooled
            return self._merge(fields)
        rule = self.rules.get(op)
        if rule is None:
            return _Opaque(f"{op} has no receptive-field rule")
        try:
            return rule(node, fields) or _Opaque(f"{op} joins maps of different strides")
        except _NotMapped as reason:
            return _Opaque(f"{op}: {reason}")

    @staticmethod
    def _merge(fields: list[_Field]) -> _Field | None:
        axes = [reduce(lambda a, b: a and _hull(a, b), column)
                for column in zip(*(f.axes for f in fields))]
        return _Field(tuple(axes), any(f.whole for f in fields)) if all(axes) else None

    def _pointwise(self, node: fx.Node, fields: list[_Field]) -> _Field | None:
        """Elementwise, with broadcasting: the hull of the inputs' fields."""
        grid = _grid(node)
        if grid is None:  # a tuple of tensors: the parts of a split
            grid = fields[0].count
        local = [f for f in fields if f.count == grid]
        spread = [f for f in fields if f.count != grid]
        if not local or any(f.count != (1, 1) or not f.covers(self.image) for f in spread):
            raise _NotMapped(f"output grid {grid} differs from the inputs'")
        merged = self._merge(local)
        return merged and replace(merged, whole=merged.whole or bool(spread))

    def _window(self, node: fx.Node, fields: list[_Field]) -> _Field:
        field = _single(fields)
        windows = _node_windows(node, _op(node, self.modules), self.modules)
        grid = _grid(node)
        if grid is None:
            raise _NotMapped("it returns indices too")
        if any(w.count(n) != m for w, n, m in zip(windows, field.count, grid)):
            raise _NotMapped(f"the window does not give the {grid} output")
        return _Field(tuple(axis.window(w, m) for axis, w, m in zip(field.axes, windows, grid)),
                      field.whole)

    def _adaptive(self, node: fx.Node, fields: list[_Field]) -> _Field:
        field = _single(fields)
        if _grid(node) == field.count:
            return field
        if _grid(node) == (1, 1):
            return replace(field, axes=tuple(axis.pooled() for axis in field.axes))
        raise _NotMapped(f"adaptive pooling to {_grid(node)}")

    def _reduction(self, node: fx.Node, fields: list[_Field]) -> _Field | None:
        spatial = _spatial(_arg(node, 1, "dim"), _ndim(node))
        if not spatial:
            return self._pointwise(node, fields)
        if len(spatial) == 1:
            raise _NotMapped("reduces one spatial dimension")
        field = _single(fields)
        return replace(field, axes=tuple(axis.pooled() for axis in field.axes))

    def _along(self, node: fx.Node, fields: list[_Field]) -> _Field | None:
        if _spatial(_arg(node, *_ALONG[_op(node, self.modules)]), _ndim(node)):
            raise _NotMapped("acts along a spatial dimension")
        return self._pointwise(node, fields)

    def _transpose(self, node: fx.Node, fields: list[_Field]) -> _Field | None:
        if _spatial([_arg(node, 1, "dim0"), _arg(node, 2, "dim1")], _ndim(node)):
            raise _NotMapped("moves a spatial dimension")
        return self._pointwise(node, fields)

    def _permute(self, node: fx.Node, fields: list[_Field]) -> _Field | None:
        dims = node.args[1:] if len(node.args) > 2 else _arg(node, 1, "dims")
        ndim = _ndim(node)
        if not all(isinstance(d, int) for d in dims):
            raise _NotMapped(f"dimensions {dims!r} are computed")
        if [d % ndim for d in dims[-2:]] != [ndim - 2, ndim - 1]:
            raise _NotMapped("moves a spatial dimension")
        return self._pointwise(node, fields)

    def _getitem(self, node: fx.Node, fields: list[_Field]) -> _Field | None:
        source, index = node.args
        if not isinstance(source.meta.get("tensor_meta"), TensorMetadata):
            return fields[0]  # an item of a tuple, such as one part of a split
        if not _keeps_grid(index, _ndim(node)):
            raise _NotMapped("indexes a spatial dimension")
        return self._pointwise(node, fields)


def _single(fields: list[_Field]) -> _Field:
    if len(fields) != 1:
        raise _NotMapped("its parameters are computed from the image")
    return fields[0]


_IN_PLACE_OPERATORS = frozenset({"iadd", "isub", "imul", "itruediv"})


def _in_place(node: fx.Node) -> bool:
    """A tensor method or operator that changes its first argument (``x.add_(y)``, ``x += y``)."""
    if node.op not in ("call_method", "call_function") or not node.args:
        return False
    name = node.target if node.op == "call_method" else getattr(node.target, "__name__", "")
    in_place = (name.endswith("_") and not name.startswith("_")) or name in _IN_PLACE_OPERATORS
    return in_place and isinstance(node.args[0], fx.Node)


def _nodes(args) -> list[fx.Node]:
    found: list[fx.Node] = []
    fx.node.map_arg(args, found.append)
    return found


class _Reached(Exception):
    """The shape run got to the layer's node."""


class _ShapesUpTo(ShapeProp):
    """Shapes of every node up to ``last``; the rest of the network does not run."""

    def __init__(self, module: fx.GraphModule, last: fx.Node):
        super().__init__(module)
        self.last = last

    def run_node(self, node: fx.Node):
        result = super().run_node(node)
        if node is self.last:
            raise _Reached
        return result


def _layer_node(graph: fx.Graph, name: str) -> fx.Node:
    """The last node that the module ``name`` runs: its output."""
    def inside(node: fx.Node) -> bool:
        stack = node.meta.get("nn_module_stack", {}).values()
        return (node.op == "call_module" and node.target == name) or any(
            path == name for path, *_ in stack)

    nodes = [node for node in graph.nodes if inside(node)]
    if not nodes:
        raise _NotMapped("the layer has no node in the graph")
    return nodes[-1]


def _composed_map(model: nn.Module, name: str, input_size: tuple[int, int, int],
                  output_size: Pair) -> FieldMap:
    try:
        graph_module = fx.symbolic_trace(model)
    except Exception as error:  # noqa: BLE001 - any failure to trace: measure instead
        raise _NotMapped(f"torch.fx cannot trace the model: {type(error).__name__}") from None
    last = _layer_node(graph_module.graph, name)
    probe = torch.zeros(1, *input_size, device=model_device(model))
    with torch.no_grad(), run_scope(model, mode="eval"):
        try:
            _ShapesUpTo(graph_module, last).propagate(probe)
        except _Reached:
            pass
        except Exception as error:  # noqa: BLE001 - the traced graph fails: measure instead
            raise _NotMapped(f"the traced graph fails: {type(error).__name__}") from None
    if not isinstance(last.meta.get("tensor_meta"), TensorMetadata) or _grid(last) != output_size:
        raise _NotMapped("the layer's node does not give the layer's output")
    image = input_size[1:]
    value = _Composer(graph_module, image).run(graph_module.graph, last)
    if not isinstance(value, _Field):
        raise _NotMapped(value.why if value else "the layer does not depend on the image")
    return _to_map(value, image, output_size)


def _to_map(field: _Field, image: Pair, output_size: Pair) -> FieldMap:
    if field.count != output_size:  # a pooled map spread over a grid
        if not field.covers(image):
            raise _NotMapped(f"a {field.count} map is spread over the {output_size} output")
        return FieldMap((0, 0), image, (0, 0), image, output_size,
                        ((0, image[0]), (0, image[1])), True)
    y, x = field.axes
    return FieldMap((y.start, x.start), (y.size, x.size), (y.step, x.step), image, output_size,
                    ((y.first, y.end), (x.first, x.end)), field.whole or field.covers(image))


# ---- measuring: the gradient support of a linear, positive copy ------------------------------

#: pointwise nonlinearities, clamps and dropout: the identity on a model's linear path
ACTIVATIONS = frozenset({
    "relu", "relu_", "relu6", "hardtanh", "hardtanh_", "leaky_relu", "leaky_relu_", "elu", "elu_",
    "selu", "celu", "gelu", "silu", "mish", "hardswish", "hardsigmoid", "sigmoid", "sigmoid_",
    "tanh", "tanh_", "softplus", "prelu", "threshold", "clamp", "clamp_", "clip", "clamp_min",
    "clamp_max", "dropout", "dropout2d",
})
_NEGATE = frozenset({"neg", "__neg__"})
_SUBTRACT = frozenset({"sub", "rsub", "__sub__", "__rsub__"})
_SUBTRACT_IN_PLACE = frozenset({"sub_", "__isub__"})


class LinearPath(TorchFunctionMode):
    """Run a model on its linear path: activations, clamps and dropout pass their input
    through, max pooling averages. The weights, normalizations (with fixed statistics, i.e.
    in eval mode: affine) and signs stay, so the gradient through the path is the product of
    the layers' linear maps (expanded weights, ``seethrough.circuits.weights``).

    ``positive=True``, with positive weights (``positive_twin``): no cancellation either;
    subtraction adds and normalizations add a mean instead of subtracting it, so every input
    a position depends on gets a gradient (the measured receptive fields).
    """

    def __init__(self, *, positive: bool = False):
        super().__init__()
        self.positive = positive

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in ACTIVATIONS or (self.positive and name in _NEGATE):
            return args[0] if args else next(iter(kwargs.values()))
        if name == "max_pool2d":
            return _average_pool(_bind(args, kwargs, _SIGNATURES["max_pool2d"]))
        if name == "adaptive_max_pool2d":
            return F.adaptive_avg_pool2d(args[0], args[1] if len(args) > 1 else kwargs["output_size"])
        if not self.positive:
            return func(*args, **kwargs)
        if name in _SUBTRACT:
            return torch.add(args[0], args[1])
        if name in _SUBTRACT_IN_PLACE:
            return args[0].add_(args[1])
        if name in _NORM_SIGNATURES:
            return _normalized(name, _bind(args, kwargs, _NORM_SIGNATURES[name]))
        return func(*args, **kwargs)


def _normalized(name: str, values: dict) -> torch.Tensor:
    """A normalization as its input plus the input's mean over the dimensions whose statistics
    it uses: the same dependence, linear and positive. Fixed statistics: the input itself."""
    x = values["input"]
    if name == "layer_norm":
        shape = values["normalized_shape"]
        dims = range(x.dim() - (len(shape) if isinstance(shape, (tuple, list)) else 1), x.dim())
    elif name == "group_norm":
        dims = range(1, x.dim())
    else:  # batch or instance norm: the input's statistics, or fixed ones
        own = values.get("use_input_stats", True) if name == "instance_norm" else values["training"]
        if not own:
            return x
        dims = range(2, x.dim())
    return x + x.mean(tuple(dims), keepdim=True)


def _average_pool(values: dict) -> torch.Tensor:
    if _pair(values.get("dilation", 1)) != (1, 1) or values.get("return_indices"):
        raise InputError("the gradient method cannot average a dilated max pooling or one "
                         "that returns indices: use method='fx'")
    return F.avg_pool2d(values["input"], values["kernel_size"], values.get("stride"),
                        values.get("padding", 0), values.get("ceil_mode", False))


def positive_twin(model: nn.Module) -> nn.Module:
    """A hook-free float64 copy in eval mode: each weight the mean of its inputs, biases and
    scales 1, buffers made positive (run it under ``LinearPath(positive=True)``)."""
    twin = copy.deepcopy(model).eval().double()
    with torch.no_grad():
        for module in twin.modules():
            for attr in HOOK_DICTS:
                module.__dict__.get(attr, {}).clear()
        for parameter in twin.parameters():
            parameter.requires_grad_(False)
            parameter.fill_(1 / parameter[0].numel() if parameter.dim() > 1 else 1.0)
        for buffer in twin.buffers():
            if buffer.is_floating_point():
                buffer.abs_()
    return twin


def _support_boxes(twin: nn.Module, name: str, input_size: tuple[int, int, int],
                   positions: list[Pair]) -> list[tuple[int, int, int, int]]:
    """The box of the pixels that get a gradient from each position, one image per position."""
    images = torch.ones(len(positions), *input_size, dtype=torch.float64,
                        device=model_device(twin), requires_grad=True)
    with LinearPath(positive=True), Trace(twin, name, retain_grad=True, stop=True) as trace:
        twin(images)
    rows, cols = zip(*positions)
    output = trace[name].output
    score = output[torch.arange(len(positions)), :, list(rows), list(cols)].sum()
    (grad,) = torch.autograd.grad(score, images)
    boxes = []
    for support in grad.abs().sum(1) > 0:
        ys, xs = support.any(1).nonzero(), support.any(0).nonzero()
        if not len(ys):
            raise InputError(f"layer {name!r} does not depend on the image")
        boxes.append((int(ys[0]), int(xs[0]), int(ys[-1]) + 1, int(xs[-1]) + 1))
    return boxes


def _samples(count: int) -> list[int]:
    """Positions to measure along an axis: both ends and two in the middle."""
    middle = count // 2
    return sorted({i for i in (0, 1, middle, middle + 1, count - 2, count - 1) if 0 <= i < count})


def _fit(indices: list[int], spans: list[Pair], ratio: float, name: str) -> tuple[int, int, int]:
    """``(start, size, step)`` that give the measured spans. Where clipping leaves them open: the
    step nearest ``ratio`` (image over grid size), and the tightest fields."""
    first, end = spans[0][0], spans[-1][1]
    for step in sorted(range(1, end - first + 1), key=lambda step: abs(step - ratio)):
        start = next((low - step * i for i, (low, _) in zip(indices, spans) if low > first),
                     first - step * indices[-1])
        stop = next((high - step * i for i, (_, high) in zip(indices, spans) if high < end), end)
        if all((max(first, start + step * i), min(end, stop + step * i)) == span
               for i, span in zip(indices, spans)):
            return start, stop - start, step
    raise InputError(f"the receptive fields of layer {name!r} do not lie on a grid of whole "
                     "pixels (upsampling before it?): pick an earlier layer")


def _measured_map(model: nn.Module, name: str, input_size: tuple[int, int, int],
                  output_size: Pair) -> FieldMap:
    twin = positive_twin(model)
    rows, cols = (_samples(n) for n in output_size)
    middle = tuple(n // 2 for n in output_size)
    positions = [(i, middle[1]) for i in rows] + [(middle[0], j) for j in cols]
    boxes = _support_boxes(twin, name, input_size, positions)
    spans = ([(top, bottom) for top, _, bottom, _ in boxes[:len(rows)]],
             [(left, right) for _, left, _, right in boxes[len(rows):]])
    image = input_size[1:]
    (y_start, y_size, y_step), (x_start, x_size, x_step) = (
        _fit(indices, axis_spans, extent / count, name)
        for indices, axis_spans, extent, count in zip((rows, cols), spans, image, output_size))
    seen = ((spans[0][0][0], spans[0][-1][1]), (spans[1][0][0], spans[1][-1][1]))
    whole = all(box == (0, 0, *image) for box in boxes)
    return FieldMap((y_start, x_start), (y_size, x_size), (y_step, x_step), image, output_size,
                    seen, whole)

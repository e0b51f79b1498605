"""Occlusion by incremental inference (Nakandala et al., Krypton, SIGMOD 2019).

A patch changes only the part of each layer inside its receptive field. ``IncrementalModel``
traces the model with torch.fx, runs it once on the clean image keeping every layer's output,
and then, for a batch of patch positions, recomputes each layer only in the box the patch
reaches: a convolution or pooling reads its box plus the halo of its kernel, with the clean
values outside the changed box; element-wise layers and sums of two branches keep (the union
of) their boxes. Every patch of a batch gets a box of the same size (shifted inwards at the
borders, where recomputing a few unchanged values costs nothing and changes nothing), so each
layer is one batched call. Layers that mix all positions (global pooling, linear layers,
squeeze-and-excitation gates) and anything not recognised run on the whole patched activation:
exact always, incremental wherever the layers allow.

Example:
    >>> import torch, torchvision
    >>> model = torchvision.models.resnet18(num_classes=4).eval()
    >>> runner = IncrementalModel.trace(model)
    >>> image = torch.rand(1, 3, 64, 64)
    >>> clean = runner.start(image)
    >>> out = runner.occluded(torch.tensor([[0, 0], [8, 16]]), (16, 16), 0.5)
    >>> occluded = image.clone()
    >>> occluded[..., 8:24, 16:32] = 0.5
    >>> bool(torch.allclose(out[1], model(occluded)[0], atol=1e-5))
    True
"""
from __future__ import annotations

import operator
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

from seethrough.core import Target
from seethrough.models.normalize import NoNormalization, Normalize

#: modules that act on each position on its own (BatchNorm in eval mode: an affine map)
ELEMENTWISE_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Hardswish,
                       nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.Identity, nn.Dropout,
                       Normalize, NoNormalization)
ELEMENTWISE_FUNCTIONS = {torch.relu, torch.relu_, F.relu, F.relu6, F.hardtanh, F.silu, F.gelu,
                         F.hardswish, F.hardsigmoid, torch.sigmoid, torch.tanh, F.dropout}
#: the value of a node that does not depend on the image: its clean output
CLEAN = object()
BINARY_FUNCTIONS = {operator.add: torch.add, operator.iadd: torch.add, torch.add: torch.add,
                    operator.sub: torch.sub, operator.isub: torch.sub, torch.sub: torch.sub,
                    operator.mul: torch.mul, operator.imul: torch.mul, torch.mul: torch.mul,
                    operator.truediv: torch.div, operator.itruediv: torch.div,
                    torch.div: torch.div}


@dataclass
class Partial:
    """A layer's output for P patch positions: the clean output ``clean`` (C, H, W) except in
    one box per patch, ``crops`` (P, C, h, w) at ``origins`` (P, 2)."""

    clean: torch.Tensor
    origins: torch.Tensor
    crops: torch.Tensor

    @property
    def layout(self) -> torch.memory_format:
        """The clean map's memory layout, kept by the windows (channels-last convolutions are
        the fast ones on CPU)."""
        if self.clean.dim() == 3 and self.clean[None].is_contiguous(memory_format=torch.channels_last) \
                and not self.clean[None].is_contiguous():
            return torch.channels_last
        return torch.contiguous_format

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.crops.shape[-2:])

    def window(self, origins: torch.Tensor, size: tuple[int, int], fill: float = 0.0) -> torch.Tensor:
        """(P, C, h, w): the patched output in the boxes ``origins`` x ``size``; positions off
        the map read ``fill`` (a convolution's zero padding, a max pool's -inf).

        Slices, not gathers: each box is a view of the clean map (padded with ``fill``) with
        the patch's changed crop copied over it (indexing kernels took 10 times as long)."""
        if size == self.size and torch.equal(origins, self.origins):
            return self.crops
        height, width = self.clean.shape[-2:]
        boxes = origins.tolist()
        margin = max(0, -min(min(b) for b in boxes),
                     max(y + size[0] - height for y, _ in boxes),
                     max(x + size[1] - width for _, x in boxes))
        clean = self.clean if not margin else F.pad(self.clean, (margin,) * 4, value=fill)
        out = torch.stack([clean[:, y + margin:y + margin + size[0], x + margin:x + margin + size[1]]
                           for y, x in boxes]).contiguous(memory_format=self.layout)
        h, w = self.size
        for row, ((y, x), (cy, cx)) in enumerate(zip(boxes, self.origins.tolist())):
            top, left = max(y, cy), max(x, cx)
            bottom, right = min(y + size[0], cy + h), min(x + size[1], cx + w)
            if top < bottom and left < right:
                out[row, :, top - y:bottom - y, left - x:right - x] = \
                    self.crops[row, :, top - cy:bottom - cy, left - cx:right - cx]
        return out

    def whole(self) -> torch.Tensor:
        """(P, C, H, W): the whole patched output."""
        zero = torch.zeros_like(self.origins)
        return self.window(zero, tuple(self.clean.shape[-2:]))


def _fit(low: torch.Tensor, high: torch.Tensor, limit: int) -> tuple[torch.Tensor, int]:
    """Boxes [low, high) per patch on an axis of ``limit``: one common size, shifted inwards."""
    size = int((high - low).max()) if len(low) else 1
    size = max(1, min(size, limit))
    return low.clamp(max=limit - size).clamp(min=0), size


def _spatial(kernel, stride, padding, dilation) -> tuple[tuple[int, int], ...] | None:
    pairs = [(v, v) if isinstance(v, int) else tuple(v) for v in (kernel, stride, padding, dilation)]
    if any(len(p) != 2 for p in pairs) or pairs[3] != (1, 1):
        return None
    return tuple(pairs)


class IncrementalModel:
    """A traced model that recomputes only what a patch changes (see the module doc)."""

    def __init__(self, model: nn.Module, graph: fx.GraphModule):
        self.model, self.graph = model, graph
        self.modules = dict(graph.named_modules())
        self.clean: dict[fx.Node, object] = {}
        #: nodes run on whole patched maps (not incrementally) in the latest ``occluded``
        self.whole_nodes: list[str] = []

    @classmethod
    def trace(cls, model: nn.Module) -> IncrementalModel:
        """Trace ``model`` with torch.fx; raises what torch.fx raises when it cannot."""
        return cls(model, fx.symbolic_trace(model))

    def _inputs(self, images: torch.Tensor) -> torch.Tensor:
        # the model's forward pre-hooks (the channels-last layout of the registry) apply
        args = (images,)
        for hook in list(self.model._forward_pre_hooks.values()):
            args = hook(self.model, args) or args
            args = args if isinstance(args, tuple) else (args,)
        return args[0]

    @torch.no_grad()
    def start(self, image: torch.Tensor):
        """Run the clean (1, C, H, W) image, keep every node's output; return the model's output."""
        kept = self.clean = {}

        class Keep(fx.Interpreter):
            def run_node(self, node):
                value = super().run_node(node)
                # later in-place ops (ReLU(inplace=True), +=) must not change what is kept
                kept[node] = value.clone() if isinstance(value, torch.Tensor) else value
                return value

        return Keep(self.graph).run(self._inputs(image))

    @torch.no_grad()
    def occluded(self, origins: torch.Tensor, size: tuple[int, int], fill: torch.Tensor | float):
        """The model's output for the clean image with ``fill`` in each box ``origins`` (P, 2)
        x ``size``, batched over the P boxes; ``fill`` is a number, a (C, H, W) image whose
        pixels in each box replace the image's, or the boxes' new pixels (P, C, *size): any
        change confined to the boxes (a superpixel greyed out, a soft mask)."""
        values: dict[fx.Node, object] = {}
        self.whole_nodes = []
        for node in self.graph.graph.nodes:
            if node.op == "placeholder":
                image = self.clean[node][0]
                if isinstance(fill, torch.Tensor) and fill.dim() == 4:
                    crops = fill
                elif isinstance(fill, torch.Tensor):
                    crops = torch.stack([fill[:, y:y + size[0], x:x + size[1]]
                                         for y, x in origins.tolist()])
                else:
                    crops = image.new_full((len(origins), image.shape[0], *size), float(fill))
                crops = crops.contiguous(memory_format=Partial(image, origins, crops).layout)
                values[node] = Partial(image, origins.to(image.device), crops)
            elif node.op == "output":
                return self._dense(node.args[0], values)
            else:
                values[node] = self._run(node, values)
        raise RuntimeError("the traced graph has no output")

    # -- one node ------------------------------------------------------------------------------
    def _run(self, node: fx.Node, values: dict):
        if all(values[a] is CLEAN for a in node.all_input_nodes):
            return CLEAN  # does not depend on the image (a constant, a parameter)
        source = values.get(node.args[0]) if node.args and isinstance(node.args[0], fx.Node) else None
        if node.op == "call_module" and isinstance(source, Partial) and len(node.all_input_nodes) == 1:
            module = self.modules[node.target]
            if isinstance(module, nn.Conv2d) and module.padding_mode == "zeros":
                geometry = _spatial(module.kernel_size, module.stride, module.padding,
                                    module.dilation)
                if geometry is not None:
                    return self._window_op(node, source, geometry, 0.0, lambda x: F.conv2d(
                        x, module.weight, module.bias, module.stride, 0, 1, module.groups),
                        module)
            if isinstance(module, nn.MaxPool2d) and not module.ceil_mode:
                geometry = _spatial(module.kernel_size, module.stride or module.kernel_size,
                                    module.padding, module.dilation)
                if geometry is not None:
                    return self._window_op(node, source, geometry, -torch.inf, lambda x: F.max_pool2d(
                        x, module.kernel_size, module.stride or module.kernel_size, 0), module)
            if isinstance(module, ELEMENTWISE_MODULES) or (
                    isinstance(module, nn.modules.batchnorm._BatchNorm) and not module.training):
                return Partial(self.clean[node][0], source.origins,
                               module(self._private(source.crops, node.args[0])))
        if node.op == "call_function" and isinstance(source, Partial):
            if node.target in ELEMENTWISE_FUNCTIONS and len(node.all_input_nodes) == 1:
                crops = self._private(source.crops, node.args[0])
                return Partial(self.clean[node][0], source.origins,
                               node.target(crops, *node.args[1:], **node.kwargs))
            if node.target in BINARY_FUNCTIONS and len(node.args) == 2 and not node.kwargs:
                result = self._binary(node, values)
                if result is not None:
                    return result
        return self._generic(node, values)

    @staticmethod
    def _private(crops: torch.Tensor, producer: fx.Node) -> torch.Tensor:
        """``crops`` for an op that may work in place: a copy if another node also reads them."""
        return crops if len(producer.users) == 1 else crops.clone()

    def _window_op(self, node, source: Partial, geometry, fill: float, op, module) -> Partial:
        """A convolution or max pool over the box its kernel reads: ``op`` without padding on
        the window (the padding is in the window), or ``module`` itself once the box is the
        whole map."""
        (kh, kw), (sh, sw), (ph, pw), _ = geometry
        clean = self.clean[node][0]
        if source.size == tuple(source.clean.shape[-2:]):
            return Partial(clean, torch.zeros_like(source.origins), module(source.crops))
        origins, size = [], []
        for axis, (k, s, p) in enumerate(((kh, sh, ph), (kw, sw, pw))):
            low = source.origins[:, axis]
            high = low + source.size[axis]
            first = torch.div(low + p - k + 1 + s - 1, s, rounding_mode="floor").clamp(min=0)
            last = torch.div(high - 1 + p, s, rounding_mode="floor") + 1
            start, length = _fit(first, last.clamp(max=clean.shape[-2 + axis]),
                                 clean.shape[-2 + axis])
            origins.append(start)
            size.append(length)
        origins = torch.stack(origins, 1)
        reads = (origins * torch.tensor([sh, sw], device=origins.device)
                 - torch.tensor([ph, pw], device=origins.device))
        extent = ((size[0] - 1) * sh + kh, (size[1] - 1) * sw + kw)
        return Partial(clean, origins, op(source.window(reads, extent, fill)))

    def _binary(self, node, values) -> Partial | None:
        """A sum or product of two branches (or of a branch and a constant) over the union of
        their boxes; ``None`` when an operand is a per-patch tensor (e.g. a gate): generic."""
        clean = self.clean[node]
        if not isinstance(clean, torch.Tensor) or clean.dim() != 4:
            return None
        operands = []
        for argument in node.args:
            value = values[argument] if isinstance(argument, fx.Node) else argument
            if value is CLEAN:
                value = self.clean[argument]
                if value.dim() == 4 and value.shape[-2:] != (1, 1):
                    return None
            elif isinstance(value, torch.Tensor):
                return None
            operands.append(value)
        parts = [v for v in operands if isinstance(v, Partial)]
        clean = clean[0]
        height, width = clean.shape[-2:]
        low = torch.stack([p.origins for p in parts]).amin(0)
        high = torch.stack([p.origins + torch.tensor(p.size, device=low.device)
                            for p in parts]).amax(0)
        ys, h = _fit(low[:, 0], high[:, 0], height)
        xs, w = _fit(low[:, 1], high[:, 1], width)
        origins = torch.stack([ys, xs], 1)
        a, b = (v.window(origins, (h, w)) if isinstance(v, Partial) else v for v in operands)
        return Partial(clean, origins, BINARY_FUNCTIONS[node.target](a, b))

    def _dense(self, argument, values):
        """A node's argument as whole tensors per patch (Partial -> whole map)."""
        if isinstance(argument, fx.Node):
            value = values[argument]
            if value is CLEAN:
                return self.clean[argument]
            return value.whole() if isinstance(value, Partial) else value
        if isinstance(argument, (tuple, list)):
            return type(argument)(self._dense(a, values) for a in argument)
        if isinstance(argument, dict):
            return {k: self._dense(v, values) for k, v in argument.items()}
        return argument

    def _generic(self, node, values):
        """Any other node, on the whole patched tensors (exact, not incremental)."""
        if any(isinstance(values[a], Partial) for a in node.all_input_nodes):
            self.whole_nodes.append(node.name)
        args, kwargs = self._dense(node.args, values), self._dense(node.kwargs, values)
        if node.op == "call_module":
            result = self.modules[node.target](*args, **kwargs)
        elif node.op == "call_function":
            result = node.target(*args, **kwargs)
        elif node.op == "call_method":
            result = getattr(args[0], node.target)(*args[1:], **kwargs)
        else:
            raise RuntimeError(f"unexpected node {node.op}")
        return result


def trace_for(model: nn.Module, target: Target, method: str) -> IncrementalModel | None:
    """The traced ``IncrementalModel`` for ``method``, or ``None`` (full recompute) with a
    warning that says why: a unit target, a model in training mode, or one torch.fx cannot
    trace."""
    why = None
    if target.unit is not None:
        why = "a unit target reads an inner layer of the whole model"
    elif model.training:
        why = "the model is in training mode (batch statistics)"
    else:
        try:
            return IncrementalModel.trace(model)
        except Exception as error:  # noqa: BLE001 - any failure to trace: full recompute
            why = f"torch.fx cannot trace the model ({type(error).__name__}: {error})"
    warnings.warn(f"{method} recomputes the whole model for each perturbation: {why}",
                  stacklevel=4)
    return None


def segment_drops(runner: IncrementalModel, images: torch.Tensor, row: int, labels: torch.Tensor,
                  fill: torch.Tensor, target: Target, batch_size: int) -> torch.Tensor:
    """``(M,)`` drops of the ``target`` score of ``images[row]`` with each of its segments
    ``labels`` ``(H, W)`` (values 0..M-1) alone replaced by ``fill`` ``(C, H, W)``; each
    segment recomputes only what its bounding box reaches (0 for a value no pixel has).
    Segments run in batches of similar boxes (a batch shares its largest box)."""
    image = images[row:row + 1]
    index = torch.tensor([row], device=images.device)
    height, width = labels.shape
    count = int(labels.max()) + 1
    members = F.one_hot(labels, count).bool()  # (H, W, M)
    present_y, present_x = members.any(1), members.any(0)  # (H, M), (W, M)
    ys = torch.arange(height, device=labels.device)[:, None]
    xs = torch.arange(width, device=labels.device)[:, None]
    top = torch.where(present_y, ys, height).amin(0)
    bottom = torch.where(present_y, ys + 1, 0).amax(0)
    left = torch.where(present_x, xs, width).amin(0)
    right = torch.where(present_x, xs + 1, 0).amax(0)
    present = (bottom > top).nonzero()[:, 0]
    order = present[torch.argsort(((bottom - top) * (right - left))[present])]
    clean = target.scores(runner.start(image), index, clean=True)
    drops = image.new_zeros(count)
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        size = (int((bottom - top)[batch].max()), int((right - left)[batch].max()))
        origins = torch.stack([top[batch].clamp(max=height - size[0]),
                               left[batch].clamp(max=width - size[1])], 1)
        crops = torch.stack([
            torch.where(labels[y:y + size[0], x:x + size[1]] == segment,
                        fill[:, y:y + size[0], x:x + size[1]],
                        image[0, :, y:y + size[0], x:x + size[1]])
            for segment, (y, x) in zip(batch.tolist(), origins.tolist())])
        crops = crops.contiguous(memory_format=Partial(image[0], origins, crops).layout)
        output = runner.occluded(origins, size, crops)  # may be a tuple: rows given by count
        drops[batch] = clean - target.scores(output, index.expand(len(batch)))
    return drops

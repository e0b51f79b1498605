"""CAM variants: HiResCAM, XGrad-CAM, LayerCAM, Eigen-CAM, Ablation-CAM.

Each is one small function of the layer's activation ``A`` (N, K, h, w) on the CAM core of
``cams`` (``activations_and_gradients``, ``weighted_sum``): channel weights, or an elementwise
product summed over channels. Layers, token grids and the upsampling to the input are as in
``cams``. pytorch-grad-cam has all five; where it differs from the paper the docstring says how.

Ablation-CAM runs the network before the layer once: the model is traced with ``torch.fx``, cut
at the layer, and only the part after it (the "tail") runs on each batch of ablated copies of the
layer's output. A model that does not trace falls back to a forward hook that substitutes the
ablated copies (exact too, but the layers before the cut run again); ``options["engine"]`` says
which ran.

Example:
    >>> import torch, torchvision
    >>> model = torchvision.models.resnet18(num_classes=4).eval()
    >>> ablationcam(model, torch.rand(1, 3, 64, 64), 2).options["engine"]
    'tail'
"""
from __future__ import annotations

import torch
from torch import fx, nn

from seethrough.attribution.cams import _result, activations_and_gradients, layer_name, weighted_sum
from seethrough.attribution.layers import to_grid
from seethrough.attribution.registry import register
from seethrough.attribution.result import Attribution
from seethrough.core import Target
from seethrough.core.batching import chunks
from seethrough.errors import InputError
from seethrough.trace import Trace

ENGINES = ("auto", "tail", "hook")


@register("hirescam")
def hirescam(
    model: nn.Module, images: torch.Tensor, target: Target, *, layer: str | None = None,
    relu: bool = True, grid: tuple[int, int] | None = None, batch_size: int = 32,
) -> Attribution:
    """HiResCAM (Draelos & Carin 2020): ``ReLU(sum_k dS/dA_k * A_k)``, elementwise.

    Grad-CAM averages each channel's gradient over space before multiplying; HiResCAM keeps the
    gradient at every position, so the map is exactly the first-order contribution of each
    position of the layer to the score. It equals Grad-CAM when the gradient is constant over
    space (a layer followed only by global average pooling and linear layers).
    The ReLU is pytorch-grad-cam's (it clips every CAM); ``relu=False`` keeps the signed map.
    """
    name = layer_name(model, layer)
    acts, grads = activations_and_gradients(model, images, target, name, grid=grid, batch_size=batch_size)
    cam = (grads * acts).sum(1, keepdim=True)
    return _result(cam.clamp(min=0) if relu else cam, images, name)


@register("xgradcam")
def xgradcam(
    model: nn.Module, images: torch.Tensor, target: Target, *, layer: str | None = None,
    eps: float = 1e-7, grid: tuple[int, int] | None = None, batch_size: int = 32,
) -> Attribution:
    """XGrad-CAM (Fu et al. 2020, "Axiom-based Grad-CAM"): ``ReLU(sum_k w_k A_k)`` with
    ``w_k = sum_ij A_k,ij dS/dA_k,ij / (sum_ij A_k,ij + eps)``.

    The weights are the gradients averaged with the activation as weights (so that the map
    satisfies the paper's sensitivity and conservation axioms approximately). ``eps`` (not in
    the paper) keeps an all-zero channel at weight 0; 1e-7 is pytorch-grad-cam's value.
    """
    name = layer_name(model, layer)
    acts, grads = activations_and_gradients(model, images, target, name, grid=grid, batch_size=batch_size)
    weights = (acts * grads).sum((2, 3)) / (acts.sum((2, 3)) + eps)
    return _result(weighted_sum(weights, acts, relu=True), images, name)


@register("layercam")
def layercam(
    model: nn.Module, images: torch.Tensor, target: Target, *, layer: str | None = None,
    grid: tuple[int, int] | None = None, batch_size: int = 32,
) -> Attribution:
    """LayerCAM (Jiang et al. 2021): ``ReLU(sum_k ReLU(dS/dA_k) * A_k)``, elementwise.

    Each position of each channel is weighted by its own positive gradient, which keeps fine
    detail at shallow layers (the paper fuses several layers' maps; this is one layer, as in
    pytorch-grad-cam). Equals HiResCAM where every gradient is non-negative.
    """
    name = layer_name(model, layer)
    acts, grads = activations_and_gradients(model, images, target, name, grid=grid, batch_size=batch_size)
    cam = (grads.clamp(min=0) * acts).sum(1, keepdim=True)
    return _result(cam.clamp(min=0), images, name)


@register("eigencam")
def eigencam(
    model: nn.Module, images: torch.Tensor, target: Target, *, layer: str | None = None,
    center: bool = False, grid: tuple[int, int] | None = None, batch_size: int = 32,
) -> Attribution:
    """Eigen-CAM (Muhammad & Yeasin 2020): the activations projected on their first principal
    component; class-agnostic (the target is not used), no backward pass.

    Per image, the activation as a (positions x channels) matrix ``O = U S V^T``; the map is
    ``ReLU(O v_1)`` at layer resolution. The paper takes the SVD of ``O`` as it is (the default);
    pytorch-grad-cam subtracts each channel's mean over positions first: ``center=True``.
    A singular vector's sign is arbitrary: here ``v_1`` is signed so that its channel loadings
    sum to >= 0 (for non-negative activations, uncentered, this makes the map non-negative).
    pytorch-grad-cam keeps whatever sign LAPACK returns, so on some images its map is the ReLU of
    the negated projection, which is a different map.
    """
    name = layer_name(model, layer)
    outputs = []
    with torch.no_grad():
        for part in chunks(len(images), batch_size, desc="eigencam"):
            with Trace(model, name) as trace:
                target.scores(model(images[part]), part, clean=True)
            outputs.append(to_grid(trace[name].output, name, grid))
        acts = torch.cat(outputs)
        n, _, h, w = acts.shape
        matrix = acts.flatten(2).transpose(1, 2).double()  # (N, hw, K)
        if center:
            matrix = matrix - matrix.mean(1, keepdim=True)
        _, _, vh = torch.linalg.svd(matrix, full_matrices=False)
        first = vh[:, 0]  # (N, K)
        first = first * torch.where(first.sum(1, keepdim=True) < 0, -1.0, 1.0)
        projection = (matrix @ first[:, :, None]).view(n, 1, h, w).to(acts.dtype)
    return _result(projection.clamp(min=0), images, name)


@register("ablationcam")
def ablationcam(
    model: nn.Module, images: torch.Tensor, target: Target, *, layer: str | None = None,
    engine: str = "auto", grid: tuple[int, int] | None = None, batch_size: int = 32,
) -> Attribution:
    """Ablation-CAM (Desai & Ramaswamy 2020): ``ReLU(sum_k w_k A_k)``, ``w_k = (y - y_k) / y``,
    where ``y`` is the target score and ``y_k`` the score with channel ``k`` of the layer set to
    zero. Gradient-free: one forward pass per image plus one pass of the network after the layer
    per ``batch_size`` ablated channels.

    ``engine``: ``"tail"`` runs only the layers after the cut (``torch.fx``; the activations
    before it are computed once), ``"hook"`` re-runs the whole network with a forward hook that
    substitutes the ablated copies, ``"auto"`` (default) the tail where the model traces, else the
    hook; both give the same weights. For a token layer (N, T, D) channel ``k`` is feature ``k``
    of every token. A zero score ``y`` gives zero weights.

    pytorch-grad-cam's ``AblationCAM`` zeroes the channel, as the paper does, when the layer's
    smallest activation is 0 (after a ReLU); otherwise it sets it to ``min - 1e7``, which this
    does not. It runs the whole network for every batch of ablated channels.
    """
    if engine not in ENGINES:
        raise InputError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    name = layer_name(model, layer)
    tail, why = (None, "") if engine == "hook" else _cut(model, name)
    if tail is None and engine == "tail":
        raise InputError(f"cannot run only the layers after {name!r}: {why}; use engine='hook'")
    used = "tail" if tail is not None else "hook"
    acts, weights = [], []
    with torch.no_grad():
        for part in chunks(len(images), batch_size, desc="ablationcam"):
            if tail is not None:
                output, cut, frontier = tail.prefix(images[part])
            else:
                with Trace(model, name) as trace:
                    output = model(images[part])
                cut, frontier = trace[name].output, []
            score = target.scores(output, part, clean=True)
            rows = torch.arange(len(images))[part]
            weights.append(torch.stack([
                _channel_weights(model, name, tail, images, target, int(row), cut[i:i + 1],
                                 [_row(value, i) for value in frontier], score[i], batch_size)
                for i, row in enumerate(rows)
            ]))
            acts.append(to_grid(cut, name, grid))
    cam = weighted_sum(torch.cat(weights).to(images.dtype), torch.cat(acts), relu=True)
    result = _result(cam, images, name)
    result.options["engine"] = used
    if used == "hook" and engine == "auto":
        result.options["engine_note"] = f"no torch.fx tail ({why}): whole network re-run"
    return result


def _channel_weights(model, name, tail, images, target, row, cut, frontier, score, batch_size):
    """``(y - y_k) / y`` for every channel ``k`` of one image's layer output ``cut`` (1, ...)."""
    channels = cut.shape[1] if cut.dim() == 4 else cut.shape[-1]
    ablated = torch.empty(channels, dtype=score.dtype, device=score.device)
    for part in chunks(channels, batch_size):
        k = torch.arange(channels, device=cut.device)[part]
        batch = torch.cat([cut] * len(k))
        if cut.dim() == 4:
            batch[torch.arange(len(k), device=cut.device), k] = 0
        elif cut.dim() == 3:
            batch[torch.arange(len(k), device=cut.device), :, k] = 0
        else:
            raise InputError(f"layer {name!r} outputs shape {tuple(cut.shape)}: Ablation-CAM needs "
                             "(N, C, h, w) maps or (N, T, D) tokens")
        if tail is not None:
            output = tail.module(batch, *[torch.cat([v] * len(k)) if isinstance(v, torch.Tensor)
                                          else v for v in frontier])
        else:
            with Trace(model, name, retain_output=False, edit=lambda _, batch=batch: batch):
                output = model(torch.cat([images[row:row + 1]] * len(k)))
        ablated[part] = target.scores(output, torch.full((len(k),), row)).to(score.dtype)
    if score == 0:
        return torch.zeros_like(ablated)
    return (score - ablated) / score


def _row(value, i: int):
    """Image ``i`` of a batched frontier value (a tensor with the batch first), else as it is."""
    return value[i:i + 1] if isinstance(value, torch.Tensor) and value.dim() > 0 else value


class _Tail:
    """The model cut at one layer: ``prefix(images)`` runs it all once and keeps the layer's
    output and the values from before the cut that the rest reads (a residual's identity);
    ``module(layer_output, *those)`` runs only the rest."""

    def __init__(self, model: nn.Module, traced: fx.GraphModule, cut: fx.Node,
                 frontier: list[fx.Node], module: fx.GraphModule):
        self.model, self.traced, self.cut, self.frontier = model, traced, cut, frontier
        self.module = module

    def prefix(self, images: torch.Tensor):
        # the model's own forward pre-hooks (the channels-last layout of ``registry``) apply,
        # so the traced pass computes what ``model(images)`` computes
        args = (images,)
        for hook in list(self.model._forward_pre_hooks.values()):
            args = hook(self.model, args) or args
            args = args if isinstance(args, tuple) else (args,)
        images = args[0]
        wanted = [self.cut, *self.frontier]
        kept: dict[fx.Node, object] = {}

        class Keep(fx.Interpreter):
            def run_node(self, node):
                value = super().run_node(node)
                if node in wanted:
                    # later in-place ops (ReLU(inplace=True), +=) must not change what is kept
                    kept[node] = value.clone() if isinstance(value, torch.Tensor) else value
                return value

        output = Keep(self.traced).run(images)
        return output, kept[self.cut], [kept[node] for node in self.frontier]


class _CutTracer(fx.Tracer):
    """Traces through everything except the layer itself (a leaf) and the torch.nn leaves."""

    def __init__(self, layer: str):
        super().__init__()
        self.layer = layer

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        if qualified_name == self.layer:
            return True
        if self.layer.startswith(qualified_name + ".") if qualified_name else True:
            return False
        return super().is_leaf_module(module, qualified_name)


def _cut(model: nn.Module, name: str) -> tuple[_Tail | None, str]:
    """The model cut after layer ``name`` via torch.fx, or ``(None, why not)``."""
    tracer = _CutTracer(name)
    try:
        graph = tracer.trace(model)
    except Exception as error:  # noqa: BLE001 - any failure to trace: the hook instead
        return None, f"torch.fx cannot trace the model: {type(error).__name__}: {error}"
    cuts = [n for n in graph.nodes if n.op == "call_module" and n.target == name]
    if len(cuts) != 1:
        return None, f"layer {name!r} is called {len(cuts)} times in the traced graph"
    (cut,) = cuts
    downstream = {cut}
    for node in graph.nodes:
        if any(arg in downstream for arg in node.all_input_nodes):
            downstream.add(node)
    (out,) = [n for n in graph.nodes if n.op == "output"]
    if out not in downstream:
        raise InputError(f"the model's output does not depend on layer {name!r}")
    needed = [n for n in graph.nodes if n not in downstream
              and any(user in downstream and user is not cut for user in n.users)]
    frontier = [n for n in needed if n.op != "get_attr"]
    tail = fx.Graph()
    env = {cut: tail.placeholder("layer_output")}
    for node in frontier:
        env[node] = tail.placeholder(f"before_{node.name}")
    for node in needed:
        if node.op == "get_attr":
            env[node] = tail.node_copy(node)
    for node in graph.nodes:
        if node in downstream and node is not cut:
            env[node] = tail.node_copy(node, env.__getitem__)
    root = tracer.root
    return _Tail(model, fx.GraphModule(root, graph), cut, frontier, fx.GraphModule(root, tail)), ""

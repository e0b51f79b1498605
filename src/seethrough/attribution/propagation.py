"""Layer-wise relevance propagation (LRP), on zennit.

LRP passes the target's score from the output back to the input layer by layer with rules of
its own instead of the gradient. zennit (Anders et al.) implements the rules as hooks on the
model's modules; its canonizers first merge every BatchNorm into the convolution that feeds it
(only where a traced forward pass shows the BatchNorm reads that convolution's output directly,
so DenseNet's pre-activation BatchNorms are left alone and pass relevance on, as zennit's
``Pass`` rule does) and, in torchvision ResNets, turn the residual ``+`` into a module that
splits relevance in proportion to the two branches. Everything is undone on exit: the weights
come back as the very tensors they were, hooks and extra attributes are removed (``run_scope``
checks and restores the rest). Excitation backprop, the other propagation method, is in
``attribution.excitation``.

Example:
    >>> import torch, torchvision
    >>> model = torchvision.models.resnet18(num_classes=4).eval()
    >>> lrp(model, torch.rand(2, 3, 32, 32), target=1).maps.shape
    torch.Size([2, 1, 32, 32])
"""
from __future__ import annotations

import torch
from torch import nn

from seethrough.attribution.gradients import channel_sum
from seethrough.attribution.registry import register
from seethrough.attribution.result import Attribution
from seethrough.core import Target
from seethrough.core.batching import chunks
from seethrough.errors import InputError

#: LRP rules: two of zennit's composites (first-layer rule + per-layer-type rules), or one rule
#: for every convolution and linear layer
LRP_RULES = ("epsilon_plus_flat", "epsilon_gamma_box", "epsilon", "gamma", "alpha_beta")


# -- LRP ------------------------------------------------------------------------------------
def _linear_types():
    from zennit.types import Linear

    return Linear


def _first_layer(model: nn.Module) -> nn.Module:
    """The module zennit gives its first-layer rule: the first conv / linear in module order."""
    linear = _linear_types()
    first = next((m for m in model.modules() if isinstance(m, linear)), None)
    if first is None:
        raise InputError("LRP needs at least one convolution or linear layer in the model")
    return first


def _batch_norm_pairs(model: nn.Module, image: torch.Tensor) -> list[tuple[nn.Module, nn.Module]]:
    """(conv/linear, BatchNorm) pairs where the BatchNorm reads the layer's output directly
    (one traced forward pass); BatchNorms in training mode are never merged."""
    from zennit.types import BatchNorm

    linear = _linear_types()
    made: dict[int, tuple[nn.Module, torch.Tensor]] = {}
    pairs: list[tuple[nn.Module, nn.Module]] = []

    def record(module, inputs, output):
        if isinstance(output, torch.Tensor):
            made[id(output)] = (module, output)  # the tensor is kept, so its id stays unique

    def check(module, inputs):
        source = made.get(id(inputs[0])) if inputs else None
        if source is not None and not module.training and source[1] is inputs[0]:
            pairs.append((source[0], module))

    handles = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, linear)]
    handles += [m.register_forward_pre_hook(check) for m in model.modules() if isinstance(m, BatchNorm)]
    try:
        with torch.no_grad():
            before = model(image)
    finally:
        for handle in handles:
            handle.remove()
    made.clear()
    pairs = list(dict.fromkeys(pairs))
    if pairs and isinstance(before, torch.Tensor):  # a layer output read elsewhere too: no merge
        merged = _MergePairs(pairs).apply(model)
        try:
            with torch.no_grad():
                after = model(image)
        finally:
            for instance in merged:
                instance.remove()
        if not torch.allclose(before, after, rtol=1e-3, atol=1e-5 * before.abs().max().item()):
            return []
    return pairs


class _MergePairs:
    """A zennit canonizer merging the given (layer, BatchNorm) pairs; undone by ``remove``."""

    def __init__(self, pairs):
        self.pairs = pairs

    def apply(self, root):
        from zennit.canonizers import SequentialMergeBatchNorm

        done = []
        try:
            for layer, norm in self.pairs:
                instance = SequentialMergeBatchNorm()
                instance.register((layer,), norm)
                done.append(instance)
        except Exception:
            for instance in reversed(done):
                instance.remove()
            raise
        return done


def _composite(model, images, rule, epsilon, gamma, box):
    from zennit import composites, rules
    from zennit.torchvision import ResNetBasicBlockCanonizer, ResNetBottleneckCanonizer

    canonizers = [_MergePairs(_batch_norm_pairs(model, images[:1]))]
    from torchvision.models.resnet import BasicBlock, Bottleneck

    if any(isinstance(m, (BasicBlock, Bottleneck)) for m in model.modules()):
        canonizers += [ResNetBottleneckCanonizer(), ResNetBasicBlockCanonizer()]
    if rule == "epsilon_plus_flat":
        return composites.EpsilonPlusFlat(epsilon=epsilon, canonizers=canonizers)
    if rule == "epsilon_gamma_box":
        low, high = _box_bounds(model, images, box)
        return composites.EpsilonGammaBox(low=low, high=high, epsilon=epsilon, gamma=gamma,
                                          canonizers=canonizers)
    single = {"epsilon": lambda: rules.Epsilon(epsilon=epsilon),
              "gamma": lambda: rules.Gamma(gamma=gamma),
              "alpha_beta": lambda: rules.AlphaBeta(alpha=2.0, beta=1.0)}[rule]()
    layer_map = composites.layer_map_base() + [(_linear_types(), single)]
    return composites.LayerMapComposite(layer_map=layer_map, canonizers=canonizers)


def _box_bounds(model, images, box) -> tuple[torch.Tensor, torch.Tensor]:
    """The first layer's input for all-``low`` and all-``high`` images (elementwise min / max):
    the pixel range as the first layer sees it, through any normalisation in front of it."""
    first, seen = _first_layer(model), []
    handle = first.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0].detach()))
    try:
        with torch.no_grad():
            model(torch.stack([torch.full_like(images[0], float(v)) for v in box]))
    finally:
        handle.remove()
    a, b = seen[0][:1], seen[0][1:2]
    return torch.minimum(a, b), torch.maximum(a, b)


def _check_lrp(rule, epsilon, gamma, box) -> None:
    if rule not in LRP_RULES:
        raise InputError(f"unknown LRP rule {rule!r}; choose {', '.join(LRP_RULES)}")
    for name, value in (("epsilon", epsilon), ("gamma", gamma)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise InputError(f"{name} must be a number >= 0, not {value!r}")
    if (not isinstance(box, (tuple, list)) or len(box) != 2
            or not all(isinstance(v, (int, float)) for v in box) or box[0] >= box[1]):
        raise InputError(f"box must be (low, high) with low < high, not {box!r}")


@register("lrp")
def lrp(
    model: nn.Module, images: torch.Tensor, target: Target, *, rule: str = "epsilon_plus_flat",
    epsilon: float = 1e-6, gamma: float = 0.25, box: tuple[float, float] = (0.0, 1.0),
    batch_size: int = 32,
) -> Attribution:
    """Layer-wise relevance propagation (Bach et al. 2015; Montavon et al. 2019), on zennit.

    The target's score (the logit) is the relevance at the output, redistributed layer by layer.
    ``rule``: ``"epsilon_plus_flat"`` (default; zennit's ``EpsilonPlusFlat``, the composite
    recommended for CNNs by Montavon et al. and zennit: LRP-eps on dense layers, LRP-z+ (alpha 1,
    beta 0) on convolutions, the flat rule on the first layer, so the map does not copy the
    image's texture), ``"epsilon_gamma_box"`` (Montavon et al.'s VGG recipe: LRP-eps on dense
    layers, LRP-gamma on convolutions, z^B on the first layer with the pixel range ``box``),
    or one rule on every conv / linear layer: ``"epsilon"``, ``"gamma"``, ``"alpha_beta"``
    (alpha 2, beta 1). ``epsilon=1e-6`` is zennit's (LRP-0 kept off zero: relevance is
    conserved; Bach et al. show 0.01, Montavon et al. 0.25 std in middle layers); ``gamma=0.25``
    as Montavon et al. and zennit. Average pools and residual sums split relevance in
    proportion (zennit's ``Norm``); activations and unmerged BatchNorms pass it on.

    ``raw`` is the relevance per colour channel (at the first layer's input, so a
    normalisation in front of it does not rescale relevance); ``maps`` its channel sum,
    which for ``rule="epsilon"`` sums to the target's logit on bias-free ReLU nets.
    """
    _check_lrp(rule, epsilon, gamma, box)
    if any(isinstance(m, nn.MultiheadAttention) for m in model.modules()):
        raise InputError("LRP here covers CNNs (zennit has no rules for attention layers): for "
                         "a transformer use gradcam, integrated_gradients or a gradient method")
    target.resolve(model, images, batch_size)
    first = _first_layer(model)
    composite = _composite(model, images, rule, epsilon, gamma, box)
    raw = torch.zeros_like(images)
    caught: list[torch.Tensor] = []

    def catch(module, inputs):  # registered before zennit's hooks: sees the layer's own input
        if inputs and isinstance(inputs[0], torch.Tensor) and inputs[0].requires_grad:
            inputs[0].register_hook(lambda grad: caught.append(grad) or None)

    handle = first.register_forward_pre_hook(catch)
    try:
        with composite.context(model):
            for part in chunks(len(images), batch_size, desc="lrp"):
                caught.clear()
                with torch.enable_grad():
                    leaf = images[part].detach().requires_grad_()
                    score = target.scores(model(leaf), part)
                    if not score.requires_grad:
                        raise InputError("the target score does not depend on the input images")
                    (grad,) = torch.autograd.grad(score, leaf, grad_outputs=score.detach())
                raw[part] = caught[-1] if caught and caught[-1].shape == grad.shape else grad
    finally:
        handle.remove()
    return Attribution(channel_sum(raw), raw=raw)

"""What to maximize: objectives as values that add, subtract and scale.

Sign convention: **every objective is maximized.** A penalty such as ``total_variation()``
measures roughness (a positive number); subtract it to penalize: ``channel(...) - 0.01 * tv``.

Each objective returns one value per batch item (shape ``(N,)``), so a batch can carry a
different goal per image: ``channel("features.6", [0, 1, 2, 3])`` renders channel ``i`` in item
``i``; ``channel("features.6", 5, batch=2)`` reads item 2 only. It declares the layers it reads
(``.layers``) so only those get hooked, and whether it needs the model's output
(``.needs_output``: logits, probabilities) — if not, the forward pass stops after the last layer.

Example:
    >>> objective = channel("features.6", 12) - 1e-3 * total_variation()
    >>> objective
    Objective(channel(features.6, 12) - 0.001 * total_variation())
    >>> sorted(objective.layers), objective.needs_output
    (['features.6'], False)
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from seethrough.core.blur import gaussian_blur
from seethrough.core.registry import Registry
from seethrough.errors import InputError

Units = int | Sequence[int]


@dataclass
class Evaluation:
    """What an objective may read: traced activations, the model output, the image itself."""

    activations: dict[str, torch.Tensor]
    output: torch.Tensor | None
    image: torch.Tensor  # (N, 3, H, W) in [0, 1], before the robustness transforms

    @property
    def batch(self) -> int:
        return self.image.shape[0]

    def activation(self, layer: str) -> torch.Tensor:
        return self.activations[layer]

    def logits(self) -> torch.Tensor:
        if self.output is None:
            raise InputError("this objective needs the model output, which was not computed")
        if self.output.dim() != 2:
            raise InputError(f"class objectives need (N, classes) logits, got {tuple(self.output.shape)}")
        return self.output


@dataclass(frozen=True)
class Objective:
    """A function of an ``Evaluation`` returning ``(N,)`` values to maximize.

    Combine with ``+``, ``-``, ``*`` and ``/`` by scalars, and ``+``/``-`` with each other.
    """

    function: Callable[[Evaluation], torch.Tensor]
    description: str
    layers: frozenset[str] = field(default_factory=frozenset)
    needs_output: bool = False
    batch_size: int | None = None  # the batch a per-item objective was written for

    def __call__(self, evaluation: Evaluation) -> torch.Tensor:
        value = self.function(evaluation)
        if value.dim() == 0:
            value = value.expand(evaluation.batch)
        return value

    def __repr__(self) -> str:
        return f"Objective({self.description})"

    def _join(self, other: Objective, sign: float, symbol: str) -> Objective:
        if isinstance(other, (int, float)):
            other = constant(other)
        if not isinstance(other, Objective):
            return NotImplemented
        first, second = self, other
        sizes = {s for s in (first.batch_size, second.batch_size) if s is not None}
        if len(sizes) > 1:
            raise InputError(f"objectives written for different batch sizes {sorted(sizes)} cannot be combined")
        return Objective(
            lambda e: first(e) + sign * second(e),
            f"{first.description} {symbol} {_wrap(second.description)}",
            first.layers | second.layers,
            first.needs_output or second.needs_output,
            next(iter(sizes), None),
        )

    def __add__(self, other):
        return self._join(other, 1.0, "+")

    def __radd__(self, other):
        if other == 0:  # sum([...])
            return self
        return constant(other)._join(self, 1.0, "+")

    def __sub__(self, other):
        return self._join(other, -1.0, "-")

    def __rsub__(self, other):
        return constant(other)._join(self, -1.0, "-")

    def __neg__(self):
        return self * -1.0

    def __mul__(self, factor):
        if isinstance(factor, Objective):
            raise InputError("multiply objectives by numbers; a product of two objectives is not supported")
        if not isinstance(factor, (int, float)):
            return NotImplemented
        inner = self
        description = f"-{_wrap(inner.description)}" if factor == -1 else f"{factor:g} * {_wrap(inner.description)}"
        return Objective(lambda e: factor * inner(e), description, inner.layers,
                         inner.needs_output, inner.batch_size)

    __rmul__ = __mul__

    def __truediv__(self, divisor):
        if not isinstance(divisor, (int, float)):
            return NotImplemented
        return self * (1.0 / divisor)


def _wrap(text: str) -> str:
    return f"({text})" if (" + " in text or " - " in text) else text


def constant(value: float) -> Objective:
    """A constant (lets ``2 + objective`` and ``sum(objectives)`` work)."""
    return Objective(lambda e: torch.full((e.batch,), float(value), device=e.image.device), f"{value:g}")


def _per_item(units: Units, batch: int | None, name: str) -> tuple[torch.Tensor | int, int | None]:
    """Normalize a unit argument: an int for every item, or a list with one unit per item."""
    if torch.is_tensor(units):
        units = units.tolist()
    if isinstance(units, int):
        return units, None
    units = list(units)
    if not units or not all(isinstance(u, int) for u in units):
        raise InputError(f"{name}: give one int, or a list with one int per batch item")
    if batch is not None:
        raise InputError(f"{name}: use either a list of units (one per item) or batch=, not both")
    return torch.tensor(units), len(units)


def _select(value: torch.Tensor, batch: int | None, n_items: int | None, name: str) -> torch.Tensor:
    if n_items is not None and value.shape[0] != n_items:
        raise InputError(f"{name} lists {n_items} units (one per item) but the batch has {value.shape[0]}")
    if batch is None:
        return value
    if not 0 <= batch < value.shape[0]:
        raise InputError(f"{name}: batch={batch} is outside a batch of {value.shape[0]}")
    mask = torch.zeros_like(value)
    mask[batch] = 1.0
    return value * mask


def _channels(activation: torch.Tensor, units) -> torch.Tensor:
    """(N, C, ...) -> (N, ...) for a unit per item (tensor) or the same unit (int)."""
    if activation.dim() == 3:  # (N, tokens, features): a transformer
        activation = activation.transpose(1, 2)
    if isinstance(units, int):
        if not 0 <= units < activation.shape[1]:
            raise InputError(f"unit {units} is outside the layer's {activation.shape[1]} channels")
        return activation[:, units]
    if units.numel() != activation.shape[0]:
        raise InputError(f"{units.numel()} units are given (one per item) but the batch has "
                         f"{activation.shape[0]} images: pass batch={units.numel()}")
    if units.max() >= activation.shape[1] or units.min() < 0:
        raise InputError(f"units {units.tolist()} go outside the layer's {activation.shape[1]} channels")
    return activation[torch.arange(activation.shape[0], device=activation.device), units.to(activation.device)]


def _label(units) -> str:
    return str(units) if isinstance(units, int) else f"[{', '.join(map(str, units.tolist()))}]"


def channel(layer: str, units: Units, *, batch: int | None = None) -> Objective:
    """Mean activation of one channel over all positions (Lucid's ``channel``)."""
    units, n_items = _per_item(units, batch, "channel")

    def function(e: Evaluation) -> torch.Tensor:
        values = _channels(e.activation(layer), units)
        values = values.flatten(1).mean(1) if values.dim() > 1 else values
        return _select(values, batch, n_items, "channel")

    return Objective(function, f"channel({layer}, {_label(units)})" + _batch_text(batch),
                     frozenset([layer]), batch_size=n_items)


def neuron(layer: str, units: Units, *, position: tuple[int, int] | None = None,
           batch: int | None = None) -> Objective:
    """One channel at one spatial position (default: the centre), as in Lucid's ``neuron``."""
    units, n_items = _per_item(units, batch, "neuron")

    def function(e: Evaluation) -> torch.Tensor:
        values = _channels(e.activation(layer), units)
        if values.dim() == 3:
            y, x = position if position is not None else (values.shape[1] // 2, values.shape[2] // 2)
            values = values[:, y, x]
        elif values.dim() == 2:
            values = values[:, position[0] if position is not None else values.shape[1] // 2]
        return _select(values, batch, n_items, "neuron")

    where = f", position={position}" if position is not None else ""
    return Objective(function, f"neuron({layer}, {_label(units)}{where})" + _batch_text(batch),
                     frozenset([layer]), batch_size=n_items)


def layer(layer: str, *, batch: int | None = None) -> Objective:
    """DeepDream's objective: the mean squared activation of a whole layer."""

    def function(e: Evaluation) -> torch.Tensor:
        values = e.activation(layer).pow(2).flatten(1).mean(1)
        return _select(values, batch, None, "layer")

    return Objective(function, f"layer({layer})" + _batch_text(batch), frozenset([layer]))


def direction(layer: str, vector: torch.Tensor, *, cosine: bool = False,
              batch: int | None = None) -> Objective:
    """Activation along a direction in channel space, averaged over positions.

    ``cosine=True`` uses the cosine similarity (Lucid's ``direction_cossim``) instead of the dot
    product, so the picture cannot win by making every channel large.
    """
    vector = torch.as_tensor(vector, dtype=torch.float32).flatten()

    def function(e: Evaluation) -> torch.Tensor:
        activation = e.activation(layer)
        if activation.dim() == 3:
            activation = activation.transpose(1, 2)
        if activation.shape[1] != vector.numel():
            raise InputError(f"direction has {vector.numel()} entries, layer {layer} has "
                             f"{activation.shape[1]} channels")
        shape = (1, -1) + (1,) * (activation.dim() - 2)
        v = vector.to(activation.device).view(shape)
        if cosine:
            values = F.cosine_similarity(activation, v.expand_as(activation), dim=1, eps=1e-8)
        else:
            values = (activation * v).sum(1)
        values = values.flatten(1).mean(1) if values.dim() > 1 else values
        return _select(values, batch, None, "direction")

    kind = "direction_cosine" if cosine else "direction"
    return Objective(function, f"{kind}({layer}, |v|={vector.norm():.3g})" + _batch_text(batch),
                     frozenset([layer]))


def class_logit(classes: Units, *, batch: int | None = None) -> Objective:
    """The pre-softmax score of a class (one per item when a list)."""
    classes, n_items = _per_item(classes, batch, "class_logit")

    def function(e: Evaluation) -> torch.Tensor:
        return _select(_channels(e.logits(), classes), batch, n_items, "class_logit")

    return Objective(function, f"class_logit({_label(classes)})" + _batch_text(batch),
                     needs_output=True, batch_size=n_items)


def class_probability(classes: Units, *, batch: int | None = None) -> Objective:
    """The softmax probability of a class: raising it also lowers every other class."""
    classes, n_items = _per_item(classes, batch, "class_probability")

    def function(e: Evaluation) -> torch.Tensor:
        return _select(_channels(e.logits().softmax(1), classes), batch, n_items, "class_probability")

    return Objective(function, f"class_probability({_label(classes)})" + _batch_text(batch),
                     needs_output=True, batch_size=n_items)


def gram(activation: torch.Tensor, *, normalize: bool = True) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, C) Gram matrices ``F F^T``, divided by the number of positions
    unless ``normalize=False`` (Gatys et al.'s ``G = F F^T``, unnormalized)."""
    flat = activation.flatten(2)
    product = flat @ flat.transpose(1, 2)
    return product / flat.shape[2] if normalize else product


def diversity(layer: str) -> Objective:
    """Lucid's diversity: minus the mean cosine similarity of each item's Gram matrix to the others'.

    Item ``i`` gets ``-sum_{j != i} cos(G_i, G_j) / N``; the batch total is Lucid's value. Add it
    (scaled, e.g. ``1e2 * diversity(...)`` as in the Distill article's examples) to a
    per-unit objective to see several facets of one unit.
    """

    def function(e: Evaluation) -> torch.Tensor:
        grams = F.normalize(gram(e.activation(layer)).flatten(1), dim=1)
        similarity = grams @ grams.T
        n = similarity.shape[0]
        return -(similarity.sum(1) - similarity.diagonal()) / n

    return Objective(function, f"diversity({layer})", frozenset([layer]))


def interpolate(first: Objective, second: Objective) -> Objective:
    """Item ``i`` of ``N`` maximizes ``(1 - t) * first + t * second`` with ``t = i / (N - 1)``."""

    def function(e: Evaluation) -> torch.Tensor:
        n = e.batch
        t = torch.linspace(0.0, 1.0, n, device=e.image.device) if n > 1 else torch.zeros(1, device=e.image.device)
        return (1 - t) * first(e) + t * second(e)

    return Objective(function, f"interpolate({first.description}, {second.description})",
                     first.layers | second.layers, first.needs_output or second.needs_output)


# -- penalties on the image (subtract them) ---------------------------------------------------

def l1(target: float = 0.5) -> Objective:
    """Mean absolute distance of the pixels from ``target`` (grey)."""
    return Objective(lambda e: (e.image - target).abs().flatten(1).mean(1), f"l1({target:g})")


def l2(target: float = 0.5) -> Objective:
    """Root mean square distance of the pixels from ``target`` (grey)."""
    return Objective(lambda e: (e.image - target).pow(2).flatten(1).mean(1).add(1e-12).sqrt(),
                     f"l2({target:g})")


def total_variation(beta: float = 1.0) -> Objective:
    """Mean of ``(dx^2 + dy^2)^(beta/2)`` over pixels (Mahendran & Vedaldi's TV^beta, beta=1: TV)."""

    def function(e: Evaluation) -> torch.Tensor:
        dx = e.image[..., :-1, 1:] - e.image[..., :-1, :-1]
        dy = e.image[..., 1:, :-1] - e.image[..., :-1, :-1]
        return (dx.pow(2) + dy.pow(2) + 1e-8).pow(beta / 2).flatten(1).mean(1)

    return Objective(function, "total_variation()" if beta == 1 else f"total_variation(beta={beta:g})")


def alpha_norm(alpha: float = 6.0, *, center: float = 0.5) -> Objective:
    """Mean ``|x - center|^alpha`` (Mahendran & Vedaldi's alpha-norm prior, alpha = 6)."""
    return Objective(lambda e: (e.image - center).abs().pow(alpha).flatten(1).mean(1),
                     f"alpha_norm({alpha:g})")


def blur(sigma: float = 0.5) -> Objective:
    """Squared distance of the image from a blurred copy of itself (Lucid's
    ``blur_input_each_step``): subtracting it pulls the image towards its own blur."""
    radius = max(1, int(3 * sigma))

    def function(e: Evaluation) -> torch.Tensor:
        blurred = gaussian_blur(e.image, sigma, radius=radius, padding="replicate")
        return 0.5 * (e.image - blurred.detach()).pow(2).flatten(1).sum(1)

    return Objective(function, f"blur({sigma:g})")


# -- losses for synthesis, as objectives (to maximize: they are negated) ----------------------

def feature_match(layer: str, target: torch.Tensor) -> Objective:
    """``-||phi(x) - phi_0||^2 / ||phi_0||^2`` (Mahendran & Vedaldi 2015, normalized L2 loss)."""
    target = target.detach()
    norm = target.flatten(1).pow(2).sum(1).clamp_min(1e-12)

    def function(e: Evaluation) -> torch.Tensor:
        activation = e.activation(layer)
        goal = target.to(activation).expand_as(activation)
        return -(activation - goal).flatten(1).pow(2).sum(1) / norm.to(activation)

    return Objective(function, f"feature_match({layer})", frozenset([layer]))


def gram_match(layer: str, target_gram: torch.Tensor) -> Objective:
    """``-||G(x) - G_0||^2 / ||G_0||^2`` at one layer (Gatys et al. 2015, per-layer normalized)."""
    target_gram = target_gram.detach()
    norm = target_gram.flatten(1).pow(2).sum(1).clamp_min(1e-12)

    def function(e: Evaluation) -> torch.Tensor:
        grams = gram(e.activation(layer))
        goal = target_gram.to(grams).expand_as(grams)
        return -(grams - goal).flatten(1).pow(2).sum(1) / norm.to(grams)

    return Objective(function, f"gram_match({layer})", frozenset([layer]))


def gatys_style_loss(layer: str, target_gram: torch.Tensor) -> Objective:
    """``-E_l = -1/(4 N_l^2 M_l^2) sum (G - G_hat)^2`` with ``G = F F^T`` unnormalized, ``N_l``
    channels and ``M_l`` positions (Gatys, Ecker & Bethge 2015, eq. 4; 2016, eq. 4).

    ``target_gram`` is the unnormalized Gram of the texture (``gram(F, normalize=False)``), for an
    image of the same size as the one synthesized (``M_l`` is taken from the image's activation).

    Example:
        >>> a = torch.rand(1, 4, 3, 3)
        >>> e = Evaluation({"l": a}, None, torch.zeros(1, 3, 6, 6))
        >>> float(gatys_style_loss("l", gram(a, normalize=False))(e)[0]) == 0
        True
    """
    target_gram = target_gram.detach()

    def function(e: Evaluation) -> torch.Tensor:
        activation = e.activation(layer)
        channels, positions = activation.shape[1], activation.flatten(2).shape[2]
        grams = gram(activation, normalize=False)
        goal = target_gram.to(grams).expand_as(grams)
        return -(grams - goal).flatten(1).pow(2).sum(1) / (4.0 * channels ** 2 * positions ** 2)

    return Objective(function, f"gatys_style_loss({layer})", frozenset([layer]))


def gatys_content_loss(layer: str, target: torch.Tensor) -> Objective:
    """``-1/2 sum (F - P)^2`` at one layer (Gatys, Ecker & Bethge 2016, eq. 1), unnormalized.

    Example:
        >>> a = torch.ones(1, 2, 2, 2)
        >>> e = Evaluation({"l": a}, None, torch.zeros(1, 3, 4, 4))
        >>> float(gatys_content_loss("l", torch.zeros(1, 2, 2, 2))(e)[0])
        -4.0
    """
    target = target.detach()

    def function(e: Evaluation) -> torch.Tensor:
        activation = e.activation(layer)
        goal = target.to(activation).expand_as(activation)
        return -0.5 * (activation - goal).flatten(1).pow(2).sum(1)

    return Objective(function, f"gatys_content_loss({layer})", frozenset([layer]))


def mv_alpha_norm(alpha: float = 6.0, *, bound: float, center: float | Sequence[float] = 0.5) -> Objective:
    """Mahendran & Vedaldi's ``R_alpha(x) = ||x - center||_alpha^alpha / (H W B^alpha)``: the sum
    over pixels and colours of ``|x - center|^alpha``, divided by ``H W bound^alpha``.

    Example:
        >>> e = Evaluation({}, None, torch.full((1, 3, 2, 2), 1.0))
        >>> float(mv_alpha_norm(2.0, bound=0.5, center=0.5)(e)[0])  # 12 * 0.25 / (4 * 0.25)
        3.0
    """
    def function(e: Evaluation) -> torch.Tensor:
        height, width = e.image.shape[-2:]
        centre = torch.as_tensor(center, dtype=e.image.dtype, device=e.image.device).view(1, -1, 1, 1)
        total = (e.image - centre).abs().pow(alpha).flatten(1).sum(1)
        return total / (height * width * bound ** alpha)

    return Objective(function, f"mv_alpha_norm({alpha:g}, B={bound:.4g})")


def mv_total_variation(beta: float = 2.0, *, variation: float) -> Objective:
    """Mahendran & Vedaldi's ``R_V^beta(x) = sum_ij ((x_i,j+1 - x_ij)^2 + (x_i+1,j - x_ij)^2)^(beta/2)
    / (H W V^beta)``, the squares summed over colours, on the (H-1) x (W-1) differences.

    Example:
        >>> ramp = torch.arange(3.0).view(1, 1, 1, 3).expand(1, 3, 3, 3)
        >>> e = Evaluation({}, None, ramp)
        >>> float(mv_total_variation(2.0, variation=1.0)(e)[0])  # 4 places * 3 colours / 9
        1.3333333730697632
    """
    def function(e: Evaluation) -> torch.Tensor:
        height, width = e.image.shape[-2:]
        dx = e.image[..., :-1, 1:] - e.image[..., :-1, :-1]
        dy = e.image[..., 1:, :-1] - e.image[..., :-1, :-1]
        squares = (dx.pow(2) + dy.pow(2)).sum(1)
        total = (squares + 1e-12).pow(beta / 2).flatten(1).sum(1) if beta != 2 else squares.flatten(1).sum(1)
        return total / (height * width * variation ** beta)

    return Objective(function, f"mv_total_variation({beta:g}, V={variation:.4g})")


def _batch_text(batch: int | None) -> str:
    return "" if batch is None else f"[batch={batch}]"


#: constructors by name, for the CLI and for listing
OBJECTIVES: Registry[Callable[..., Objective]] = Registry("objective", {
    "neuron": neuron, "channel": channel, "layer": layer, "direction": direction,
    "class_logit": class_logit, "class_probability": class_probability, "diversity": diversity,
    "interpolate": interpolate, "l1": l1, "l2": l2, "total_variation": total_variation,
    "alpha_norm": alpha_norm, "blur": blur, "feature_match": feature_match, "gram_match": gram_match,
    "gatys_style_loss": gatys_style_loss, "gatys_content_loss": gatys_content_loss,
    "mv_alpha_norm": mv_alpha_norm, "mv_total_variation": mv_total_variation,
})

"""Listeners: how each one perceives the candidate images, and how it picks one.

A listener sees every candidate as a row of per-token probabilities over the vocabulary (its
*perception*), scores each candidate by the evidence for the message's tokens (the sum of their
log-probabilities) and picks the best; ties are broken at random by the game's generator.

Perception comes from a *source*:

* ``"truth"``: ConceptWorld's ground truth (probability 1 for what is true, 0 otherwise);
* a ``NetworkPerceiver``: a trained network's pooled features at one layer, read by one
  multinomial logistic-regression probe per category fitted on other ConceptWorld images.
  What such a listener understands is not given; the probes' accuracy says what it sees.

and is restricted by the listener's *abilities*: a listener blind to a category perceives its
tokens as their base rate on every image (uninformative, so a message in that category ties).

Example:
    >>> from seethrough.games.attributes import image_pool
    >>> pool = image_pool("val", 50)
    >>> table = perceptions([ALL_SEEING, Listener("colour-blind", ("colour",))], pool)
    >>> table.shape
    torch.Size([2, 50, 36])
    >>> accuracy = perception_accuracy(table[1], pool.attributes)
    >>> accuracy["shape"], accuracy["colour"] < 0.5
    (1.0, True)
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import torch
from torch import nn

from seethrough.errors import InputError
from seethrough.games.attributes import CATEGORIES, ImagePool, image_pool, vocabulary

#: the log-probability of what a perfect perceiver knows to be false
LOG_FLOOR = -9.0


@dataclass(frozen=True)
class Listener:
    """A listener: a name, the categories it cannot perceive, and its perception source
    (``"truth"`` or the name of a ``NetworkPerceiver`` passed to ``perceptions``)."""

    name: str
    blind: tuple[str, ...] = ()
    source: str = "truth"

    def __post_init__(self):
        unknown = [c for c in self.blind if c not in CATEGORIES]
        if unknown:
            raise InputError(f"unknown categories {unknown} for listener {self.name!r}: use "
                             f"{', '.join(CATEGORIES)}")


def blind_listener(*categories: str, source: str = "truth") -> Listener:
    """A ground-truth listener blind to ``categories`` (``"all-seeing"`` when none)."""
    name = "+".join(categories) + "-blind" if categories else "all-seeing"
    return Listener(name, tuple(categories), source)


ALL_SEEING = blind_listener()
#: the population the speakers learn with: all-seeing, blind to one category, blind to two
TRAINING_POPULATION = (
    ALL_SEEING, *(blind_listener(c) for c in CATEGORIES),
    *(blind_listener(*pair) for pair in itertools.combinations(CATEGORIES, 2)))
#: listeners the speakers never play with in training: blind to three categories (each sees one)
HELD_OUT_POPULATION = tuple(blind_listener(*three) for three in itertools.combinations(CATEGORIES, 3))


def _features(model: nn.Module, layer: str, images: torch.Tensor, grayscale: bool,
              batch_size: int) -> torch.Tensor:
    """Mean- and max-pooled activations ``(N, 2C)`` of ``layer``; the model is left as it was
    (hooks removed, ``training`` and ``requires_grad`` restored)."""
    from seethrough.core import check_images, model_device, run_scope
    from seethrough.trace import capture

    check_images(images, model)
    rows = []
    with torch.no_grad(), run_scope(model, mode="eval"):
        for start in range(0, len(images), batch_size):
            batch = images[start:start + batch_size].to(model_device(model))
            if grayscale:
                batch = batch.mean(1, keepdim=True).expand(-1, 3, -1, -1)
            acts = capture(model, batch, layer)[layer].output.float()
            if acts.ndim != 4:
                raise InputError(f"layer {layer!r} has no spatial output {tuple(acts.shape)}: "
                                 "choose a convolutional layer (seethrough.layers(model))")
            rows.append(torch.cat([acts.mean((2, 3)), acts.amax((2, 3))], 1).cpu())
    return torch.cat(rows)


@dataclass
class NetworkPerceiver:
    """A trained network's perception: per-category multinomial logistic regression on its
    pooled features at ``layer`` (of grayscale images when ``grayscale``).

    Attributes:
        accuracy: per category, the probes' accuracy on held-out fitting images.
    """

    model: nn.Module
    layer: str
    grayscale: bool
    mean: torch.Tensor
    scale: torch.Tensor
    weight: torch.Tensor  # (D, T)
    bias: torch.Tensor  # (T,)
    accuracy: dict[str, float] = field(default_factory=dict)
    batch_size: int = 250

    @property
    def name(self) -> str:
        return f"network {self.layer}" + (", grayscale" if self.grayscale else "")

    def log_probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, T)`` per-token log-probabilities (each category's tokens sum to 1)."""
        features = _features(self.model, self.layer, images, self.grayscale, self.batch_size)
        logits = ((features - self.mean) / self.scale) @ self.weight + self.bias
        vocab = vocabulary()
        out = torch.empty_like(logits)
        for category in CATEGORIES:
            tokens = vocab.in_category(category)
            out[:, tokens] = torch.log_softmax(logits[:, tokens], 1)
        return out


def fit_perceiver(model: nn.Module, layer: str, *, grayscale: bool = False, count: int = 2000,
                  held_out: float = 0.25, strength: float = 0.5, seed: int = 1) -> NetworkPerceiver:
    """Fit a network listener's probes on ``count`` ConceptWorld training images of world seed
    ``seed`` (not the images games are played on); ``held_out`` of them measure its accuracy.

    Example:
        >>> import seethrough
        >>> ear = fit_perceiver(seethrough.load_model("conceptnet"), "features.block2",
        ...                     count=200)                                  # doctest: +SKIP
        >>> sorted(ear.accuracy)                                            # doctest: +SKIP
        ['colour', 'scene', 'shape', 'texture']
    """
    from sklearn.linear_model import LogisticRegression

    pool = image_pool("train", count, seed=seed, images=True)
    features = _features(model, layer, pool.images, grayscale, 250)
    fit = round(len(features) * (1 - held_out))
    mean, scale = features[:fit].mean(0), features[:fit].std(0) + 1e-6
    x = ((features - mean) / scale).double().numpy()
    vocab = vocabulary()
    weight = torch.zeros(features.shape[1], len(vocab))
    bias = torch.full((len(vocab),), -30.0)  # tokens never seen in fitting: never perceived
    accuracy = {}
    for category in CATEGORIES:
        tokens = vocab.in_category(category).nonzero()[:, 0]
        labels = pool.attributes[:, tokens].argmax(1).numpy()
        probe = LogisticRegression(C=strength, max_iter=500).fit(x[:fit], labels[:fit])
        columns = tokens[torch.as_tensor(probe.classes_)]
        coef = torch.as_tensor(probe.coef_, dtype=torch.float32)
        if len(probe.classes_) == 2:  # scikit-learn keeps one row for two classes
            coef = torch.cat([-coef / 2, coef / 2])
            intercept = torch.as_tensor([-probe.intercept_[0] / 2, probe.intercept_[0] / 2])
        else:
            intercept = torch.as_tensor(probe.intercept_)
        weight[:, columns] = coef.T
        bias[columns] = intercept.float()
        accuracy[category] = float(probe.score(x[fit:], labels[fit:])) if fit < len(x) else float("nan")
    return NetworkPerceiver(model, layer, grayscale, mean, scale, weight, bias, accuracy)


def perceptions(listeners: list[Listener] | tuple[Listener, ...], pool: ImagePool,
                perceivers: dict[str, NetworkPerceiver] | None = None) -> torch.Tensor:
    """``(L, N, T)`` log-probabilities: how each listener perceives each image of the pool.

    A network source needs the pool's images (``image_pool(..., images=True)``); each source is
    run once however many listeners share it.
    """
    perceivers = perceivers or {}
    vocab = vocabulary()
    base = {}
    for source in {listener.source for listener in listeners}:
        if source == "truth":
            base[source] = pool.attributes.clamp_min(torch.exp(torch.tensor(LOG_FLOOR))).log()
        elif source in perceivers:
            if pool.pixels is None:
                raise InputError("a network listener needs the pool's images: make it with "
                                 "image_pool(..., images=True)")
            base[source] = perceivers[source].log_probabilities(pool.images)
        else:
            raise InputError(f"unknown perception source {source!r}: use 'truth' or one of "
                             f"{sorted(perceivers) or 'the perceivers you pass'}")
    prior = pool.prior().clamp_min(1e-4).log()
    table = torch.empty(len(listeners), len(pool), len(vocab))
    for row, listener in enumerate(listeners):
        table[row] = base[listener.source]
        for category in listener.blind:
            tokens = vocab.in_category(category)
            table[row][:, tokens] = prior[tokens]
    return table


def perception_accuracy(log_probabilities: torch.Tensor, attributes: torch.Tensor) -> dict[str, float]:
    """Per category, how often the most probable token (first of ties) is the true one. A blind
    category scores the share of its most common token: chance."""
    vocab = vocabulary()
    found = {}
    for category in CATEGORIES:
        tokens = vocab.in_category(category)
        guess = log_probabilities[:, tokens].argmax(1)
        found[category] = float((guess == attributes[:, tokens].argmax(1)).float().mean())
    return found


def listener_picks(log_probabilities: torch.Tensor, candidates: torch.Tensor,
                   messages: torch.Tensor, generator: torch.Generator,
                   listeners: torch.Tensor | None = None) -> torch.Tensor:
    """Each game's pick: ``log_probabilities`` ``(N, T)`` (one listener) or ``(L, N, T)`` with
    ``listeners`` ``(B,)`` the listener of each game; ``candidates`` ``(B, K + 1)`` pool
    indices; ``messages`` ``(B, T)`` multi-hot. Returns ``(B,)`` positions in ``candidates``;
    ties are broken at random by ``generator``.

    Example:
        >>> table = torch.tensor([[0.0, -9.0], [-9.0, 0.0]])  # image 0 shows token 0
        >>> listener_picks(table, torch.tensor([[1, 0]]), torch.tensor([[1.0, 0.0]]),
        ...                torch.Generator().manual_seed(0)).tolist()
        [1]
    """
    if log_probabilities.ndim == 2:
        seen = log_probabilities[candidates]  # (B, K+1, T)
    else:
        if listeners is None:
            raise InputError("a table of several listeners needs `listeners`, one per game")
        seen = log_probabilities[listeners[:, None], candidates]
    scores = (seen * messages[:, None, :]).sum(-1)
    best = scores >= scores.max(1, keepdim=True).values - 1e-6
    draw = torch.rand(scores.shape, generator=generator)
    return (best * (draw + 1.0)).argmax(1)


__all__ = [
    "ALL_SEEING",
    "HELD_OUT_POPULATION",
    "TRAINING_POPULATION",
    "Listener",
    "NetworkPerceiver",
    "blind_listener",
    "fit_perceiver",
    "listener_picks",
    "perception_accuracy",
    "perceptions",
]

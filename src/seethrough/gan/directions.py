"""Latent directions (Shen et al. 2020, InterFaceGAN) and which layer controls what (Yang et al.
2021, the GAN hierarchy).

* ``fit_boundary`` (``fit_boundaries``: several from one sample set): sample latents, score an
  attribute on their images, keep the top and bottom ``extreme`` share (InterFaceGAN: 2 % each of
  500k; here of ``samples``) as positives and negatives, fit a linear SVM (scikit-learn's
  ``LinearSVC``) on a training part and report its accuracy on the held-out part. The boundary's
  unit normal is the direction.
* ``untrained_boundaries``: the same fit on the generator with its weights re-drawn, a control
  (after Adebayo et al. 2018's model randomization): an untrained generator is a smooth function
  of its latent, so attribute scores of its images can separate well above chance. A boundary
  means the *training* gave the latent that attribute only where it beats this control.
* ``walk``: move latents along a direction, ``z + alpha * n``, and score the attributes at each
  step (the attribute should change monotonically).
* ``conditional``: the paper's conditional manipulation: ``n1 - (n1 . n2) n2``, normalized,
  changes attribute 1 while leaving attribute 2 as it was.
* ``layer_control``: per generator layer, its input varied: for a generator with per-layer
  latents (``latent_chunks``, e.g. ``HierarchicalGenerator``) that layer's chunk of the latent
  resampled, as Yang et al. vary one layer's code; otherwise half of its channels taken from
  another latent's activations. The share of images whose shape (ConceptNet's class), main
  colour or scene (the segmenter's) changes: which layer decides what.

Example:
    >>> boundary = fit_boundary(generator, "colour:red", segmenter=seg, classifier=net)  # doctest: +SKIP
    >>> boundary.held_out_accuracy                                                      # doctest: +SKIP
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from seethrough.errors import InputError
from seethrough.gan.attributes import attribute_scores
from seethrough.gan.quality import generate_images, sample_latents
from seethrough.gan.result import FieldResult
from seethrough.trace import capture


@dataclass
class Boundary(FieldResult):
    """A linear boundary of an attribute in latent space: unit ``normal`` (D,), offset, accuracy."""

    attribute: str
    normal: torch.Tensor
    offset: float
    held_out_accuracy: float
    train_accuracy: float
    positives: int
    negatives: int

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame([{"attribute": self.attribute, "held_out_accuracy": self.held_out_accuracy,
                              "train_accuracy": self.train_accuracy, "positives": self.positives,
                              "negatives": self.negatives}])

    def plot(self):
        from seethrough.results import bar_figure

        return bar_figure(["train", "held out"], [self.train_accuracy, self.held_out_accuracy],
                          ylabel="SVM accuracy", title=self._title())

    def _title(self) -> str:
        return f"Boundary of {self.attribute}: held-out accuracy {self.held_out_accuracy:.1%}"


def fit_boundary(generator: nn.Module, attribute: str, *, segmenter: nn.Module,
                 classifier: nn.Module, samples: int = 4000, extreme: float = 0.1,
                 held_out: float = 0.3, seed: int = 0) -> Boundary:
    """InterFaceGAN's boundary of ``attribute`` (see the module docstring)."""
    return fit_boundaries(generator, [attribute], segmenter=segmenter, classifier=classifier,
                          samples=samples, extreme=extreme, held_out=held_out, seed=seed)[attribute]


def fit_boundaries(generator: nn.Module, attributes: list[str], *, segmenter: nn.Module,
                   classifier: nn.Module, samples: int = 4000, extreme: float = 0.1,
                   held_out: float = 0.3, seed: int = 0,
                   skip_unseparable: bool = False) -> dict[str, Boundary]:
    """``{attribute: Boundary}`` from one set of ``samples`` latents, generated and scored once
    (as InterFaceGAN labels one sample set for all its attributes); each is what
    ``fit_boundary`` gives for it alone. ``skip_unseparable`` leaves out an attribute whose
    scores do not separate at the extremes instead of raising."""
    if not 0 < extreme <= 0.5:
        raise InputError(f"extreme is the share kept at each end, in (0, 0.5], not {extreme}")
    latents = sample_latents(samples, generator.latent_dim, seed)
    scores = attribute_scores(generate_images(generator, latents), list(attributes),
                              segmenter=segmenter, classifier=classifier)
    boundaries = {}
    for attribute in attributes:
        try:
            boundaries[attribute] = _boundary(attribute, latents, scores[attribute], extreme,
                                              held_out, seed)
        except InputError:
            if not skip_unseparable:
                raise
    return boundaries


def untrained(generator: nn.Module, seed: int = 0) -> nn.Module:
    """A deep copy of ``generator`` with every weight re-drawn (``reinitialize``, seeded) and
    its batch-norm statistics re-estimated, in eval mode; ``generator`` is not touched."""
    import copy

    from seethrough.evaluation.sanity import reinitialize
    from seethrough.gan.training import standing_statistics

    control = copy.deepcopy(generator)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        reinitialize(control)
    if any(isinstance(m, nn.BatchNorm2d) for m in control.modules()):
        standing_statistics(control, batches=20, seed=seed)
    return control.eval()


def untrained_boundaries(generator: nn.Module, attributes: list[str], *, segmenter: nn.Module,
                         classifier: nn.Module, samples: int = 4000, extreme: float = 0.1,
                         held_out: float = 0.3, seed: int = 0) -> dict[str, Boundary]:
    """``fit_boundaries`` on ``untrained(generator)``: the accuracy a boundary reaches without
    any training (attributes the untrained generator never shows are left out).

    Example:
        >>> control = untrained_boundaries(generator, ["colour:red"], segmenter=seg,   # doctest: +SKIP
        ...                                classifier=net)
    """
    return fit_boundaries(untrained(generator, seed), attributes, segmenter=segmenter,
                          classifier=classifier, samples=samples, extreme=extreme,
                          held_out=held_out, seed=seed, skip_unseparable=True)


def _boundary(attribute: str, latents: torch.Tensor, scores: torch.Tensor, extreme: float,
              held_out: float, seed: int) -> Boundary:
    from sklearn.svm import LinearSVC

    count = max(4, int(extreme * len(latents)))
    order = scores.argsort()
    negatives, positives = order[:count], order[-count:]
    if scores[positives].min() <= scores[negatives].max():
        raise InputError(f"{attribute} scores do not separate at the extremes (the generator "
                         "barely shows it): draw more samples or pick another attribute")
    x = torch.cat([latents[positives], latents[negatives]]).numpy()
    y = torch.cat([torch.ones(count), torch.zeros(count)]).numpy()
    shuffle = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed)).numpy()
    x, y = x[shuffle], y[shuffle]
    cut = round(len(y) * (1 - held_out))
    svm = LinearSVC(C=1.0, dual="auto", random_state=seed).fit(x[:cut], y[:cut])
    weight = torch.as_tensor(svm.coef_[0], dtype=torch.float32)
    norm = float(weight.norm())
    return Boundary(attribute, weight / norm, float(svm.intercept_[0]) / norm,
                    float(svm.score(x[cut:], y[cut:])), float(svm.score(x[:cut], y[:cut])),
                    count, count)


@dataclass
class Walk(FieldResult):
    """Attribute scores (steps, attributes) averaged over latents moved ``alphas`` along a
    direction, and a few images per step."""

    direction_name: str
    alphas: torch.Tensor
    attributes: list[str]
    scores: torch.Tensor
    images: torch.Tensor

    def to_frame(self):
        import pandas as pd

        frame = pd.DataFrame(self.scores.numpy(), columns=self.attributes)
        frame.insert(0, "alpha", self.alphas.numpy())
        return frame

    def plot(self):
        from matplotlib.figure import Figure

        fig = Figure(figsize=(4.5, 3))
        ax = fig.add_subplot()
        for index, attribute in enumerate(self.attributes):
            ax.plot(self.alphas, self.scores[:, index], marker="o", label=attribute)
        ax.set_xlabel(f"steps along {self.direction_name}")
        ax.set_ylabel("mean score")
        ax.legend(fontsize=7)
        ax.set_title(self._title(), fontsize=9)
        fig.tight_layout()
        return fig

    def monotonic(self, attribute: str) -> float:
        """Spearman correlation of the step with the attribute's mean score (1 = monotonic up)."""
        from scipy.stats import spearmanr

        return float(spearmanr(self.alphas, self.scores[:, self.attributes.index(attribute)])[0])

    def _title(self) -> str:
        return f"Walking along {self.direction_name}"


@torch.no_grad()
def walk(generator: nn.Module, direction: torch.Tensor, attributes: list[str], *,
         segmenter: nn.Module, classifier: nn.Module, latents: torch.Tensor | None = None,
         alphas=(-3, -2, -1, 0, 1, 2, 3), name: str = "the direction", show: int = 4,
         seed: int = 1) -> Walk:
    """Scores of ``attributes`` as latents move ``alpha`` units along ``direction``."""
    direction = torch.as_tensor(direction, dtype=torch.float32)
    if direction.shape != (generator.latent_dim,):
        raise InputError(f"a direction has {generator.latent_dim} values (the latent size), "
                         f"not shape {tuple(direction.shape)}")
    direction = direction / direction.norm()
    latents = sample_latents(500, generator.latent_dim, seed) if latents is None else latents
    alphas = torch.as_tensor(alphas, dtype=torch.float32)
    rows, images = [], []
    for alpha in alphas:
        generated = generate_images(generator, latents + alpha * direction)
        scores = attribute_scores(generated, attributes, segmenter=segmenter, classifier=classifier)
        rows.append(torch.stack([scores[a].mean() for a in attributes]))
        images.append(generated[:show])
    return Walk(name, alphas, list(attributes), torch.stack(rows), torch.stack(images, 1))


def conditional(primary: Boundary, condition: Boundary) -> torch.Tensor:
    """The primary normal with the condition's projected out, as a unit vector."""
    n1, n2 = primary.normal, condition.normal
    projected = n1 - (n1 @ n2) * n2
    if projected.norm() < 1e-6:
        raise InputError("the two boundaries are parallel: nothing is left after the projection")
    return projected / projected.norm()


@dataclass
class LayerControl(FieldResult):
    """Per layer, the share of images whose shape, main colour or scene changes when that
    layer's input is varied (``probe``: its latent chunk resampled, or half its channels taken
    from another latent)."""

    layers: list[str]
    changed: torch.Tensor  # (layers, 3): shape, colour, scene
    images: int
    probe: str = "half the channels"

    ASPECTS = ("shape", "colour", "scene")

    def to_frame(self):
        import pandas as pd

        frame = pd.DataFrame(self.changed.numpy(), columns=list(self.ASPECTS))
        frame.insert(0, "layer", self.layers)
        return frame

    def plot(self):
        from matplotlib.figure import Figure

        fig = Figure(figsize=(4.5, 3))
        ax = fig.add_subplot()
        for index, aspect in enumerate(self.ASPECTS):
            ax.plot(range(len(self.layers)), self.changed[:, index], marker="o", label=aspect)
        ax.set_xticks(range(len(self.layers)), self.layers)
        ax.set_ylabel("share of images changed")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7)
        ax.set_title(self._title(), fontsize=9)
        fig.tight_layout()
        return fig

    def _title(self) -> str:
        return f"Which layer controls what: {self.probe} from another latent"


def _aspects(images: torch.Tensor, segmenter: nn.Module, classifier: nn.Module) -> torch.Tensor:
    """(N, 3): ConceptNet's class, the most frequent non-background colour, the scene."""
    from seethrough.models.segmenter import segment

    with torch.no_grad():
        shape = torch.cat([classifier(images[i:i + 250]).argmax(1) for i in range(0, len(images), 250)])
    labels = segment(segmenter, images)
    colours = labels["colour"].flatten(1)
    counts = torch.stack([(colours == k).sum(1) for k in range(1, int(colours.max()) + 2)], 1)
    return torch.stack([shape, counts.argmax(1) + 1, labels["scene"]], 1)


@torch.no_grad()
def layer_control(generator: nn.Module, layers: list[str], *, segmenter: nn.Module,
                  classifier: nn.Module, samples: int = 500, seed: int = 2) -> LayerControl:
    """See ``LayerControl``; with per-layer latents (``generator.latent_chunks``, naming every
    layer) each layer's chunk comes from a donor latent; otherwise half of its channels, chosen
    at random per layer (seeded), the same for all images."""
    from seethrough.preserve import preserve

    latents = sample_latents(samples, generator.latent_dim, seed)
    donors = sample_latents(samples, generator.latent_dim, seed + 1)
    base = _aspects(generate_images(generator, latents), segmenter, classifier)
    chunks = getattr(generator, "latent_chunks", None)
    if chunks is not None and all(layer in chunks for layer in layers):
        rows = []
        for layer in layers:
            mixed = latents.clone()
            mixed[:, chunks[layer]] = donors[:, chunks[layer]]
            rows.append((_aspects(generate_images(generator, mixed), segmenter, classifier)
                         != base).float().mean(0))
        return LayerControl(list(layers), torch.stack(rows), samples, "its latent chunk")
    draw = torch.Generator().manual_seed(seed)
    rows = []
    with preserve(generator):
        generator.eval()
        donor_acts = capture(generator, donors, list(layers))
        for layer in layers:
            acts = donor_acts[layer].output
            half = torch.randperm(acts.shape[1], generator=draw)[:acts.shape[1] // 2]
            mixed = _mixed(generator, layer, latents, acts, half)
            rows.append((_aspects(mixed, segmenter, classifier) != base).float().mean(0))
    return LayerControl(list(layers), torch.stack(rows), samples)


def _mixed(generator: nn.Module, layer: str, latents: torch.Tensor, donor: torch.Tensor,
           channels: torch.Tensor) -> torch.Tensor:
    """Images with ``channels`` of ``layer`` taken from the donor activations."""
    from seethrough.trace import resolve_layer

    _, module = resolve_layer(generator, layer)
    position = {"start": 0}

    def swap(_module, _inputs, output):
        start = position["start"]
        output = output.clone()
        output[:, channels] = donor[start:start + len(output), channels]
        position["start"] += len(output)
        return output

    handle = module.register_forward_hook(swap)
    try:
        return generate_images(generator, latents)
    finally:
        handle.remove()


__all__ = ["Boundary", "LayerControl", "Walk", "conditional", "fit_boundaries", "fit_boundary",
           "layer_control", "untrained", "untrained_boundaries", "walk"]

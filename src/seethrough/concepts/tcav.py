"""TCAV (Kim et al. 2018): is a class sensitive to a concept direction of a layer?

A concept activation vector (CAV) is the normal of a linear classifier (scikit-learn
``LogisticRegression``) separating a layer's activations on concept images from those on random
images. The TCAV score of a class is the fraction of its images whose logit increases along
the CAV (positive directional derivative ``grad_a logit . v``). Significance: CAVs are trained
``runs`` times against different random sets, and the same is done for random-vs-random
"concepts"; a two-sided t-test on the two lists of scores (``p < alpha``) says whether the
concept's score differs from chance.

Concept images are dataset images where the concept covers at least ``min_cover`` of the pixels
(or carries the image-level label); random images are drawn from the whole dataset.

Example:
    >>> result = tcav(model, "features.6", ConceptWorld("val", length=400),
    ...               concepts=["stripes_horizontal", "red"], classes=[0, 1])   # doctest: +SKIP
    >>> result.to_frame()                                                        # doctest: +SKIP
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from torch import nn

from seethrough.core import Target, layer_gradients
from seethrough.data.concepts import categories_of
from seethrough.dissection.labels import Vocabulary, collate
from seethrough.errors import InputError
from seethrough.results import Result
from seethrough.tallying import tally
from seethrough.trace import resolve_layer


@dataclass
class TCAVResult(Result):
    """Rows of concept, class, mean score, std, random mean, p-value, significant."""

    rows: list[dict]

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame(self.rows)

    def plot(self):
        """TCAV score per concept and class (bars, * = significant) beside the random mean."""
        from matplotlib.figure import Figure

        labels = [f"{row.get('concept')} / {row.get('class')}" for row in self.rows]
        fig = Figure(figsize=(min(12.0, 2.0 + 0.45 * len(labels)), 3.2))
        ax = fig.add_subplot()
        positions = range(len(self.rows))
        ax.bar(positions, [row.get("tcav", 0.0) for row in self.rows],
               yerr=[row.get("tcav_std", 0.0) for row in self.rows], color="#1f77b4",
               label="concept")
        ax.scatter(positions, [row.get("random", float("nan")) for row in self.rows],
                   color="black", marker="_", s=200, label="random", zorder=3)
        for position, row in zip(positions, self.rows):
            if row.get("significant"):
                ax.text(position, 1.02, "*", ha="center", fontsize=10)
        ax.set_xticks(list(positions), labels, rotation=45, ha="right", fontsize=7)
        ax.set_ylim(0, 1.1)
        ax.set_ylabel("TCAV score")
        ax.set_title("TCAV (concept / class; * significant)", fontsize=10)
        ax.legend(fontsize=7, frameon=False)
        fig.tight_layout()
        return fig

    def _title(self) -> str:
        return "TCAV"

    def _settings(self) -> dict:
        return {"rows": self.rows}

    @classmethod
    def _from_saved(cls, settings: dict, tensors: dict[str, torch.Tensor]) -> TCAVResult:
        return cls([dict(row) for row in settings["rows"]])


class ClassGradients:
    """A ``tally`` statistic: a layer's flattened activations ``(N, D)`` and, per class, the
    gradient of the class logit with respect to them (``core.layer_gradients``: the layer's own
    output, untouched by in-place ops after it), with each image's class label and how much of
    it each concept covers."""

    def __init__(self, model: nn.Module, layer: str, classes: list[int], concepts: list[int]):
        self.model, self.layer, self.classes, self.concepts = model, layer, classes, concepts
        self.acts: list[torch.Tensor] = []
        self.grads: dict[int, list[torch.Tensor]] = {c: [] for c in classes}
        self.labels: list[torch.Tensor] = []
        self.cover: list[torch.Tensor] = []

    def update(self, batch) -> None:
        labels, classes = batch.labels
        for position, c in enumerate(self.classes):
            goal = Target.of(c, len(batch.images))
            acts, grads = layer_gradients(self.model, batch.images, goal, self.layer,
                                          batch_size=len(batch.images))
            self.grads[c].append(grads.flatten(1).cpu())
            if position == 0:
                self.acts.append(acts.flatten(1).cpu())
        self.labels.append(classes)
        fractions = []
        for index in self.concepts:
            pixel = (labels.pixel == index).any(1).float().mean((1, 2))
            fractions.append(torch.maximum(pixel, (labels.image == index).any(1).float()))
        self.cover.append(torch.stack(fractions, 1))

    def merge(self, other: ClassGradients) -> ClassGradients:
        self.acts += other.acts
        self.labels += other.labels
        self.cover += other.cover
        for c in self.classes:
            self.grads[c] += other.grads[c]
        return self

    def state_dict(self) -> dict:
        return {"acts": self.acts, "grads": self.grads, "labels": self.labels, "cover": self.cover}

    def load_state_dict(self, state: dict) -> None:
        self.acts, self.grads = list(state["acts"]), {c: list(g) for c, g in state["grads"].items()}
        self.labels, self.cover = list(state["labels"]), list(state["cover"])


def _with_classes(samples: list[dict], vocabulary: Vocabulary):
    """Concept collate, plus each sample's class ``label`` (-1 where it has none)."""
    images, labels = collate(samples, vocabulary)
    return images, (labels, torch.tensor([int(s.get("label", -1)) for s in samples]))


def concept_activation_vector(positive: np.ndarray, negative: np.ndarray, *, seed: int = 0,
                              regularization: float = 1.0) -> np.ndarray:
    """Unit normal of a logistic regression separating positive from negative activations.

    Solved in the dual (liblinear): with far fewer examples than dimensions, as usual for a
    layer's flattened activations, that is an order of magnitude faster than L-BFGS.
    """
    from sklearn.linear_model import LogisticRegression

    x = np.concatenate([positive, negative])
    y = np.r_[np.ones(len(positive)), np.zeros(len(negative))]
    classifier = LogisticRegression(C=regularization, solver="liblinear", dual=len(x) < x.shape[1],
                                    max_iter=2000, random_state=seed)
    classifier.fit(x, y)
    v = classifier.coef_[0]
    return v / max(np.linalg.norm(v), 1e-12)


def tcav(model: nn.Module, layer: str, dataset, *, concepts: list[str], classes: list[int],
         runs: int = 10, examples: int = 40, class_examples: int = 60, min_cover: float = 0.05,
         alpha: float = 0.05, batch_size: int = 32, seed: int = 0,
         progress: bool | None = None) -> TCAVResult:
    """TCAV scores with a t-test against random concepts; see the module docstring.

    One ``seethrough.tallying`` pass over the dataset gives the layer's activations, the class
    gradients, the class labels and the concepts' cover (``ClassGradients``)."""
    from scipy.stats import ttest_ind

    name, _ = resolve_layer(model, layer)
    vocabulary = Vocabulary(categories_of(dataset))
    rng = np.random.default_rng(seed)
    unknown = [c for c in concepts if c not in vocabulary.names]
    if unknown:
        raise InputError(f"unknown concept {unknown[0]!r}; known: {', '.join(vocabulary.names[1:])}")
    if 2 * examples > len(dataset):
        raise InputError(f"need at least {2 * examples} images for {examples} random examples")
    statistic = ClassGradients(model, name, list(classes),
                               [vocabulary.names.index(c) for c in concepts])
    tally(model, [], dataset, {"gradients": statistic}, batch_size=batch_size,
          collate=partial(_with_classes, vocabulary=vocabulary), progress=progress, desc="tcav")
    targets = torch.cat(statistic.labels)
    covered = torch.cat(statistic.cover)
    cover = {}
    for position, concept in enumerate(concepts):
        cover[concept] = np.flatnonzero(covered[:, position].numpy() >= min_cover)
        if len(cover[concept]) < 4:
            raise InputError(f"only {len(cover[concept])} images show {concept!r}: use more data")
    class_members = {c: np.flatnonzero(targets.numpy() == c)[:class_examples] for c in classes}
    if any(len(m) == 0 for m in class_members.values()):
        raise InputError(f"some classes of {classes} have no images in this dataset")
    acts = torch.cat(statistic.acts).double().numpy()
    grads = {c: torch.cat(g) for c, g in statistic.grads.items()}

    def random_set():
        return rng.choice(len(dataset), size=examples, replace=False)

    def scores(vectors, c):
        g = grads[c][torch.as_tensor(class_members[c])].double().numpy()
        return [float(((g @ v) > 0).mean()) for v in vectors]

    random_cavs = [concept_activation_vector(acts[random_set()], acts[random_set()], seed=run)
                   for run in range(runs)]
    rows = []
    for concept in concepts:
        cavs = []
        for run in range(runs):
            chosen = rng.choice(cover[concept], size=min(examples, len(cover[concept])), replace=False)
            cavs.append(concept_activation_vector(acts[chosen], acts[random_set()], seed=run))
        for c in classes:
            concept_scores, random_scores = scores(cavs, c), scores(random_cavs, c)
            with warnings.catch_warnings():  # identical scores: the t-test is undefined (nan)
                warnings.simplefilter("ignore", RuntimeWarning)
                p_value = float(ttest_ind(concept_scores, random_scores).pvalue)
            p_value = 1.0 if np.isnan(p_value) else p_value
            rows.append({"concept": concept, "class": c, "tcav": float(np.mean(concept_scores)),
                         "tcav_std": float(np.std(concept_scores)),
                         "random": float(np.mean(random_scores)), "p_value": p_value,
                         "significant": p_value < alpha})
    return TCAVResult(rows)

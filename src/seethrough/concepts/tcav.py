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

import numpy as np
import torch
from torch import nn

from seethrough.dissection.labels import Vocabulary, collate
from seethrough.errors import InputError
from seethrough.trace import Trace, resolve_layer


@dataclass
class TCAVResult:
    """Rows of concept, class, mean score, std, random mean, p-value, significant."""

    rows: list[dict]

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame(self.rows)


def _activations_and_gradients(model, layer, images, classes, batch_size):
    """Flattened activations (N, D) and per-class logit gradients {class: (N, D)}."""
    acts, grads = [], {c: [] for c in classes}
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size]
        for position, c in enumerate(classes):
            with Trace(model, layer, retain_grad=True) as trace:
                for p in model.parameters():
                    p.requires_grad_(False)  # restored by Trace; keeps the user's .grad untouched
                logits = model(x.clone().requires_grad_(True))
                logits[:, c].sum().backward()
                grads[c].append(trace[layer].grad.flatten(1).detach())
                if position == 0:
                    acts.append(trace[layer].output.detach().flatten(1).clone())
    return torch.cat(acts), {c: torch.cat(g) for c, g in grads.items()}


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
         alpha: float = 0.05, batch_size: int = 32, seed: int = 0) -> TCAVResult:
    """TCAV scores with a t-test against random concepts; see the module docstring."""
    from scipy.stats import ttest_ind

    name, _ = resolve_layer(model, layer)
    vocabulary = Vocabulary(dataset.categories)
    rng = np.random.default_rng(seed)
    samples = [dataset[i] for i in range(len(dataset))]
    images, labels = collate(samples, vocabulary)
    targets = torch.tensor([int(s.get("label", -1)) for s in samples])
    cover = {}
    for concept in concepts:
        if concept not in vocabulary.names:
            raise InputError(f"unknown concept {concept!r}; known: {', '.join(vocabulary.names[1:])}")
        index = vocabulary.names.index(concept)
        fraction = (labels.pixel == index).any(1).float().mean((1, 2))
        fraction = torch.maximum(fraction, (labels.image == index).any(1).float())
        cover[concept] = np.flatnonzero(fraction.numpy() >= min_cover)
        if len(cover[concept]) < 4:
            raise InputError(f"only {len(cover[concept])} images show {concept!r}: use more data")
    if 2 * examples > len(dataset):
        raise InputError(f"need at least {2 * examples} images for {examples} random examples")
    class_members = {c: np.flatnonzero(targets.numpy() == c)[:class_examples] for c in classes}
    if any(len(m) == 0 for m in class_members.values()):
        raise InputError(f"some classes of {classes} have no images in this dataset")
    acts, grads = _activations_and_gradients(model, name, images, classes, batch_size)
    acts = acts.double().numpy()

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

"""Net2Vec (Fong & Vedaldi 2018): concepts as learned linear combinations of a layer's channels.

Segmentation: per concept ``c`` a weight vector ``w_c`` (K,) and bias ``b_c`` so that
``sigmoid(w_c . a(x, p) + b_c)`` predicts the concept's mask at every pixel ``p`` of the label map
(activations upsampled bilinearly), trained with the paper's class-balanced per-pixel binary
cross-entropy (positives weighted ``alpha = 1 - mean positive fraction``). The learned mask
(``sigmoid > 0.5``) is scored with the same dataset-wide IoU as Network Dissection, beside the
IoU of the best single unit (thresholded at its top-0.005 quantile, chosen on the training data).

Classification: ``sigmoid(w_c . mean_p a(x, p) + b_c)`` predicts whether the concept is in the
image; scored by average precision beside the best single unit's mean activation.

Example:
    >>> result = net2vec(model, "features.6", train_world, val_world)   # doctest: +SKIP
    >>> result.to_frame().sort_values("gain").tail()                     # doctest: +SKIP
"""
from __future__ import annotations

from contextlib import closing
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from seethrough.data.concepts import categories_of, unwrap
from seethrough.dissection.labels import Vocabulary, collate
from seethrough.dissection.run import dissect, unit_maps
from seethrough.dissection.upsample import bilinear_matrix, upsample
from seethrough.errors import InputError
from seethrough.results import Result
from seethrough.tallying import ActivationCache, tally
from seethrough.tallying.stats import Moments
from seethrough.trace import resolve_layer

MODES = ("segmentation", "classification")


@dataclass
class Net2VecResult(Result):
    """Per concept: learned weights, and the score of the combination vs the best single unit."""

    layer: str
    mode: str
    concepts: list[str]
    categories: list[str]
    weights: torch.Tensor  # (C, K)
    bias: torch.Tensor  # (C,)
    score: torch.Tensor  # (C,) IoU (segmentation) or average precision (classification)
    single_unit_score: torch.Tensor  # (C,)
    best_unit: torch.Tensor  # (C,)

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame({
            "concept": self.concepts, "category": self.categories, "net2vec": self.score.numpy(),
            "best_unit": self.best_unit.numpy(), "single_unit": self.single_unit_score.numpy(),
            "gain": (self.score - self.single_unit_score).numpy(),
        })

    def plot(self):
        """Per concept the Net2Vec score beside the best single unit's (grouped bars)."""
        import numpy as np
        from matplotlib.figure import Figure

        positions = np.arange(len(self.concepts))
        fig = Figure(figsize=(min(12.0, 2.0 + 0.5 * len(self.concepts)), 3.2))
        ax = fig.add_subplot()
        ax.bar(positions - 0.2, self.score.cpu().numpy(), 0.4, label="net2vec", color="#d62728")
        ax.bar(positions + 0.2, self.single_unit_score.cpu().numpy(), 0.4, label="best unit",
               color="#7f7f7f")
        ax.set_xticks(positions, self.concepts, rotation=45, ha="right", fontsize=7)
        ax.set_ylabel("IoU" if self.mode == "segmentation" else "average precision")
        ax.set_title(f"Net2Vec ({self.mode}) at {self.layer}", fontsize=10)
        ax.legend(fontsize=7, frameon=False)
        fig.tight_layout()
        return fig

    def _title(self) -> str:
        return f"Net2Vec ({self.mode}) at {self.layer}"

    def _settings(self) -> dict:
        return {"layer": self.layer, "mode": self.mode, "concepts": self.concepts,
                "categories": self.categories}

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {"weights": self.weights, "bias": self.bias, "score": self.score,
                "single_unit_score": self.single_unit_score, "best_unit": self.best_unit}

    @classmethod
    def _from_saved(cls, settings: dict, tensors: dict[str, torch.Tensor]) -> Net2VecResult:
        return cls(settings["layer"], settings["mode"], list(settings["concepts"]),
                   list(settings["categories"]), tensors["weights"], tensors["bias"],
                   tensors["score"], tensors["single_unit_score"], tensors["best_unit"])


def _batches(cache: ActivationCache, layer: str):
    """``(activations (N, K, h, w), labels)`` of every cached batch."""
    for acts, _, labels in cache:
        yield unit_maps(acts)[layer], labels


def _targets(labels, concepts: torch.Tensor, mode: str) -> torch.Tensor:
    """(N, C, H, W) pixel targets or (N, C) image targets for global concept indices."""
    pixel = (labels.pixel[:, :, None] == concepts[None, None, :, None, None]).any(1).float()
    if mode == "segmentation":
        return pixel
    image = (labels.image[:, :, None] == concepts[None, None]).any(1).float()
    return torch.maximum(pixel.amax((2, 3)), image)


def net2vec(model: nn.Module, layer: str, train, val, *, mode: str = "segmentation",
            concepts: list[str] | None = None, epochs: int = 15, lr: float = 0.05,
            batch_size: int = 32, quantile: float = 0.005, seed: int = 0,
            progress: bool | None = None) -> Net2VecResult:
    """Learn one channel combination per concept on ``train``; compare on ``val`` (see module).

    The model runs once over each dataset (``seethrough.tallying``, activations kept in an
    ``ActivationCache``); training epochs, the single-unit dissection and the scores read the
    cache."""
    if mode not in MODES:
        raise InputError(f"mode must be one of {MODES}, not {mode!r}")
    name, _ = resolve_layer(model, layer)
    vocabulary = Vocabulary(categories_of(train))
    with closing(ActivationCache()) as train_cache, closing(ActivationCache()) as val_cache:
        return _net2vec(model, name, train, val, vocabulary, train_cache, val_cache, mode=mode,
                        concepts=concepts, epochs=epochs, lr=lr, batch_size=batch_size,
                        quantile=quantile, seed=seed, progress=progress)


def _net2vec(model, layer, train, val, vocabulary, train_cache, val_cache, *, mode, concepts,
             epochs, lr, batch_size, quantile, seed, progress) -> Net2VecResult:
    passes = {"batch_size": batch_size, "collate": partial(collate, vocabulary=vocabulary),
              "progress": progress}
    moments = Moments(layer)  # standardize units with training statistics
    tally(model, [layer], train, {"moments": moments}, cache=train_cache,
          activations=unit_maps, desc="net2vec: train activations", **passes)
    tally(model, [layer], val, {}, cache=val_cache, desc="net2vec: val activations", **passes)
    pixel_categories = list(unwrap(train)[0].get("masks", {}))
    wanted = [i for i in range(1, len(vocabulary))
              if (mode == "classification" or vocabulary.category_name(i) in pixel_categories)
              and (concepts is None or vocabulary.names[i] in concepts)]
    if not wanted:
        raise InputError(f"no concepts to learn for mode {mode!r} (asked for {concepts})")
    index = torch.tensor(wanted)
    units = len(moments.mean)
    torch.manual_seed(seed)
    weights = torch.zeros(len(wanted), units, requires_grad=True)
    bias = torch.zeros(len(wanted), requires_grad=True)
    # standardized units make one learning rate fit every layer
    mean, std = moments.mean.float(), moments.std.float().clamp_min(1e-6)
    positives = torch.zeros(len(wanted))
    total = 0.0
    for _, labels in _batches(train_cache, layer):
        target = _targets(labels, index, mode)
        positives += target.transpose(0, 1).reshape(len(wanted), -1).sum(1)
        total += target[:, 0].numel()
    alpha = (1 - positives / total).clamp(0.5, 0.999)  # Fong & Vedaldi's class balance
    optimizer = torch.optim.Adam([weights, bias], lr=lr)
    matrices = {}

    def predict(acts: torch.Tensor, size) -> torch.Tensor:
        a = (acts - mean[:, None, None]) / std[:, None, None]
        if mode == "classification":
            return a.mean((2, 3)) @ weights.T + bias
        if size not in matrices:
            h, w = a.shape[-2:]
            matrices[size] = (bilinear_matrix(h, size[0]).float(), bilinear_matrix(w, size[1]).float())
        logits = torch.einsum("ck,nkhw->nchw", weights, a) + bias[None, :, None, None]
        return upsample(logits, *matrices[size])  # linear: upsampling commutes with w . a

    for _ in range(epochs):
        for images, labels in _batches(train_cache, layer):
            target = _targets(labels, index, mode)
            logits = predict(images, labels.size)
            shape = (1, -1) + (1,) * (target.ndim - 2)
            weight = alpha.view(shape) * target + (1 - alpha.view(shape)) * (1 - target)
            loss = F.binary_cross_entropy_with_logits(logits, target, weight=weight)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    with torch.no_grad():
        if mode == "segmentation":
            inter, union = torch.zeros(len(wanted)), torch.zeros(len(wanted))
            for images, labels in _batches(val_cache, layer):
                target = _targets(labels, index, mode).bool()
                mask = predict(images, labels.size) > 0
                inter += (mask & target).sum((0, 2, 3)).float()
                union += (mask | target).sum((0, 2, 3)).float()
            score = torch.where(union > 0, inter / union.clamp_min(1), torch.zeros_like(union))
            units_train = dissect(model, [layer], train, quantile=quantile, cache=train_cache,
                                  batch_size=batch_size, progress=progress)
            best = units_train.iou(layer)[:, index].argmax(0)
            thresholds = {layer: units_train.layers[layer].thresholds}
            units_val = dissect(model, [layer], val, quantile=quantile, thresholds=thresholds,
                                cache=val_cache, batch_size=batch_size, progress=progress)
            single = units_val.iou(layer)[best, index].float()
        else:
            score, single, best = _classification_scores(predict, train_cache, val_cache, layer,
                                                         index)
    # weights in the units' own scale: w . a + b == (w / std) . a + (b - w . mean / std)
    raw = (weights / std).detach()
    return Net2VecResult(
        layer=layer, mode=mode, concepts=[vocabulary.names[i] for i in wanted],
        categories=[vocabulary.category_name(i) for i in wanted], weights=raw,
        bias=(bias - weights @ (mean / std)).detach(), score=score.float(),
        single_unit_score=single.float(), best_unit=best)


def _classification_scores(predict, train_cache, val_cache, layer, index):
    from sklearn.metrics import average_precision_score

    def gather(cache):
        pooled, targets, logits = [], [], []
        for images, labels in _batches(cache, layer):
            pooled.append(images.mean((2, 3)))
            targets.append(_targets(labels, index, "classification"))
            logits.append(predict(images, labels.size))
        return torch.cat(pooled), torch.cat(targets), torch.cat(logits)

    def ap(scores, truth):
        return average_precision_score(truth.numpy(), scores.numpy()) if 0 < truth.sum() < len(truth) else 0.0

    train_pooled, train_truth, _ = gather(train_cache)
    val_pooled, val_truth, val_logits = gather(val_cache)
    score = torch.tensor([ap(val_logits[:, c], val_truth[:, c]) for c in range(len(index))])
    best = torch.tensor([
        max(range(train_pooled.shape[1]), key=lambda k: ap(train_pooled[:, k], train_truth[:, c]))
        for c in range(len(index))])
    single = torch.tensor([ap(val_pooled[:, int(best[c])], val_truth[:, c]) for c in range(len(index))])
    return score, single, best

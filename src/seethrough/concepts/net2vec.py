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

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from seethrough.dissection.experiments import cached_activations, dissect_cached
from seethrough.dissection.labels import Vocabulary, collate
from seethrough.dissection.upsample import bilinear_matrix, upsample
from seethrough.errors import InputError

MODES = ("segmentation", "classification")


@dataclass
class Net2VecResult:
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


def _batches(cache, vocabulary, batch_size):
    for start in range(0, len(cache), batch_size):
        samples = [cache[i] for i in range(start, min(len(cache), start + batch_size))]
        yield collate(samples, vocabulary)


def _targets(labels, concepts: torch.Tensor, mode: str) -> torch.Tensor:
    """(N, C, H, W) pixel targets or (N, C) image targets for global concept indices."""
    pixel = (labels.pixel[:, :, None] == concepts[None, None, :, None, None]).any(1).float()
    if mode == "segmentation":
        return pixel
    image = (labels.image[:, :, None] == concepts[None, None]).any(1).float()
    return torch.maximum(pixel.amax((2, 3)), image)


def net2vec(model: nn.Module, layer: str, train, val, *, mode: str = "segmentation",
            concepts: list[str] | None = None, epochs: int = 15, lr: float = 0.05,
            batch_size: int = 32, quantile: float = 0.005, seed: int = 0) -> Net2VecResult:
    """Learn one channel combination per concept on ``train``; compare on ``val`` (see module)."""
    if mode not in MODES:
        raise InputError(f"mode must be one of {MODES}, not {mode!r}")
    vocabulary = Vocabulary(train.categories)
    train_cache = cached_activations(model, layer, train, batch_size=batch_size)
    val_cache = cached_activations(model, layer, val, batch_size=batch_size)
    pixel_categories = list(train[0].get("masks", {}))
    wanted = [i for i in range(1, len(vocabulary))
              if (mode == "classification" or vocabulary.category_name(i) in pixel_categories)
              and (concepts is None or vocabulary.names[i] in concepts)]
    if not wanted:
        raise InputError(f"no concepts to learn for mode {mode!r} (asked for {concepts})")
    index = torch.tensor(wanted)
    units = train_cache[0]["image"].shape[0]
    torch.manual_seed(seed)
    weights = torch.zeros(len(wanted), units, requires_grad=True)
    bias = torch.zeros(len(wanted), requires_grad=True)
    # standardize units with training statistics (makes one learning rate fit every layer)
    stacked = torch.stack([cache["image"] for cache in train_cache.items])
    mean, std = stacked.mean((0, 2, 3)), stacked.std((0, 2, 3)).clamp_min(1e-6)
    positives = torch.zeros(len(wanted))
    total = 0.0
    for _, labels in _batches(train_cache, vocabulary, batch_size):
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
        for images, labels in _batches(train_cache, vocabulary, batch_size):
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
            for images, labels in _batches(val_cache, vocabulary, batch_size):
                target = _targets(labels, index, mode).bool()
                mask = predict(images, labels.size) > 0
                inter += (mask & target).sum((0, 2, 3)).float()
                union += (mask | target).sum((0, 2, 3)).float()
            score = torch.where(union > 0, inter / union.clamp_min(1), torch.zeros_like(union))
            units_train = dissect_cached(train_cache, quantile=quantile, batch_size=batch_size,
                                         progress=False)
            best = units_train.iou("units")[:, index].argmax(0)
            thresholds = {"units": units_train.layers["units"].thresholds}
            units_val = dissect_cached(val_cache, quantile=quantile, thresholds=thresholds,
                                       batch_size=batch_size, progress=False)
            single = units_val.iou("units")[best, index].float()
        else:
            score, single, best = _classification_scores(predict, train_cache, val_cache,
                                                         vocabulary, index, batch_size)
    # weights in the units' own scale: w . a + b == (w / std) . a + (b - w . mean / std)
    raw = (weights / std).detach()
    return Net2VecResult(
        layer=layer, mode=mode, concepts=[vocabulary.names[i] for i in wanted],
        categories=[vocabulary.category_name(i) for i in wanted], weights=raw,
        bias=(bias - weights @ (mean / std)).detach(), score=score.float(),
        single_unit_score=single.float(), best_unit=best)


def _classification_scores(predict, train_cache, val_cache, vocabulary, index, batch_size):
    from sklearn.metrics import average_precision_score

    def gather(cache):
        pooled, targets, logits = [], [], []
        for images, labels in _batches(cache, vocabulary, batch_size):
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

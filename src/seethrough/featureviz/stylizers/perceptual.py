"""Perceptual loss (Johnson, Alahi & Fei-Fei 2016) on any feature extractor, layers by name.

``content``: ``||F(y) - F(x)||^2 / ||F(x)||^2`` at one layer (per image); ``style``: the mean
over the style layers of ``||G(y) - G_s||^2 / ||G_s||^2`` with ``G = F F^T / positions``
(``objectives.gram``), per image; ``total = content_weight * content + style_weight * style``.
Each term is normalized by its target, as in ``synthesis.transfer_style``, so layers weigh
equally (Johnson et al. weigh raw squared errors). Default layers follow ``transfer_style``: the
content layer at half the network's stages, five style layers over its first 2/3.

Example:
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3))
    >>> loss = PerceptualLoss(net, content_layer="2", style_layers=["0", "2"])
    >>> x = torch.rand(2, 3, 16, 16)
    >>> terms = loss(x, x, loss.style_grams(x[:1]))
    >>> float(terms["content"].max())
    0.0
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from seethrough.core.layer_table import spread, stage_layers
from seethrough.featureviz.objectives import gram
from seethrough.trace import Trace, capture


class PerceptualLoss:
    """Content and style terms of ``extractor``'s features; the extractor is used as it is.

    Call it inside ``seethrough.core.run_scope(extractor, mode="eval")`` to train through it
    without touching its state (``train_stylizer`` does).
    """

    def __init__(self, extractor: nn.Module, *, content_layer: str | None = None,
                 style_layers: Sequence[str] | None = None, content_weight: float = 1.0,
                 style_weight: float = 10.0, size: int = 128):
        stages = (None if content_layer and style_layers
                  else stage_layers(extractor, (3, size, size)))
        self.extractor = extractor
        self.content_layer = content_layer or stages[len(stages) // 2]
        self.style_layers = list(style_layers or spread(stages, 5, upto=2 / 3))
        self.content_weight, self.style_weight = float(content_weight), float(style_weight)

    @property
    def settings(self) -> dict:
        """Layers and weights, for a card."""
        return {"content_layer": self.content_layer, "style_layers": self.style_layers,
                "content_weight": self.content_weight, "style_weight": self.style_weight}

    def style_grams(self, style: torch.Tensor) -> dict[str, torch.Tensor]:
        """Gram matrices (S, C, C) of each style image (S, 3, H, W) at the style layers."""
        trace = capture(self.extractor, style, self.style_layers)
        return {layer: gram(trace[layer].output) for layer in self.style_layers}

    def features(self, images: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        """Activations at ``layers``, attached to the graph (the forward stops after them)."""
        with Trace(self.extractor, layers, retain_grad=True, stop=True) as trace:
            self.extractor(images)
        features = {layer: trace[layer].output for layer in layers}
        for record in trace.records.values():  # break output -> grad hook -> record -> output,
            record.outputs.clear()  # a cycle that would keep every step's graph until a gc
        return features

    def __call__(self, output: torch.Tensor, content: torch.Tensor,
                 grams: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-image ``content``, ``style`` and ``total`` losses (N,) of ``output`` against
        ``content`` images and style ``grams`` (1 or N per layer, from ``style_grams``)."""
        with torch.no_grad():
            target = capture(self.extractor, content, self.content_layer)[self.content_layer].output
        layers = list(dict.fromkeys([self.content_layer, *self.style_layers]))
        features = self.features(output, layers)
        difference = (features[self.content_layer] - target).flatten(1).pow(2).sum(1)
        content_loss = difference / target.flatten(1).pow(2).sum(1).clamp_min(1e-12)
        style_loss = sum(gram_loss(gram(features[layer]), grams[layer])
                         for layer in self.style_layers) / len(self.style_layers)
        total = self.content_weight * content_loss + self.style_weight * style_loss
        return {"content": content_loss, "style": style_loss, "total": total}


def gram_loss(grams: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``||G - G_s||^2 / ||G_s||^2`` per image; ``targets`` (1 or N, C, C)."""
    targets = targets.to(grams).expand_as(grams)
    norm = targets.flatten(1).pow(2).sum(1).clamp_min(1e-12)
    return (grams - targets).flatten(1).pow(2).sum(1) / norm

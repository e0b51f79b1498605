"""A small CNN that tells adversarial from clean images by their attribution maps alone, and
reads the original class from them (the tutorial's defence).

Example:
    >>> import torch
    >>> from seethrough.adversarial.heatmaps import HeatmapDataset
    >>> maps = torch.cat([torch.rand(8, 1, 16, 16), 3 * torch.rand(8, 1, 16, 16)])
    >>> data = HeatmapDataset(maps, torch.arange(16) >= 8, torch.arange(16) % 2, ["clean"] * 8
    ...                       + ["fgsm"] * 8, torch.arange(16) % 8, torch.zeros(16).long())
    >>> detector = HeatmapDetector(num_classes=2, size=16).fit(data, epochs=2)
    >>> detector.scores(maps).shape
    (16,)
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from seethrough.adversarial.attacks import check_count
from seethrough.adversarial.differentiable import BETA, attack_maps
from seethrough.adversarial.heatmaps import RAW, HeatmapDataset
from seethrough.core.batching import chunks
from seethrough.errors import InputError


class HeatmapDetector(nn.Module):
    """A small CNN on attribution maps (or images) with two heads: an adversarial logit, and
    the logits of the original class.

    The maps are resized to ``size`` (area averaging) and enter as two channels each: standardized
    by the mean and standard deviation of the training maps (their magnitude is a cue), and
    divided by their own largest absolute value (their shape, whatever the scale). Three 3x3
    conv + ReLU layers follow (``width``, ``2 width``, ``4 width`` channels, the first two with
    stride 2: as good as max pooling here and 2.7x faster on a CPU), then an average pooling
    to 2x2; both heads are linear on that. ``fit`` trains it with Adam; under the same
    ``seed`` it gives the same weights.

    ``method`` and ``options`` record the maps it reads (for ``adaptive_attack``).
    """

    def __init__(self, channels: int = 1, num_classes: int = 8, *, width: int = 16,
                 size: int = 32, method: str = "gradcam", options: dict | None = None,
                 seed: int = 0):
        super().__init__()
        check_count(channels, "channels")
        check_count(num_classes, "num_classes")
        check_count(width, "width")
        check_count(size, "size", minimum=8)
        self.size, self.method, self.options = size, method, dict(options or {})
        self.register_buffer("shift", torch.zeros(channels))
        self.register_buffer("scale", torch.ones(channels))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.body = nn.Sequential(
                nn.Conv2d(2 * channels, width, 3, stride=2, padding=1), nn.ReLU(),
                nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(),
                nn.Conv2d(2 * width, 4 * width, 3, padding=1), nn.ReLU(),
                nn.AdaptiveAvgPool2d(2), nn.Flatten(),
            )
            self.detect = nn.Linear(16 * width, 1)
            self.classify = nn.Linear(16 * width, num_classes)
        self.history: list[float] = []

    def forward(self, maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(adversarial logit (N,), class logits (N, classes))``."""
        if tuple(maps.shape[-2:]) != (self.size, self.size):
            maps = F.adaptive_avg_pool2d(maps, self.size)
        standard = (maps - self.shift.view(1, -1, 1, 1)) / self.scale.view(1, -1, 1, 1)
        peak = maps.abs().amax((2, 3), keepdim=True)
        own = maps / torch.where(peak > 0, peak, torch.ones_like(peak))
        x = torch.cat([standard, own], 1)
        features = self.body(x)
        return self.detect(features).squeeze(1), self.classify(features)

    def fit(self, data: HeatmapDataset, *, epochs: int = 60, lr: float = 3e-3,
            batch_size: int = 64, label_weight: float = 1.0, flip: bool = True,
            threads: int | None = 1, seed: int = 0) -> HeatmapDetector:
        """Train both heads on ``data`` with Adam: binary cross-entropy of the adversarial logit
        (positives weighted so that both classes weigh the same), plus ``label_weight`` times
        the cross-entropy of the original class (on every row). ``flip`` mirrors a random half
        of each batch left-right (a mirrored shape is the same class; the noise of an attack
        has no side). ``threads``: torch's intra-op threads while training, put back after
        (the CNN is tiny: one thread avoids the thread pool's overhead, 3x faster on 2 busy
        cores; ``None`` leaves the setting). Returns ``self`` in eval mode; ``history`` holds
        the mean loss per epoch. The same ``seed`` (and the same data) gives the same weights.
        """
        check_count(epochs, "epochs", minimum=0)
        check_count(batch_size, "batch_size")
        if len(data) == 0 or bool(data.adversarial.all()) or not bool(data.adversarial.any()):
            raise InputError("the detector needs clean and adversarial maps to train on")
        maps = data.maps.float()
        self.shift.copy_(maps.mean((0, 2, 3)))
        self.scale.copy_(maps.std((0, 2, 3)).clamp_min(1e-12))
        target = data.adversarial.float()
        positive = float(target.sum())
        weight = torch.tensor((len(target) - positive) / positive)
        labels = data.labels.long()
        optimizer = torch.optim.Adam(self.parameters(), lr=lr)
        self.history = []
        self.train()
        previous = torch.get_num_threads()
        if threads is not None:
            check_count(threads, "threads")
            torch.set_num_threads(threads)
        try:
            self._train(maps, target, labels, weight, optimizer, epochs=epochs,
                        batch_size=batch_size, label_weight=label_weight, flip=flip, seed=seed)
        finally:
            torch.set_num_threads(previous)
        self.zero_grad(set_to_none=True)
        return self.eval()

    def _train(self, maps, target, labels, weight, optimizer, *, epochs, batch_size,
               label_weight, flip, seed) -> None:
        with torch.random.fork_rng(devices=[]), torch.enable_grad():
            generator = torch.Generator().manual_seed(seed)
            for _ in range(epochs):
                order, total = torch.randperm(len(maps), generator=generator), 0.0
                for part in chunks(len(order), batch_size):
                    rows = order[part]
                    batch = maps[rows]
                    if flip:  # mirror half the maps: a mirrored shape is the same class
                        mirror = torch.rand(len(rows), generator=generator) < 0.5
                        batch = torch.where(mirror.view(-1, 1, 1, 1), batch.flip(-1), batch)
                    logit, classes = self(batch)
                    loss = F.binary_cross_entropy_with_logits(logit, target[rows],
                                                              pos_weight=weight)
                    loss = loss + label_weight * F.cross_entropy(classes, labels[rows])
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    total += float(loss.detach()) * len(rows)
                self.history.append(total / len(maps))

    @torch.no_grad()
    def scores(self, maps: torch.Tensor, batch_size: int = 256) -> np.ndarray:
        """``(M,)`` adversarial logits (higher: more likely adversarial)."""
        return torch.cat([self(maps[part].float())[0]
                          for part in chunks(len(maps), batch_size)]).cpu().numpy()

    @torch.no_grad()
    def predict_labels(self, maps: torch.Tensor, batch_size: int = 256) -> np.ndarray:
        """``(M,)`` the original class the label head reads from the maps."""
        return torch.cat([self(maps[part].float())[1].argmax(1)
                          for part in chunks(len(maps), batch_size)]).cpu().numpy()

    def logit(self, model: nn.Module, images: torch.Tensor, classes: torch.Tensor, *,
              beta: float = BETA, batch_size: int = 32) -> torch.Tensor:
        """``(N,)`` adversarial logit of ``images``, differentiable in them: the maps of
        ``classes`` through ``differentiable.attack_maps`` (exact, smooth-ReLU or BPDA)."""
        if self.method == RAW:
            return self(images)[0]
        maps = attack_maps(model, images, classes, self.method, options=self.options, beta=beta,
                           batch_size=batch_size)
        return self(maps)[0]


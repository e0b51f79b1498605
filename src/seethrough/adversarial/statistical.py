"""Statistical detectors of adversarial images on the model's activations, with a logistic
regression on top: the baselines the heatmap detector is compared with.

* ``KernelDensityDetector`` (Feinman et al. 2017): Gaussian kernel density of the last hidden
  layer under the clean training images of the predicted class;
* ``LIDDetector`` (Ma et al. 2018): local intrinsic dimensionality of several layers'
  activations, from the distances to their ``k`` nearest neighbours among a reference batch of
  clean training images.

Both ``fit`` on a ``HeatmapDataset`` of method ``"image"`` (its "maps" are the pixels) and give
``scores`` (higher: more likely adversarial) and a ``logit`` differentiable in the images, for
the adaptive attack.

Example:
    >>> import seethrough                                                       # doctest: +SKIP
    >>> from seethrough.adversarial.heatmaps import heatmap_dataset             # doctest: +SKIP
    >>> model = seethrough.load_model("conceptnet")                             # doctest: +SKIP
    >>> x = seethrough.ConceptWorld("val", length=64).batch()["image"]          # doctest: +SKIP
    >>> data = heatmap_dataset(model, x, attacks={"fgsm": {}}, method="image")  # doctest: +SKIP
    >>> KernelDensityDetector(model).fit(data).scores(x[:4]).shape              # doctest: +SKIP
    (4,)
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from seethrough.adversarial.attacks import check_count
from seethrough.adversarial.heatmaps import RAW, HeatmapDataset
from seethrough.adversarial.transfer import predict
from seethrough.core import run_scope
from seethrough.core.batching import chunks
from seethrough.errors import InputError

KDE = "kernel density"
LID = "LID"


def _final_linear_input(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The input of the model's last ``nn.Linear`` (its last hidden layer), with its graph."""
    from seethrough.attribution.cams import final_linear

    _, head = final_linear(model)
    kept: list[torch.Tensor] = []
    handle = head.register_forward_pre_hook(lambda module, args: kept.append(args[0]))
    try:
        model(images)
    finally:
        handle.remove()
    return kept[-1].flatten(1)


def _default_layers(model: nn.Module) -> list[str]:
    """ReLU modules (at most 8, evenly spaced), else Conv2d ones: the LID layers."""
    names = [name for name, module in model.named_modules()
             if isinstance(module, (nn.ReLU, nn.ReLU6))]
    if not names:
        names = [name for name, module in model.named_modules() if isinstance(module, nn.Conv2d)]
    if len(names) > 8:
        names = [names[round(i * (len(names) - 1) / 7)] for i in range(8)]
    return names


def _layer_outputs(model: nn.Module, images: torch.Tensor, layers: list[str]
                   ) -> list[torch.Tensor]:
    """Each layer's output and the logits, flattened, with their graph to ``images`` if they
    require grad (the network goes on with copies: in-place ops cannot change them)."""
    from seethrough.trace import Trace

    with Trace(model, layers, retain_grad=images.requires_grad) as trace:
        logits = model(images)
    return [trace[name].output.flatten(1) for name in layers] + [logits.flatten(1)]


class _LogisticHead:
    """A scikit-learn logistic regression on standardized features, also as a torch function."""

    def fit(self, features: np.ndarray, adversarial: np.ndarray) -> _LogisticHead:
        from sklearn.linear_model import LogisticRegression

        self.mean = features.mean(0)
        self.std = features.std(0) + 1e-12
        regression = LogisticRegression(class_weight="balanced", max_iter=1000)
        regression.fit((features - self.mean) / self.std, adversarial)
        self.coef = regression.coef_[0] / self.std
        self.intercept = float(regression.intercept_[0] - (self.mean * self.coef).sum())
        return self

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        coef = torch.as_tensor(self.coef, dtype=features.dtype, device=features.device)
        return features @ coef + self.intercept


class KernelDensityDetector:
    """Feinman et al. (2017): the Gaussian kernel density of an image's last hidden layer
    features under the clean training images of the class the model predicts for it,
    ``log mean_j exp(-|f - f_j|^2 / bandwidth^2)``; low density means adversarial. A logistic
    regression on the log density gives the logit. The bandwidth defaults to the median
    distance between clean training features of the same class. (Their Bayesian uncertainty
    feature needs dropout, which the models here do not have; the density alone is used.)
    While fitting, each row leaves its own source image out of the reference, as a test image
    is never in it."""

    name = KDE
    method = RAW

    def __init__(self, model: nn.Module, *, bandwidth: float | None = None,
                 batch_size: int = 32):
        self.model, self.bandwidth, self.batch_size = model, bandwidth, batch_size

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([_final_linear_input(self.model, images[part])
                              for part in chunks(len(images), self.batch_size)])

    def fit(self, data: HeatmapDataset, seed: int = 0) -> KernelDensityDetector:
        with run_scope(self.model):
            clean = ~data.adversarial
            features = self._features(data.maps[clean])
            self.classes = data.labels[clean]
            self.reference, self.sources = features, data.images[clean]
            if self.bandwidth is None:
                distances = [torch.pdist(features[self.classes == c])
                             for c in self.classes.unique()]
                distances = torch.cat([d for d in distances if len(d)])
                self.bandwidth = float(distances.median()) if len(distances) else 1.0
            # each row leaves its own source image out of the reference, as a test image is
            density = self._log_density(self._features(data.maps), data.predictions,
                                        data.images)
        self.head = _LogisticHead().fit(-density[:, None].double().numpy(),
                                        data.adversarial.numpy())
        return self

    def _log_density(self, features: torch.Tensor, predicted: torch.Tensor,
                     sources: torch.Tensor | None = None) -> torch.Tensor:
        """``(N,)`` log density of each row's features among the reference features of its
        class (leaving out the reference of the same source image when ``sources``)."""
        reference = self.reference.to(features)
        squared = torch.cdist(features, reference).pow(2) / self.bandwidth ** 2
        chosen = predicted.view(-1, 1).cpu() == self.classes.view(1, -1)
        if sources is not None:
            chosen &= sources.view(-1, 1).cpu() != self.sources.view(1, -1)
        chosen = chosen.to(features.device)
        count = chosen.sum(1)
        density = torch.logsumexp(torch.where(chosen, -squared, -torch.inf), 1)
        density = density - count.clamp_min(1).log()
        return torch.where(count > 0, density, torch.full_like(density, -1e4))

    def logit(self, model: nn.Module, images: torch.Tensor, classes: torch.Tensor,
              **_) -> torch.Tensor:
        """``(N,)`` adversarial logit, differentiable in ``images``."""
        features = _final_linear_input(model, images)
        return self.head(-self._log_density(features, classes)[:, None])

    def scores(self, images: torch.Tensor) -> np.ndarray:
        with run_scope(self.model), torch.no_grad():
            classes = predict(self.model, images, self.batch_size).to(images.device)
            return torch.cat([self.logit(self.model, images[part], classes[part])
                              for part in chunks(len(images), self.batch_size)]).numpy()

    def predict_labels(self, images: torch.Tensor) -> None:
        return None


class LIDDetector:
    """Ma et al. (2018): local intrinsic dimensionality of the activations of several layers
    (and the logits), ``-(mean_i log(r_i / r_k))^-1`` over the distances ``r_1 <= ... <= r_k``
    to the ``k`` nearest of ``reference`` clean training images (Ma et al.: k = 20 of a
    minibatch of 100); a logistic regression on the LIDs gives the logit. Layers default to
    the model's ReLU modules (at most 8). While fitting, each row leaves its own source image
    out of the reference, as a test image is never in it."""

    name = LID
    method = RAW

    def __init__(self, model: nn.Module, *, layers: Sequence[str] | None = None, k: int = 20,
                 reference: int = 100, batch_size: int = 32):
        check_count(k, "k")
        check_count(reference, "reference", minimum=2)
        self.model, self.k, self.size, self.batch_size = model, k, reference, batch_size
        self.layers = list(layers) if layers is not None else _default_layers(model)

    def _activations(self, images: torch.Tensor) -> list[torch.Tensor]:
        parts = []
        with torch.no_grad():
            for part in chunks(len(images), self.batch_size):
                parts.append(_layer_outputs(self.model, images[part], self.layers))
        return [torch.cat(layer) for layer in zip(*parts)]

    def _lid(self, activations: list[torch.Tensor],
             sources: torch.Tensor | None = None) -> torch.Tensor:
        values = []
        for acts, reference in zip(activations, self.reference):
            distances = torch.cdist(acts, reference.to(acts))
            if sources is not None:  # leave the row's own source image out of the reference
                same = sources.view(-1, 1) == self.sources.view(1, -1)
                distances = distances.masked_fill(same.to(distances.device), torch.inf)
            nearest = distances.topk(self.k, dim=1, largest=False).values
            ratio = torch.log(nearest / nearest[:, -1:]).mean(1)
            values.append(-1 / ratio.clamp(max=-1e-12))
        return torch.stack(values, 1)

    def fit(self, data: HeatmapDataset, seed: int = 0) -> LIDDetector:
        with run_scope(self.model):
            clean = (~data.adversarial).nonzero().squeeze(1)
            generator = torch.Generator().manual_seed(seed)
            chosen = clean[torch.randperm(len(clean), generator=generator)[:self.size]]
            if len(chosen) <= self.k + 1:
                raise InputError(f"LID needs more than k={self.k} clean training images, has "
                                 f"{len(chosen)}: lower k or give more images")
            self.reference = self._activations(data.maps[chosen])
            self.sources = data.images[chosen]
            # each row leaves its own source image out, as a test image is
            features = self._lid(self._activations(data.maps), data.images)
        self.head = _LogisticHead().fit(features.double().numpy(), data.adversarial.numpy())
        return self

    def logit(self, model: nn.Module, images: torch.Tensor, classes: torch.Tensor,
              **_) -> torch.Tensor:
        return self.head(self._lid(_layer_outputs(model, images, self.layers)))

    def scores(self, images: torch.Tensor) -> np.ndarray:
        with run_scope(self.model), torch.no_grad():
            return torch.cat([self.head(self._lid(_layer_outputs(self.model, images[part],
                                                                 self.layers)))
                              for part in chunks(len(images), self.batch_size)]).numpy()

    def predict_labels(self, images: torch.Tensor) -> None:
        return None


"""Multifaceted feature visualization (Nguyen, Yosinski & Clune 2016): one image per kind of
input a unit fires for, each grown from the images of that kind.

1. The images that excite the unit most (``top``; the paper takes the training images of a
   class) are described by the network's own high-level code (the paper's fc7: here the last
   stage, averaged over positions), reduced by PCA to 50 dimensions and by t-SNE to 2, and
   clustered by k-means into ``facets`` groups (the paper: k = 10).
2. Each facet starts from the mean of the ``per_facet`` images nearest its cluster centre
   (the paper: 15), not from noise.
3. Gradient ascent from that start (Adam on the pixels, lr 0.005: gentle enough that each facet
   keeps the colours of its start; a random jitter of up to 4 pixels
   before each step) with a **centre bias**: the optimized region starts as the central half of
   the image and widens to the whole of it, with a Gaussian blur of that region every 4 steps
   whose width falls from phase to phase, so one object forms at the centre instead of copies
   all over the image. The exact schedule of the paper's centre-biased regularization could not
   be checked offline: the phases here (``CENTRE_PHASES``) are this toolkit's reading of it.

Lucid's answer to the same question is the ``diversity`` objective (several images of one unit
pushed apart by their Gram matrices, no data needed); the report shows both side by side.

Example:
    >>> from seethrough.featureviz import objectives as obj
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(),
    ...                           torch.nn.Conv2d(4, 4, 3), torch.nn.ReLU()).eval()
    >>> images = torch.rand(40, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    >>> result = multifaceted(net, obj.channel("2", 1), images, facets=2, top=20, per_facet=5,
    ...                       steps=6)
    >>> tuple(result.images.shape), tuple(result.starts.shape), sum(len(m) for m in result.members)
    ((2, 3, 16, 16), (2, 3, 16, 16), 20)
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from seethrough.core import model_device
from seethrough.core.blur import gaussian_blur
from seethrough.core.layer_table import stage_layers
from seethrough.errors import InputError
from seethrough.featureviz.objectives import Objective
from seethrough.featureviz.render import Probe, Visualization
from seethrough.progress import progress_bar
from seethrough.trace import capture

#: (side of the optimized centre square as a fraction of the image, blur sigma in pixels),
#: one per phase of equal length
CENTRE_PHASES = ((0.5, 1.0), (0.75, 0.5), (1.0, 0.25))
BLUR_EVERY = 4
JITTER = 4
#: the paper's numbers: PCA dimensions before t-SNE, images averaged per facet
PCA_DIMENSIONS = 50
PER_FACET = 15


@dataclass
class Facets(Visualization):
    """The facet images (facets, 3, H, W), the starts they grew from, and the indices (into
    the given images) of each facet's cluster members, nearest the centre first."""

    starts: torch.Tensor = field(default_factory=lambda: torch.empty(0))
    members: list[list[int]] = field(default_factory=list)

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {**super()._tensors(), "starts": self.starts}

    def _settings(self) -> dict:
        return {**super()._settings(), "members": self.members}

    @classmethod
    def _from_saved(cls, settings: dict, tensors: dict[str, torch.Tensor]) -> Facets:
        base = Visualization._from_saved(settings, tensors)
        return cls(base.images, base.history, base.objective, base.settings, tensors["starts"],
                   settings.get("members", []))


def _scores(model: nn.Module, objective: Objective, images: torch.Tensor, batch: int) -> torch.Tensor:
    device = model_device(model)
    with Probe(model, objective) as probe, torch.no_grad():
        return torch.cat([probe(images[i: i + batch].to(device)).cpu() for i in range(0, len(images), batch)])


def _codes(model: nn.Module, images: torch.Tensor, layer: str, batch: int) -> np.ndarray:
    device = model_device(model)
    codes = []
    for start in range(0, len(images), batch):
        output = capture(model, images[start: start + batch].to(device), layer)[layer].output
        codes.append(output.flatten(2).mean(2) if output.dim() == 4 else output.flatten(1))
    return torch.cat(codes).double().cpu().numpy()


def facet_clusters(codes: np.ndarray, facets: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """k-means on the t-SNE map of PCA-reduced ``codes``: (labels, distance to own centre)."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    reduced = PCA(min(PCA_DIMENSIONS, *codes.shape), random_state=seed).fit_transform(codes)
    perplexity = max(2.0, min(30.0, (len(codes) - 1) / 3))
    init = "pca" if reduced.shape[1] >= 2 else "random"
    mapped = TSNE(2, perplexity=perplexity, init=init, random_state=seed).fit_transform(reduced)
    kmeans = KMeans(facets, n_init=10, random_state=seed).fit(mapped)
    distance = np.linalg.norm(mapped - kmeans.cluster_centers_[kmeans.labels_], axis=1)
    return kmeans.labels_, distance


def _centre_mask(height: int, width: int, fraction: float) -> torch.Tensor:
    mask = torch.zeros(1, 1, height, width)
    h, w = max(1, round(height * fraction)), max(1, round(width * fraction))
    top, left = (height - h) // 2, (width - w) // 2
    mask[..., top: top + h, left: left + w] = 1.0
    return mask


def multifaceted(model: nn.Module, objective: Objective, images: torch.Tensor, *, facets: int = 4,
                 top: int | None = None, per_facet: int = PER_FACET, code_layer: str | None = None,
                 steps: int = 96, lr: float = 0.005, batch: int = 64, seed: int = 0,
                 progress: bool | None = None) -> Facets:
    """One visualization per facet of ``objective`` (a unit: ``obj.channel``, ``obj.class_logit``)
    over ``images`` (N, 3, H, W in [0, 1]); see the module docstring.

    ``top``: images clustered (default: the best quarter, at least ``facets * per_facet``);
    ``code_layer``: the layer whose pooled output describes an image (default: the last stage).
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise InputError(f"multifaceted needs (N, 3, H, W) images in [0, 1], got {tuple(images.shape)}")
    if objective.batch_size is not None:
        raise InputError("multifaceted needs one unit for every image (e.g. obj.channel(layer, 5)), "
                         "not one unit per item")
    top = top or min(len(images), max(facets * per_facet, len(images) // 4))
    if not facets <= top <= len(images) or facets < 2:
        raise InputError(f"need 2 <= facets ({facets}) <= top ({top}) <= images ({len(images)})")
    scores = _scores(model, objective, images, batch)
    best = scores.argsort(descending=True)[:top]
    code_layer = code_layer or stage_layers(model, tuple(images.shape[1:]))[-1]
    labels, distance = facet_clusters(_codes(model, images[best], code_layer, batch), facets, seed)
    members = []
    for facet in range(facets):
        inside = np.flatnonzero(labels == facet)
        members.append(best[inside[np.argsort(distance[inside])]].tolist())
    starts = torch.stack([images[m[:per_facet]].mean(0) for m in members])

    device = model_device(model)
    generator = torch.Generator().manual_seed(seed)
    pixels = starts.clone().to(device).requires_grad_(True)
    optimizer = torch.optim.Adam([pixels], lr=lr)
    height, width = images.shape[-2:]
    history: list[list[float]] = []
    with Probe(model, objective) as probe:
        for step in progress_bar(range(steps), "facets", progress=progress, unit="step"):
            fraction, sigma = CENTRE_PHASES[min(len(CENTRE_PHASES) - 1, step * len(CENTRE_PHASES) // steps)]
            mask = _centre_mask(height, width, fraction).to(device)
            dy, dx = torch.randint(-JITTER, JITTER + 1, (2,), generator=generator).tolist()
            values = probe(pixels.roll((dy, dx), (-2, -1)))
            optimizer.zero_grad(set_to_none=True)
            (-values.sum()).backward()
            pixels.grad.mul_(mask)
            optimizer.step()
            with torch.no_grad():
                if (step + 1) % BLUR_EVERY == 0:
                    blurred = gaussian_blur(pixels, sigma, padding="replicate")
                    pixels.copy_(mask * blurred + (1 - mask) * pixels)
                pixels.clamp_(0, 1)
            history.append(values.detach().cpu().tolist())
    settings = {"facets": facets, "top": top, "per_facet": per_facet, "code_layer": code_layer,
                "steps": steps, "lr": lr, "seed": seed, "cluster_sizes": [len(m) for m in members]}
    return Facets(pixels.detach().cpu(), history, objective.description, settings, starts, members)

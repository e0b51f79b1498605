"""Experiments that question Network Dissection: robustness, axis alignment, PCA of a concept.

* ``robustness(..., kind="noise" | "rotation" | "shuffle")``: unique detectors per layer when the
  images get uniform noise ``x + k U[0, 1]`` (k in 1, 5, 10, 100), are rotated (10, 45, 90
  degrees; label maps rotated with them) or rearranged as shuffled 4x4 / 8x8 patches (labels
  shuffled the same way).
* ``axis_alignment``: Bau et al. 2017 (Sec. 3.2) rotate a layer's representation by a random
  orthogonal ``Q`` (and partially, by ``Q ** fraction``) and count unique detectors again, with
  thresholds recomputed for the rotated units; mean and std over several draws of ``Q``. If
  interpretability were a property of the space rather than of the basis, rotation would not
  change the count.
* ``concept_pca``: SVD of a layer's standardized activations at the positions of one concept:
  does one unit dominate the first loading, or is the concept spread over many units?

Each returns a pandas DataFrame (or a small dataclass) that ``dissect.report`` draws.

Example:
    >>> frame = robustness(model, ["features.6"], world, kind="noise")   # doctest: +SKIP
"""
from __future__ import annotations

from contextlib import closing
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from seethrough.core.registry import Registry
from seethrough.data.concepts import categories_of
from seethrough.dissection.labels import LabelBatch, Vocabulary, collate
from seethrough.dissection.run import dissect, unit_maps
from seethrough.errors import InputError
from seethrough.results import Result
from seethrough.tallying import ActivationCache, tally
from seethrough.tallying.shard_job import seed_for
from seethrough.tallying.stats import Moments
from seethrough.trace import resolve_layer

#: the paper's / critiques' settings
LEVELS = {"noise": (1, 5, 10, 100), "rotation": (10, 45, 90), "shuffle": (4, 8)}
FRACTIONS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


# -- image transforms (randomness seeded per image from its dataset index, so runs resume
# exactly and give the same images however the dataset is batched or sharded) ------------------
def _generator(seed: int, index) -> torch.Generator:
    return torch.Generator().manual_seed(seed_for(seed, int(index)))


def noise_transform(k: float, seed: int = 0):
    """``x + k * U[0, 1]`` per pixel, the noise of image ``i`` seeded from ``(seed, i)``;
    labels unchanged."""
    def add_noise(images: torch.Tensor, labels: LabelBatch, indices: torch.Tensor):
        noise = torch.stack([torch.rand(images.shape[1:], generator=_generator(seed, i))
                             for i in indices])
        return images + k * noise.to(images), labels

    add_noise.__name__ = f"noise_{k}_{seed}"
    return add_noise


def rotation_transform(degrees: float):
    """Rotate images (bilinear, black outside) and label maps (nearest, none outside)."""
    from torchvision.transforms.functional import InterpolationMode, rotate

    def rotated(images: torch.Tensor, labels: LabelBatch, indices: torch.Tensor):
        pixel = rotate(labels.pixel, degrees, interpolation=InterpolationMode.NEAREST, fill=0)
        return (rotate(images, degrees, interpolation=InterpolationMode.BILINEAR, fill=0.0),
                LabelBatch(pixel=pixel, image=labels.image))

    rotated.__name__ = f"rotation_{degrees}"
    return rotated


def _shuffle(x: torch.Tensor, grid: int, order: torch.Tensor) -> torch.Tensor:
    *lead, h, w = x.shape
    if h % grid or w % grid:
        raise InputError(f"images of {h}x{w} do not split into {grid}x{grid} patches: use a "
                         f"size divisible by {grid}")
    ph, pw = h // grid, w // grid
    patches = x.reshape(*lead, grid, ph, grid, pw).transpose(-3, -2).reshape(*lead, grid * grid, ph, pw)
    patches = patches[..., order, :, :]
    return patches.reshape(*lead, grid, grid, ph, pw).transpose(-3, -2).reshape(*lead, h, w)


def shuffle_transform(grid: int, seed: int = 0):
    """Cut images into grid x grid patches and permute them, image ``i`` by a permutation
    seeded from ``(seed, i)`` (the same for its labels)."""
    def shuffled(images: torch.Tensor, labels: LabelBatch, indices: torch.Tensor):
        orders = [torch.randperm(grid * grid, generator=_generator(seed, i)) for i in indices]
        return (torch.stack([_shuffle(x, grid, o) for x, o in zip(images, orders)]),
                LabelBatch(pixel=torch.stack([_shuffle(p, grid, o)
                                              for p, o in zip(labels.pixel, orders)]),
                           image=labels.image))

    shuffled.__name__ = f"shuffle_{grid}_{seed}"
    return shuffled


TRANSFORMS = Registry("experiment", {"noise": noise_transform, "rotation": rotation_transform,
                                     "shuffle": shuffle_transform})


def robustness(model: nn.Module, layers, dataset, *, kind: str = "noise", levels=None,
               **options):
    """Unique detectors per layer and category for the original images and each perturbation.

    Returns a DataFrame: experiment, level (0 = original), layer, category, unique_detectors.
    ``options`` go to ``dissect`` (thresholds are recomputed on the perturbed images).
    """
    import pandas as pd

    TRANSFORMS.get(kind)  # an unknown kind raises with the close names
    levels = LEVELS[kind] if levels is None else levels
    frames = []
    for level in (0, *levels):
        transform = None if level == 0 else TRANSFORMS[kind](level)
        counts = dissect(model, layers, dataset, transform=transform, **options).unique_detectors()
        counts.insert(0, "level", level)
        counts.insert(0, "experiment", kind)
        frames.append(counts)
    return pd.concat(frames, ignore_index=True)


# -- axis alignment ------------------------------------------------------------------------------
def random_rotation(units: int, generator: torch.Generator) -> torch.Tensor:
    """A random rotation (Haar on SO(n)): QR of a Gaussian matrix with the sign fix."""
    q, r = torch.linalg.qr(torch.randn(units, units, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    if torch.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def rotation_power(q: torch.Tensor, fraction: float) -> torch.Tensor:
    """``Q ** fraction`` for a rotation ``Q``: every rotation angle scaled by ``fraction``."""
    if fraction == 0:
        return torch.eye(len(q), dtype=q.dtype)
    if fraction == 1:
        return q.clone()
    values, vectors = torch.linalg.eig(q)
    powered = vectors @ torch.diag(values ** fraction) @ torch.linalg.inv(vectors)
    return powered.real.to(q.dtype)


def axis_alignment(model: nn.Module, layer: str, dataset, *, fractions=FRACTIONS, draws: int = 3,
                   seed: int = 0, **options):
    """Unique detectors after rotating the layer's units by ``Q ** fraction`` (random ``Q``).

    The model runs once: every rotation is dissected from one shared ``ActivationCache``, with
    its own thresholds. Returns a DataFrame: fraction, draw, category, unique_detectors.
    """
    import pandas as pd

    name, _ = resolve_layer(model, layer)
    rows = []
    with closing(ActivationCache(memory=options.pop("cache_memory", 256 * 2**20))) as cache:
        first = dissect(model, [name], dataset, cache=cache, **options)
        units, baseline = first.layers[name].units, first.unique_detectors()
        generator = torch.Generator().manual_seed(seed)
        for draw in range(draws):
            q = random_rotation(units, generator)
            for fraction in fractions:
                if fraction == 0:
                    counts = baseline
                else:
                    basis = {name: rotation_power(q, fraction).float()}
                    counts = dissect(model, [name], dataset, cache=cache, basis=basis,
                                     **options).unique_detectors()
                rows += [{"fraction": fraction, "draw": draw, "category": row.category,
                          "unique_detectors": row.unique_detectors} for row in counts.itertuples()]
    return pd.DataFrame(rows)


# -- PCA of one concept --------------------------------------------------------------------------
@dataclass
class ConceptPCA(Result):
    """First principal direction of a layer's standardized activations on one concept."""

    layer: str
    concept: str
    loading: torch.Tensor  # (K,) unit weights of the first principal component, unit norm
    explained: torch.Tensor  # explained variance ratio of the first few components
    positions: int

    @property
    def top_unit(self) -> int:
        return int(self.loading.abs().argmax())

    @property
    def top_share(self) -> float:
        """Fraction of the first loading's energy in its largest unit (1 = a single unit)."""
        return float(self.loading.abs().max() ** 2)

    @property
    def effective_units(self) -> float:
        """Participation ratio 1 / sum(v^4) of the unit-norm loading: how many units share it."""
        return float(1.0 / (self.loading**4).sum())

    def to_frame(self):
        """One row per unit, largest first: ``rank``, ``unit``, ``loading``, ``abs_loading``."""
        import pandas as pd

        loading = self.loading.detach().cpu()
        order = loading.abs().argsort(descending=True, stable=True)
        return pd.DataFrame({"rank": range(1, len(order) + 1), "unit": order.tolist(),
                             "loading": loading[order].tolist(),
                             "abs_loading": loading[order].abs().tolist()})

    def plot(self):
        """The first loading's largest units and the explained variance ratios."""
        from seethrough.dissection.figures import pca_figure

        return pca_figure(self)

    def _title(self) -> str:
        return f"ConceptPCA of {self.concept!r} at {self.layer} ({self.positions} positions)"

    def _tables(self) -> dict:
        import pandas as pd

        explained = self.explained.detach().cpu()
        return {"explained": pd.DataFrame({"component": range(1, len(explained) + 1),
                                           "explained_variance_ratio": explained.tolist()})}

    def _settings(self) -> dict:
        return {"layer": self.layer, "concept": self.concept, "positions": self.positions}

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {"loading": self.loading, "explained": self.explained}

    @classmethod
    def _from_saved(cls, settings: dict, tensors: dict[str, torch.Tensor]) -> ConceptPCA:
        return cls(settings["layer"], settings["concept"], tensors["loading"],
                   tensors["explained"], int(settings["positions"]))


class ConceptPositions:
    """A ``tally`` statistic: a layer's activation vectors at the positions a concept covers.

    Keeps the positions covered more than half (``half``) and, for small concepts, every
    touched one (``touched``); an image-level concept covers every position of its images.
    """

    def __init__(self, layer: str, concept: int):
        self.layer, self.concept = layer, concept
        self.half: list[torch.Tensor] = []
        self.touched: list[torch.Tensor] = []

    def update(self, batch) -> None:
        acts, labels = batch.acts[self.layer].cpu(), batch.labels
        present = (labels.pixel == self.concept).any(1).float()[:, None]  # (N, 1, H, W)
        present[(labels.image == self.concept).any(1)] = 1.0
        cover = F.adaptive_avg_pool2d(present, acts.shape[-2:])[:, 0]
        vectors = acts.permute(0, 2, 3, 1)
        self.half.append(vectors[cover > 0.5].double())
        self.touched.append(vectors[cover > 0].double())

    def merge(self, other: ConceptPositions) -> ConceptPositions:
        self.half += other.half
        self.touched += other.touched
        return self

    def rows(self) -> torch.Tensor:
        half = torch.cat(self.half) if self.half else torch.empty(0)
        return half if len(half) >= 2 else torch.cat(self.touched)

    def state_dict(self) -> dict:
        return {"half": list(self.half), "touched": list(self.touched)}

    def load_state_dict(self, state: dict) -> None:
        self.half, self.touched = list(state["half"]), list(state["touched"])


def concept_pca(model: nn.Module, layer: str, dataset, concept: str, *, category: str | None = None,
                batch_size: int = 32, components: int = 5, progress: bool | None = None) -> ConceptPCA:
    """SVD of the layer's activations at positions covered (> 50 %) by ``concept``.

    An image-level concept (scene) covers every position of the images that carry it. When no
    position is covered to 50 % (a small concept, a coarse layer), every touched one is used.

    As in the method this reproduces, each unit is standardized with its mean and standard
    deviation over the whole dataset (every position of every image) before the SVD, and the
    concept's positions are not re-centred: a unit that is selective for the concept stands
    high at its positions and leads the first loading. Both statistics come from one ``tally``
    pass.
    """
    name, _ = resolve_layer(model, layer)
    vocabulary = Vocabulary(categories_of(dataset))
    matches = [i for i, n in enumerate(vocabulary.names)
               if n == concept and (category is None or vocabulary.category_name(i) == category)]
    if not matches:
        raise InputError(f"no concept {concept!r} in the dataset; known: "
                         f"{', '.join(vocabulary.names[1:])}")
    moments, positions = Moments(name), ConceptPositions(name, matches[0])
    tally(model, [name], dataset, {"moments": moments, "positions": positions},
          batch_size=batch_size, collate=partial(collate, vocabulary=vocabulary),
          activations=unit_maps, progress=progress, desc="concept PCA")
    x = positions.rows()
    if len(x) < 2:
        raise InputError(f"concept {concept!r} covers no position of layer {layer!r} in this data")
    x = (x - moments.mean) / moments.std.clamp_min(1e-12)
    _, singular, vh = torch.linalg.svd(x, full_matrices=False)
    variance = singular**2
    loading = vh[0] * torch.sign(vh[0][vh[0].abs().argmax()])
    return ConceptPCA(name, concept, loading.float(), (variance / variance.sum())[:components].float(),
                      len(x))

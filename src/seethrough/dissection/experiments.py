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

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from seethrough.dissection.labels import LabelBatch, Vocabulary, collate
from seethrough.dissection.run import dissect, layer_activations, model_device
from seethrough.errors import InputError
from seethrough.trace import resolve_layer

#: the paper's / critiques' settings
LEVELS = {"noise": (1, 5, 10, 100), "rotation": (10, 45, 90), "shuffle": (4, 8)}
FRACTIONS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


# -- image transforms (deterministic per batch index, so runs resume exactly) --------------------
def noise_transform(k: float, seed: int = 0):
    """``x + k * U[0, 1]`` per pixel; labels unchanged."""
    def add_noise(images: torch.Tensor, labels: LabelBatch, batch: int):
        g = torch.Generator().manual_seed(seed * 1_000_003 + batch)
        return images + k * torch.rand(images.shape, generator=g).to(images), labels

    add_noise.__name__ = f"noise_{k}_{seed}"
    return add_noise


def rotation_transform(degrees: float):
    """Rotate images (bilinear, black outside) and label maps (nearest, none outside)."""
    from torchvision.transforms.functional import InterpolationMode, rotate

    def rotated(images: torch.Tensor, labels: LabelBatch, batch: int):
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
    """Cut images into grid x grid patches and permute them (same permutation for the labels)."""
    def shuffled(images: torch.Tensor, labels: LabelBatch, batch: int):
        g = torch.Generator().manual_seed(seed * 1_000_003 + batch)
        order = torch.randperm(grid * grid, generator=g)
        return (_shuffle(images, grid, order),
                LabelBatch(pixel=_shuffle(labels.pixel, grid, order), image=labels.image))

    shuffled.__name__ = f"shuffle_{grid}_{seed}"
    return shuffled


TRANSFORMS = {"noise": noise_transform, "rotation": rotation_transform, "shuffle": shuffle_transform}


def robustness(model: nn.Module, layers, dataset, *, kind: str = "noise", levels=None,
               **options):
    """Unique detectors per layer and category for the original images and each perturbation.

    Returns a DataFrame: experiment, level (0 = original), layer, category, unique_detectors.
    ``options`` go to ``dissect`` (thresholds are recomputed on the perturbed images).
    """
    import pandas as pd

    if kind not in TRANSFORMS:
        raise InputError(f"kind must be one of {sorted(TRANSFORMS)}, not {kind!r}")
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


class _Activations(torch.utils.data.Dataset):
    """A layer's activations as 'images', with the dataset's labels (dissected by nn.Identity)."""

    def __init__(self, items: list[dict], categories: dict, name: str):
        self.items, self.categories, self.name = items, categories, name

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]

    def __repr__(self):
        return self.name


def cached_activations(model: nn.Module, layer: str, dataset, *, batch_size: int = 32):
    """Run the model once; keep a layer's activations with each sample's labels (in memory)."""
    name, _ = resolve_layer(model, layer)
    device = model_device(model)
    items = []
    for start in range(0, len(dataset), batch_size):
        samples = [dataset[i] for i in range(start, min(len(dataset), start + batch_size))]
        images = torch.stack([torch.as_tensor(s["image"]).float() for s in samples])
        acts = layer_activations(model, [name], images.to(device))[name].cpu()
        items += [{**{k: v for k, v in s.items() if k != "image"}, "image": a}
                  for s, a in zip(samples, acts)]
    return _Activations(items, dataset.categories, f"activations of {name} on {dataset!r}")


def _identity() -> nn.Module:
    return nn.Sequential(OrderedDict(units=nn.Identity()))


def dissect_cached(cache: _Activations, *, basis: torch.Tensor | None = None, **options):
    """Dissect cached activations (optionally re-expressed in ``basis``); the layer is "units".

    Only ``upsample="bilinear"``: the cache keeps no receptive-field geometry.
    """
    return dissect(_identity(), ["units"], cache,
                   basis={"units": basis} if basis is not None else None, **options)


def axis_alignment(model: nn.Module, layer: str, dataset, *, fractions=FRACTIONS, draws: int = 3,
                   seed: int = 0, **options):
    """Unique detectors after rotating the layer's units by ``Q ** fraction`` (random ``Q``).

    The model runs once; every rotation is dissected from the cached activations, with its own
    thresholds. Returns a DataFrame: fraction, draw, category, unique_detectors.
    """
    import pandas as pd

    batch_size = options.pop("batch_size", 32)
    options.setdefault("progress", False)
    cache = cached_activations(model, layer, dataset, batch_size=batch_size)
    units = cache[0]["image"].shape[0]
    generator = torch.Generator().manual_seed(seed)
    rows, baseline = [], None
    for draw in range(draws):
        q = random_rotation(units, generator)
        for fraction in fractions:
            if fraction == 0 and baseline is not None:
                counts = baseline
            else:
                basis = None if fraction == 0 else rotation_power(q, fraction).float()
                counts = dissect_cached(cache, basis=basis, batch_size=batch_size,
                                        **options).unique_detectors()
                baseline = counts if fraction == 0 else baseline
            for row in counts.itertuples():
                rows.append({"fraction": fraction, "draw": draw, "category": row.category,
                             "unique_detectors": row.unique_detectors})
    return pd.DataFrame(rows)


# -- PCA of one concept --------------------------------------------------------------------------
@dataclass
class ConceptPCA:
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


def concept_pca(model: nn.Module, layer: str, dataset, concept: str, *, category: str | None = None,
                batch_size: int = 32, components: int = 5) -> ConceptPCA:
    """SVD of the layer's activations at positions covered (> 50 %) by ``concept``.

    An image-level concept (scene) covers every position of the images that carry it. When no
    position is covered to 50 % (a small concept, a coarse layer), every touched one is used.

    Activations are standardized per unit (mean 0, std 1 over those positions) first, so a unit
    cannot dominate just by its scale.
    """
    name, _ = resolve_layer(model, layer)
    vocabulary = Vocabulary(dataset.categories)
    matches = [i for i, n in enumerate(vocabulary.names)
               if n == concept and (category is None or vocabulary.category_name(i) == category)]
    if not matches:
        raise InputError(f"no concept {concept!r} in the dataset; known: "
                         f"{', '.join(vocabulary.names[1:])}")
    index = matches[0]
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size,
                                         collate_fn=lambda s: collate(s, vocabulary))
    device = model_device(model)
    rows = []
    for images, labels in loader:
        acts = layer_activations(model, [name], images.to(device))[name].cpu()
        present = (labels.pixel == index).any(1).float()[:, None]  # (N, 1, H, W)
        whole = (labels.image == index).any(1)  # an image-level concept covers its images
        present[whole] = 1.0
        cover = F.adaptive_avg_pool2d(present, acts.shape[-2:])[:, 0]
        rows.append((acts.permute(0, 2, 3, 1), cover))
    x = torch.cat([a[c > 0.5] for a, c in rows]).double()
    if len(x) < 2:  # a small concept: every position it touches
        x = torch.cat([a[c > 0] for a, c in rows]).double()
    if len(x) < 2:
        raise InputError(f"concept {concept!r} covers no position of layer {layer!r} in this data")
    x = (x - x.mean(0)) / x.std(0).clamp_min(1e-12)
    _, singular, vh = torch.linalg.svd(x, full_matrices=False)
    variance = singular**2
    loading = vh[0] * torch.sign(vh[0][vh[0].abs().argmax()])
    return ConceptPCA(name, concept, loading.float(), (variance / variance.sum())[:components].float(),
                      len(x))


def summary(frame, by: str):
    """Mean and std of unique detectors over draws per ``by`` and category."""
    grouped = frame.groupby([by, "category"]).unique_detectors
    out = grouped.agg(["mean", "std"]).reset_index()
    out["std"] = out["std"].fillna(0.0)
    return out

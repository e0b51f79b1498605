"""GAN Dissection's interventions (Bau et al. 2019): switch a concept's units off, force them on
in a region, and find the units that make artifacts, each measured with the segmenter.

* ``concept_units(result, layer, concept, k)``: the k units of a dissected generator layer with
  the highest IoU for a concept.
* ``causal_units(generator, segmenter, layer, concepts, latents, k)``: per concept, the k units
  whose removal alone takes most of it away. Bau et al. choose the units of an intervention by their
  causal effect, not their IoU (they optimise a per-unit ablation coefficient for the average
  causal effect, then rank by it); this is the gradient-free version: one unit at a time.
  Rank on other latents than the ones the effect is measured on.
* ``ablation_effect``: the average causal effect of switching units off, as the share of the
  concept's pixels removed over many generated images, beside the same count of random units.
* ``insertion_effect``: the units held at a high value inside a region (their mean peak
  activation over the images); the share of the region's pixels that show the concept, before
  and after, and the same outside the region.
* ``artifact_units``: the paper's way: rank units by the Fréchet distance of the images that
  activate them most (their top images look least real), switch the worst off and measure the
  whole sample's Fréchet distance, beside random units.

Every edit runs inside ``seethrough.circuits.edit``: the generator is the same afterwards.

Example:
    >>> from seethrough.models.generator import build_generator                 # doctest: +SKIP
    >>> effect = ablation_effect(generator, segmenter, "layer3", units, "circle", latents)  # doctest: +SKIP
    >>> effect.removed, effect.removed_random                                   # doctest: +SKIP
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from seethrough.circuits.edit import Clamp, Off, edit
from seethrough.errors import InputError
from seethrough.gan.quality import (
    feature_extractor,
    features_of,
    frechet_distance,
    generate_images,
    label_shares,
)
from seethrough.gan.result import FieldResult, bar_figure
from seethrough.trace import capture


def concept_label(concept: str) -> tuple[str, int]:
    """``(category, label)`` of a ConceptWorld concept name, e.g. ``"circle"`` -> ("shape", 1)."""
    from seethrough.data import ConceptWorld

    found = [(category, names.index(concept)) for category, names in ConceptWorld.categories.items()
             if concept in names and names.index(concept) > 0]
    if not found:
        known = sorted({n for names in ConceptWorld.categories.values() for n in names[1:]})
        raise InputError(f"unknown concept {concept!r}; ConceptWorld's are {', '.join(known)}")
    return found[0]


def concept_units(result, layer: str, concept: str, k: int = 20) -> list[int]:
    """The ``k`` units of ``layer`` with the highest IoU for ``concept`` in a dissection."""
    names = list(result.vocabulary.names)
    if concept not in names:
        raise InputError(f"{concept!r} is not a concept of this dissection")
    iou = result.iou(layer)[:, names.index(concept)]
    return iou.argsort(descending=True)[:k].tolist()


def causal_units(generator: nn.Module, segmenter: nn.Module, layer: str, concepts: list[str],
                 latents: torch.Tensor, k: int = 20) -> dict[str, list[int]]:
    """Per concept, the ``k`` units of ``layer`` that remove the most of its pixels when each
    is switched off alone, over the images of ``latents`` (one generation per unit)."""
    from seethrough.models.segmenter import segment

    labels = {concept: concept_label(concept) for concept in concepts}

    def counts(images: torch.Tensor) -> torch.Tensor:
        found = segment(segmenter, images)
        return torch.tensor([int((found[category] == label).sum())
                             for category, label in labels.values()])

    before = counts(generate_images(generator, latents))
    if not before.all():
        missing = [c for c, n in zip(concepts, before.tolist()) if n == 0]
        raise InputError(f"no generated image shows {', '.join(map(repr, missing))}: draw more latents")
    left = torch.stack([counts(_images(generator, latents, Off(layer, [unit])))
                        for unit in range(_units_in(generator, layer, latents))])  # (units, concepts)
    return {concept: left[:, j].argsort(stable=True)[:k].tolist()
            for j, concept in enumerate(concepts)}


@torch.no_grad()
def concept_pixels(segmenter: nn.Module, images: torch.Tensor, concept: str) -> torch.Tensor:
    """Per image, a bool mask (N, H, W) of the pixels the segmenter labels ``concept``."""
    category, label = concept_label(concept)
    return _pixel_labels(segmenter, images, category) == label


def _pixel_labels(segmenter: nn.Module, images: torch.Tensor, category: str) -> torch.Tensor:
    """The segmenter's (N, H, W) labels of ``category``; an image-level one (scene) fills the
    image."""
    from seethrough.models.segmenter import segment

    labels = segment(segmenter, images)[category]
    return labels[:, None, None].expand(-1, *images.shape[-2:]) if labels.dim() == 1 else labels


def _images(generator: nn.Module, latents: torch.Tensor, *changes) -> torch.Tensor:
    with edit(generator, *changes):
        return generate_images(generator, latents)


def _random_units(count: int, total: int, exclude: list[int], draws: int, seed: int) -> list[list[int]]:
    pool = torch.tensor([u for u in range(total) if u not in set(exclude)])
    if len(pool) < count:
        pool = torch.arange(total)
    generator = torch.Generator().manual_seed(seed)
    return [pool[torch.randperm(len(pool), generator=generator)[:count]].tolist()
            for _ in range(draws)]


def _units_in(generator: nn.Module, layer: str, latents: torch.Tensor) -> int:
    with torch.no_grad():
        return capture(generator, latents[:1], [layer])[layer].output.shape[1]


@dataclass
class AblationEffect(FieldResult):
    """Share of a concept's pixels removed by switching units off, and by random units."""

    layer: str
    concept: str
    units: list[int]
    pixels_before: int
    removed: float
    removed_random: float
    removed_random_draws: list[float]
    images: int

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame([
            {"units": f"top {len(self.units)} {self.concept} units", "removed": self.removed},
            *({"units": f"random draw {i + 1}", "removed": value}
              for i, value in enumerate(self.removed_random_draws))])

    def plot(self):
        return bar_figure([f"{self.concept} units", "random units"],
                          [self.removed, self.removed_random],
                          ylabel=f"share of {self.concept} pixels removed", title=self._title())

    def _title(self) -> str:
        return (f"Switching off {len(self.units)} {self.concept} units of {self.layer} removes "
                f"{self.removed:.0%} of its pixels ({self.removed_random:.0%} for random units)")


def ablation_effect(generator: nn.Module, segmenter: nn.Module, layer: str, units: list[int],
                    concept: str, latents: torch.Tensor, *, random_draws: int = 5,
                    seed: int = 0) -> AblationEffect:
    """The average causal effect of switching ``units`` of ``layer`` off on ``concept``: the
    share of its pixels (summed over the images of ``latents``) that disappear."""
    before = int(concept_pixels(segmenter, generate_images(generator, latents), concept).sum())
    if before == 0:
        raise InputError(f"no generated image shows {concept!r}: draw more latents")

    def removed(chosen: list[int]) -> float:
        images = _images(generator, latents, Off(layer, chosen))
        return 1 - int(concept_pixels(segmenter, images, concept).sum()) / before

    draws = [removed(chosen) for chosen in _random_units(
        len(units), _units_in(generator, layer, latents), units, random_draws, seed)]
    return AblationEffect(layer, concept, list(units), before, removed(list(units)),
                          sum(draws) / len(draws), draws, len(latents))


@dataclass
class InsertionEffect(FieldResult):
    """Share of pixels showing a concept inside and outside a region, before and after forcing
    its units on there."""

    layer: str
    concept: str
    units: list[int]
    inside_before: float
    inside_after: float
    outside_before: float
    outside_after: float
    images: torch.Tensor
    edited: torch.Tensor
    #: the concept of the same category whose share of the region rose most, and by how much
    #: (``concept`` itself when the edit works; another when the units paint something else)
    gained: str = ""
    gained_share: float = 0.0

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame([
            {"where": "inside the region", "before": self.inside_before, "after": self.inside_after},
            {"where": "outside the region", "before": self.outside_before,
             "after": self.outside_after}])

    def plot(self, count: int = 6):
        """The first ``count`` images before (top row) and after (bottom row)."""
        from seethrough.gan.figures import before_after_figure

        return before_after_figure(self.images[:count], self.edited[:count], self._title())

    def _title(self) -> str:
        return (f"Forcing {len(self.units)} {self.concept} units of {self.layer} on in a region: "
                f"{self.inside_before:.0%} -> {self.inside_after:.0%} of it shows {self.concept}")


def peak_values(generator: nn.Module, layer: str, units: list[int], latents: torch.Tensor) -> torch.Tensor:
    """Per unit, its peak (spatial max) activation averaged over the images: the "on" value."""
    with torch.no_grad():
        acts = capture(generator, latents, [layer])[layer].output[:, units]
    return acts.amax(dim=(2, 3)).mean(0)


def insertion_effect(generator: nn.Module, segmenter: nn.Module, layer: str, units: list[int],
                     concept: str, latents: torch.Tensor, region: torch.Tensor) -> InsertionEffect:
    """Force ``units`` on inside ``region`` (an (H, W) bool mask at image resolution) at each
    unit's mean peak activation; measure ``concept`` inside and outside the region."""
    region = torch.as_tensor(region, dtype=torch.bool)
    if region.dim() != 2 or not region.any() or region.all():
        raise InputError("region is an (H, W) bool mask covering part of the image")
    values = peak_values(generator, layer, units, latents)
    before_images = generate_images(generator, latents)
    after_images = _images(generator, latents, *[
        Clamp(layer, [unit], float(value), where=region) for unit, value in zip(units, values)])
    category, label = concept_label(concept)
    before, after = (_pixel_labels(segmenter, images, category)
                     for images in (before_images, after_images))
    region = region.to(before.device)

    def share(labels: torch.Tensor, where: torch.Tensor) -> float:
        return float((labels[:, where] == label).float().mean())

    gained, rise = _most_gained(before[:, region], after[:, region], category)
    return InsertionEffect(layer, concept, list(units), share(before, region),
                           share(after, region), share(before, ~region), share(after, ~region),
                           before_images, after_images, gained, rise)


def _most_gained(before: torch.Tensor, after: torch.Tensor, category: str) -> tuple[str, float]:
    """The concept of ``category`` whose share of the labels rose most from ``before`` to
    ``after`` (the same pixels), and the rise."""
    from seethrough.data import ConceptWorld

    names = ConceptWorld.categories[category]
    rise = (label_shares(after, len(names)) - label_shares(before, len(names)))[1:]  # 0: none
    best = int(rise.argmax())
    return names[best + 1], float(rise[best])


@dataclass
class ArtifactUnits(FieldResult):
    """Units whose top images look least real, and what switching them off does to the
    Fréchet distance of all the images (against random units)."""

    layer: str
    units: list[int]
    unit_distances: torch.Tensor
    distance_before: float
    distance_after: float
    distance_random: float

    def to_frame(self):
        import pandas as pd

        worst = set(self.units)
        return pd.DataFrame({"unit": range(len(self.unit_distances)),
                             "top_images_distance": self.unit_distances.tolist(),
                             "artifact": [u in worst for u in range(len(self.unit_distances))]})

    def plot(self):
        return bar_figure(["all units", f"{len(self.units)} artifact units off",
                           f"{len(self.units)} random units off"],
                          [self.distance_before, self.distance_after, self.distance_random],
                          ylabel="Fréchet distance to real", title=self._title())

    def _title(self) -> str:
        return (f"Switching off {len(self.units)} artifact units of {self.layer}: Fréchet distance "
                f"{self.distance_before:.1f} -> {self.distance_after:.1f} "
                f"(random units: {self.distance_random:.1f})")


def artifact_units(generator: nn.Module, layer: str, latents: torch.Tensor, real_images: torch.Tensor,
                   *, k: int = 10, top: float = 0.1, random_draws: int = 3, seed: int = 0,
                   classifier: nn.Module | None = None) -> ArtifactUnits:
    """Rank the units of ``layer`` by the Fréchet distance (to ``real_images``) of the ``top``
    fraction of images that activate each most; switch the ``k`` worst off and measure."""
    extractor = feature_extractor(classifier)
    with torch.no_grad():
        peaks = capture(generator, latents, [layer])[layer].output.amax(dim=(2, 3))
    images = generate_images(generator, latents)
    features, real = features_of(extractor, images), features_of(extractor, real_images)
    count = max(2, round(top * len(latents)))
    distances = torch.tensor([frechet_distance(features[peaks[:, unit].topk(count).indices], real)
                              for unit in range(peaks.shape[1])])
    worst = distances.argsort(descending=True)[:k].tolist()

    def distance(chosen: list[int]) -> float:
        return frechet_distance(features_of(extractor, _images(generator, latents, Off(layer, chosen))),
                                real)

    randoms = [distance(chosen) for chosen in
               _random_units(k, peaks.shape[1], worst, random_draws, seed)]
    return ArtifactUnits(layer, worst, distances, frechet_distance(features, real), distance(worst),
                         sum(randoms) / len(randoms))


__all__ = ["AblationEffect", "ArtifactUnits", "InsertionEffect", "ablation_effect",
           "artifact_units", "concept_label", "concept_pixels", "concept_units", "insertion_effect",
           "peak_values"]

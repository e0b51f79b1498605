"""The game's vocabulary, and what is true of each ConceptWorld image.

A token is ``"category:name"`` for one of ConceptWorld's concepts: the main object's ``shape``,
``colour`` and ``texture``, and the image's ``scene`` (36 tokens). What is true of image ``i`` is
a multi-hot row over the vocabulary: exactly one token per category. The main object's colour
and texture are the most common labels on its visible pixels (``object_mask``).

An ``ImagePool`` is a block of ConceptWorld samples with their attribute rows (and, when asked,
their images): games index into it, so no image is drawn twice and the inner loops of the
game see tensors only.

Example:
    >>> vocabulary().tokens[:2], len(vocabulary())
    (['shape:circle', 'shape:square'], 36)
    >>> pool = image_pool("val", 4)
    >>> pool.attributes.shape, pool.attributes.sum(1).tolist()
    (torch.Size([4, 36]), [4.0, 4.0, 4.0, 4.0])
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from seethrough.errors import InputError

#: the concept categories a message can name, in vocabulary order
CATEGORIES = ("shape", "colour", "texture", "scene")


@dataclass(frozen=True)
class Vocabulary:
    """The attribute tokens, grouped by category.

    Attributes:
        tokens: ``"category:name"`` in category order, then ConceptWorld's label order.
        categories: the category names (``CATEGORIES``).
        category_of: ``(T,)`` long, the index in ``categories`` of each token.
    """

    tokens: list[str]
    categories: tuple[str, ...]
    category_of: torch.Tensor

    def __len__(self) -> int:
        return len(self.tokens)

    def index(self, token: str) -> int:
        """The position of ``"category:name"`` (``InputError`` names the valid ones)."""
        if token not in self.tokens:
            raise InputError(f"unknown token {token!r}: use category:name, e.g. "
                             f"{', '.join(self.tokens[::9])}")
        return self.tokens.index(token)

    def in_category(self, category: str) -> torch.Tensor:
        """``(T,)`` bool: the tokens of ``category``."""
        return self.category_of == self.categories.index(category)

    def category_matrix(self) -> torch.Tensor:
        """``(T, C)`` one-hot: token -> category."""
        return torch.nn.functional.one_hot(self.category_of, len(self.categories)).float()


@lru_cache(maxsize=1)
def vocabulary() -> Vocabulary:
    """ConceptWorld's attribute tokens (its ``categories`` without the ``none`` labels)."""
    from seethrough.data import ConceptWorld

    tokens, owner = [], []
    for number, category in enumerate(CATEGORIES):
        names = ConceptWorld.categories[category][1:]
        tokens += [f"{category}:{name}" for name in names]
        owner += [number] * len(names)
    return Vocabulary(tokens, CATEGORIES, torch.tensor(owner))


def main_object_attributes(sample: dict) -> dict[str, int]:
    """The label (1-based, as in ConceptWorld's masks) of each category for one sample: shape,
    colour and texture of the main object, and the scene. Takes ``world[i]`` or
    ``world.generate(i)``.

    Example:
        >>> from seethrough.data import ConceptWorld
        >>> sorted(main_object_attributes(ConceptWorld("val", length=1)[0]))
        ['colour', 'scene', 'shape', 'texture']
    """
    visible = np.asarray(sample["object_mask"], dtype=bool)
    found = {"shape": int(sample["label"]) + 1, "scene": int(sample["scene"])}
    for category in ("colour", "texture"):
        labels = np.asarray(sample["masks"][category])[visible]
        labels = labels[labels > 0]
        # a main object hidden behind a distractor keeps no pixels: rare; then label 1
        found[category] = int(np.bincount(labels).argmax()) if labels.size else 1
    return found


def attribute_rows(samples: list[dict]) -> torch.Tensor:
    """``(N, T)`` float multi-hot of what is true of each sample (one token per category)."""
    vocab = vocabulary()
    offsets = {c: int(vocab.in_category(c).nonzero()[0]) for c in CATEGORIES}
    rows = torch.zeros(len(samples), len(vocab))
    for i, sample in enumerate(samples):
        for category, label in main_object_attributes(sample).items():
            rows[i, offsets[category] + label - 1] = 1.0
    return rows


@dataclass
class ImagePool:
    """ConceptWorld samples ``start .. start + count`` of a split, for games.

    Attributes:
        attributes: ``(N, T)`` multi-hot ground truth over ``vocabulary()``.
        pixels: ``(N, 3, S, S)`` uint8 (ConceptWorld's images are whole multiples of 1/255),
            or ``None`` when images were not asked for.
        split, start, seed: where the samples come from (sample ``i`` is
            ``ConceptWorld(split, seed=seed)[start + i]``).
    """

    attributes: torch.Tensor
    pixels: torch.Tensor | None
    split: str
    start: int
    seed: int = 0

    def __len__(self) -> int:
        return len(self.attributes)

    @property
    def images(self) -> torch.Tensor | None:
        """``(N, 3, S, S)`` float in [0, 1] (a new tensor each time), or ``None``."""
        return None if self.pixels is None else self.pixels.float().div_(255)

    def prior(self) -> torch.Tensor:
        """``(T,)`` each token's share of the pool's images (its base rate)."""
        return self.attributes.mean(0)


@lru_cache(maxsize=16)
def image_pool(split: str, count: int, *, start: int = 0, seed: int = 0, size: int = 64,
               images: bool = False) -> ImagePool:
    """``count`` ConceptWorld samples from ``start`` of ``split`` (cached per process: the
    same arguments give the same pool object, which is not to be changed)."""
    from seethrough.data import ConceptWorld

    if count < 2:
        raise InputError(f"a pool needs at least 2 images (a target and a distractor), not {count}")
    world = ConceptWorld(split, length=start + count, seed=seed, size=size)
    raws = [world.generate(start + i) for i in range(count)]
    pixels = None
    if images:
        pixels = torch.from_numpy(np.stack([r["image"] for r in raws])).permute(0, 3, 1, 2)
        pixels = pixels.contiguous()
    return ImagePool(attribute_rows(raws), pixels, split, start, seed)


__all__ = ["CATEGORIES", "ImagePool", "Vocabulary", "attribute_rows", "image_pool",
           "main_object_attributes", "vocabulary"]

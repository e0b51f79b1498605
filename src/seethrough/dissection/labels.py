"""Concept vocabularies and label batches: what a dataset with concept annotations provides.

A concept dataset (ConceptWorld, ``BrodenDataset``) has ``categories = {category: [names]}`` with
name 0 = "none", and samples ``{"image": (3, H, W), "masks": {category: (H, W) or (L, H, W)
int labels}, <image-level category>: int or list of ints}``. Image-level categories (such as
``scene``) are the categories that are keys of the sample itself; their label covers the whole
image, as in the original Network Dissection.

Concepts get one global index (0 = none) in category order, like Broden's ``label.csv``.

Example:
    >>> vocab = Vocabulary({"colour": ["none", "red", "blue"], "scene": ["none", "sky"]})
    >>> vocab.names, vocab.category_of.tolist()
    (['none', 'red', 'blue', 'sky'], [-1, 0, 0, 1])
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from seethrough.dissection import kernels
from seethrough.errors import InputError


class Vocabulary:
    """Global concept indices for a dict of categories (each list starts with "none")."""

    def __init__(self, categories: dict[str, list[str]]):
        if not categories:
            raise InputError("a concept dataset needs a non-empty `categories` dict")
        self.categories = list(categories)
        self.names = ["none"]
        self.offsets = {}
        category_of = [-1]
        for index, (category, names) in enumerate(categories.items()):
            self.offsets[category] = len(self.names) - 1  # value v>0 -> offset + v
            self.names.extend(names[1:])
            category_of.extend([index] * (len(names) - 1))
        self.category_of = torch.tensor(category_of)
        #: per category, local label -> global index (0 stays 0): a lookup table
        self.tables = {category: torch.tensor([0, *range(self.offsets[category] + 1,
                                                      self.offsets[category] + len(names))])
                       for category, names in categories.items()}

    def __len__(self) -> int:
        return len(self.names)

    def category_name(self, concept: int) -> str:
        return self.categories[int(self.category_of[concept])] if concept > 0 else "none"

    def state(self) -> dict:
        return {"categories": self.categories, "names": self.names,
                "category_of": self.category_of.tolist()}


@dataclass
class LabelBatch:
    """Labels of a batch as global concept indices (0 = none).

    pixel: (N, L, H, W) int64 per-pixel labels (L label layers of all pixel categories)
    image: (N, M) int64 image-level labels (0 padding)
    """

    pixel: torch.Tensor
    image: torch.Tensor
    hot: torch.Tensor | None = None  # (N, P, concepts) float one-hot, made once by one_hot()
    counts: torch.Tensor | None = None  # (N, concepts) pixels per concept

    def one_hot(self, concepts: int) -> torch.Tensor:
        """(N, H*W, concepts) float counts of each concept per pixel; cached.

        Column 0 ("none") is all ones instead, so a mask times it gives the mask's area.
        """
        if self.hot is None or self.hot.shape[-1] != concepts:
            n, layers = self.pixel.shape[:2]
            flat = self.pixel.reshape(n, layers, -1)
            hot = torch.zeros(n, flat.shape[-1], concepts, device=self.pixel.device)
            for layer in range(layers):
                hot.scatter_(2, flat[:, layer, :, None], 1.0, reduce="add")
            hot[..., 0] = 1.0
            self.hot = hot
        return self.hot

    def label_counts(self, concepts: int) -> torch.Tensor:
        """(N, concepts) labelled pixels per concept (column 0 zero); cached."""
        if self.counts is None or self.counts.shape[-1] != concepts:
            if kernels.enabled_for(self.pixel):
                counts = kernels.label_counts(self.pixel, concepts).float()
            else:
                flat = self.pixel.reshape(self.pixel.shape[0], -1).long()
                if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= concepts):
                    raise kernels.label_error(concepts)
                counts = torch.zeros(flat.shape[0], concepts, device=self.pixel.device)
                counts.scatter_add_(1, flat, torch.ones_like(flat, dtype=counts.dtype))
            counts[:, 0] = 0
            self.counts = counts
        return self.counts

    def for_cache(self) -> LabelBatch:
        """The label maps only, in the smallest integer types that hold them (for a cache)."""
        pixel = self.pixel.to(torch.int16 if self.pixel.numel() == 0 or
                              int(self.pixel.max()) < 2**15 else torch.int32)
        return LabelBatch(pixel, self.image.to(torch.int32))

    def from_cache(self) -> LabelBatch:
        return LabelBatch(self.pixel.long(), self.image.long())

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.pixel, self.image))

    def __getitem__(self, index: slice) -> LabelBatch:
        return LabelBatch(self.pixel[index], self.image[index],
                          None if self.hot is None else self.hot[index],
                          None if self.counts is None else self.counts[index])

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.pixel.shape[-2:])


def _as_layers(value) -> torch.Tensor:
    value = torch.as_tensor(value)
    return value[None] if value.ndim == 2 else value


def _as_list(value) -> list[int]:
    if isinstance(value, torch.Tensor):
        value = value.flatten().tolist()
    elif isinstance(value, (int, float)):
        value = [value]
    return [int(v) for v in value if int(v) > 0]


def _check_range(category: str, low: int, high: int, size: int) -> None:
    if low < 0 or high >= size:
        raise InputError(f"{category!r} labels must lie in 0..{size - 1} (0 = none, then the "
                         f"category's names), found {low}..{high}: check the dataset's categories")


def _image_labels(vocabulary: Vocabulary, category: str, value) -> list[int]:
    """Global indices of an image-level label (int or list of ints; 0s dropped)."""
    values = _as_list(value)
    if values:
        _check_range(category, min(values), max(values), len(vocabulary.tables[category]))
    return [v + vocabulary.offsets[category] for v in values]


def image_level_categories(vocabulary: Vocabulary, sample: dict) -> list[str]:
    """The categories that a sample labels per image (keys of the sample, not of its masks)."""
    masks = sample.get("masks", {})
    return [c for c in vocabulary.categories if c not in masks and c in sample]


def collate(samples: list[dict], vocabulary: Vocabulary) -> tuple[torch.Tensor, LabelBatch]:
    """Stack samples into images (N, 3, H, W) and a ``LabelBatch`` of global concept indices."""
    if not samples:
        raise InputError("an empty batch of samples")
    images = torch.stack([torch.as_tensor(s["image"]).float() for s in samples])
    pixel_categories = [c for c in vocabulary.categories if c in samples[0].get("masks", {})]
    image_categories = image_level_categories(vocabulary, samples[0])
    if not pixel_categories and not image_categories:
        raise InputError("samples carry no labels of the dataset's categories "
                         f"{vocabulary.categories}: expected sample['masks'][category]")
    maps = {category: [_as_layers(sample["masks"][category]) for sample in samples]
            for category in pixel_categories}
    if len({tuple(m.shape[-2:]) for category in maps.values() for m in category}) > 1:
        raise InputError("label maps of one batch differ in size: resize them to one size")
    layers = []
    for category, category_maps in maps.items():
        depth = max(m.shape[0] for m in category_maps)  # label layers; pad the thinner with 0
        stacked = torch.stack([m if m.shape[0] == depth else F.pad(m, (0, 0, 0, 0, 0, depth - m.shape[0]))
                               for m in category_maps]).long()  # (N, depth, H, W)
        table = vocabulary.tables[category]
        low, high = (int(v) for v in torch.aminmax(stacked))
        _check_range(category, low, high, len(table))
        layers.append(table.index_select(0, stacked.flatten()).view(stacked.shape))
    pixel = torch.cat(layers, 1) if layers else torch.zeros(len(samples), 1, 1, 1, dtype=torch.long)
    images_level = [[v for c in image_categories for v in _image_labels(vocabulary, c, sample[c])]
                    for sample in samples]
    width = max(1, max(len(v) for v in images_level))
    image = torch.tensor([v + [0] * (width - len(v)) for v in images_level], dtype=torch.long)
    return images, LabelBatch(pixel=pixel, image=image)

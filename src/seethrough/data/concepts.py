"""What a concept dataset declares, found through the wrappers torch puts around datasets.

``categories_of`` reads ``categories`` from a dataset, a ``Subset`` of one, a ``ConcatDataset``
of several with the same categories, or a ``DataLoader`` over any of these.

Example:
    >>> from torch.utils.data import Subset
    >>> from seethrough.data import ConceptWorld
    >>> list(categories_of(Subset(ConceptWorld("val", length=8), range(4))))
    ['colour', 'shape', 'texture', 'scene']
"""
from __future__ import annotations

from torch.utils.data import ConcatDataset, DataLoader, Subset

from seethrough.errors import InputError


def unwrap(dataset):
    """The map-style dataset under a ``DataLoader`` (a loader's own batching is not used)."""
    return dataset.dataset if isinstance(dataset, DataLoader) else dataset


def categories_of(dataset, *, required: bool = True) -> dict[str, list[str]] | None:
    """``{category: ["none", names...]}`` of a concept dataset (see module doc), else raise."""
    dataset = unwrap(dataset)
    found = getattr(dataset, "categories", None)
    if found is None and isinstance(dataset, Subset):
        found = categories_of(dataset.dataset, required=False)
    if found is None and isinstance(dataset, ConcatDataset):
        parts = [categories_of(part, required=False) for part in dataset.datasets]
        if parts and all(part is not None and part == parts[0] for part in parts):
            found = parts[0]
        elif any(part is not None for part in parts):
            raise InputError("the datasets of a ConcatDataset declare different concept "
                             "categories: concatenate datasets of one concept vocabulary")
    if found is None and required:
        raise InputError("the dataset has no `categories`: use ConceptWorld, BrodenDataset, a "
                         "Subset or ConcatDataset of them, or a dataset with categories = "
                         "{category: ['none', ...]} and label masks")
    return found

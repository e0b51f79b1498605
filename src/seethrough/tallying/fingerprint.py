"""Digests that tell one dataset pass from another, so a checkpoint or cache of another run is
refused instead of silently mixed in. Stable across processes (no memory addresses).

Example:
    >>> from torch import nn
    >>> model_digest(nn.Linear(2, 2)) == model_digest(nn.Linear(2, 2))
    False
"""
from __future__ import annotations

import hashlib

import torch
from torch import nn


def digest(**items) -> str:
    """A short digest of keyword items (their sorted reprs)."""
    return hashlib.sha1(repr(sorted(items.items())).encode()).hexdigest()[:16]


def dataset_key(dataset) -> str:
    """The dataset's own repr, or (for the default repr, which holds a memory address) its type
    and a digest of its first image."""
    if type(dataset).__repr__ is not object.__repr__:
        return repr(dataset)
    first = dataset[0]
    image = first["image"] if isinstance(first, dict) else first[0]
    values = torch.as_tensor(image).double()
    inner = getattr(dataset, "dataset", None) or getattr(dataset, "datasets", None)
    indices = getattr(dataset, "indices", None)
    if indices is not None:
        inner = (inner, hashlib.sha1(repr(list(indices)).encode()).hexdigest()[:16])
    return (f"{type(dataset).__qualname__}({len(dataset)}, {inner!r}):"
            f"{float(values.sum())!r}:{float((values**2).sum())!r}")


def model_digest(model: nn.Module | None) -> str:
    """A digest of a model's state (names and sums of every tensor)."""
    if model is None:
        return "none"
    hasher = hashlib.sha1()
    for name, tensor in model.state_dict().items():
        hasher.update(name.encode())
        hasher.update(repr(float(tensor.double().sum())).encode() if tensor.numel() else b"")
    return hasher.hexdigest()[:16]

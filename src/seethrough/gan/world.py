"""A generator's images as a concept dataset: latents labelled by a segmenter.

``GeneratedWorld(generator, segmenter, length, seed)`` is a dataset whose sample ``i`` holds the
latent ``z_i`` (as a ``(D, 1, 1)`` "image", the form a generator takes in seethrough's dataset
passes) and the segmenter's per-pixel concept masks and scene of ``generator(z_i)``. It has
ConceptWorld's ``categories``, so ``dissect(generator, layers, GeneratedWorld(...))`` is GAN
Dissection (Bau et al. 2019) through the same two tally passes as Network Dissection. Latent
``i`` is a pure function of ``(seed, i)``; labels are computed in chunks and kept.

Example:
    >>> from seethrough.models.generator import build_generator
    >>> from seethrough.models.segmenter import build_segmenter
    >>> world = GeneratedWorld(build_generator(16, 8).eval(), build_segmenter().eval(), length=4)
    >>> world[0]["image"].shape, world[0]["masks"]["shape"].shape
    (torch.Size([16, 1, 1]), torch.Size([64, 64]))
"""
from __future__ import annotations

from functools import lru_cache

import torch
from torch import nn
from torch.utils.data import Dataset

from seethrough.errors import InputError
from seethrough.gan.quality import generate_images

#: latents labelled at once
CHUNK = 128


def latent(seed: int, index: int, dim: int) -> torch.Tensor:
    """Latent ``index`` of a world seeded ``seed``: standard normal, the same on every machine."""
    return torch.randn(dim, generator=torch.Generator().manual_seed(seed * 1_000_003 + index))


class GeneratedWorld(Dataset):
    """Generated images as a concept dataset (see the module docstring)."""

    def __init__(self, generator: nn.Module, segmenter: nn.Module, length: int = 1000,
                 seed: int = 0):
        if length < 1:
            raise InputError(f"a generated world needs at least one sample, not {length}")
        from seethrough.data import ConceptWorld

        self.generator, self.segmenter = generator, segmenter
        self.length, self.seed = length, seed
        self.dim = generator.latent_dim
        self.categories = {name: list(values) for name, values in ConceptWorld.categories.items()}
        self._chunk = lru_cache(maxsize=4)(self._label_chunk)

    def __len__(self) -> int:
        return self.length

    def __repr__(self) -> str:
        return f"GeneratedWorld(length={self.length}, seed={self.seed}, latent_dim={self.dim})"

    def latents(self, indices=None) -> torch.Tensor:
        """Latents (N, D) of ``indices`` (default: all)."""
        indices = range(self.length) if indices is None else indices
        return torch.stack([latent(self.seed, int(i), self.dim) for i in indices])

    def _label_chunk(self, chunk: int) -> dict[str, torch.Tensor]:
        from seethrough.models.segmenter import segment

        indices = range(chunk * CHUNK, min(self.length, (chunk + 1) * CHUNK))
        images = generate_images(self.generator, self.latents(indices))
        return segment(self.segmenter, images)

    def __getitem__(self, index: int) -> dict:
        if not -self.length <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} samples")
        index %= self.length
        labels = self._chunk(index // CHUNK)
        offset = index % CHUNK
        return {
            "image": latent(self.seed, index, self.dim)[:, None, None],
            "masks": {name: labels[name][offset] for name in ("colour", "shape", "texture")},
            "scene": int(labels["scene"][offset]),
        }


__all__ = ["GeneratedWorld", "latent"]

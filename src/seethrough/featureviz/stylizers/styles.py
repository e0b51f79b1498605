"""Eight distinctive style images, all offline: scikit-image photos and procedural patterns.

``stained_glass`` (a Voronoi mosaic of saturated glass with dark lead lines), ``stripes`` (bold
wavy diagonal bands), ``waves`` (ConceptWorld's wave texture in ink blue and gold), ``hubble``
(the Hubble deep field), ``immunohistochemistry`` (stained tissue), ``retina`` (a fundus
photo), ``brick`` and ``gravel`` (scikit-image's grey textures in two colour maps). Every image
is a pure function of its name and size.

Example:
    >>> images, names = style_images(["stained_glass", "hubble"], size=64)
    >>> images.shape, names
    (torch.Size([2, 3, 64, 64]), ['stained_glass', 'hubble'])
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from seethrough.data.photos import center_crop_resize, to_tensor
from seethrough.errors import InputError

#: bold colours for the procedural styles (RGB in [0, 1])
PALETTE = np.array([[0.85, 0.10, 0.12], [0.98, 0.75, 0.05], [0.05, 0.35, 0.80], [0.10, 0.60, 0.25],
                    [0.55, 0.10, 0.65], [0.98, 0.45, 0.05], [0.05, 0.70, 0.80]], dtype=np.float32)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    return y, x


def _stained_glass(size: int) -> np.ndarray:
    rng = np.random.default_rng(7)
    seeds = rng.random((48, 2), dtype=np.float32)
    y, x = _grid(size)
    distance = np.hypot(y[..., None] - seeds[:, 0], x[..., None] - seeds[:, 1])
    nearest = np.sort(distance, axis=2)
    cell = distance.argmin(axis=2)
    colours = PALETTE[rng.integers(len(PALETTE), size=len(seeds))]
    shade = 0.8 + 0.2 * rng.random(len(seeds), dtype=np.float32)
    image = colours[cell] * shade[cell][..., None]
    lead = (nearest[..., 1] - nearest[..., 0]) < 0.012
    image[lead] = 0.05
    return image


def _stripes(size: int) -> np.ndarray:
    y, x = _grid(size)
    phase = (x + y) * 7 + 0.35 * np.sin(2 * np.pi * 3 * (x - y))
    return PALETTE[np.floor(phase).astype(int) % len(PALETTE)]


def _colour_map(gray: np.ndarray, low, high) -> np.ndarray:
    return np.asarray(low, np.float32) + gray[..., None] * (np.asarray(high, np.float32) - low)


def _waves(size: int) -> np.ndarray:
    from seethrough.data.conceptworld import TEXTURES, texture_canvases

    gray = texture_canvases(size // 2)[TEXTURES.index("waves")][:size, :size]
    return _colour_map(gray, (0.05, 0.08, 0.35), (1.0, 0.80, 0.15))


def _skimage(name: str) -> Callable[[int], np.ndarray]:
    def load(size: int) -> np.ndarray:
        from skimage import data

        return center_crop_resize(to_tensor(getattr(data, name)()), size).permute(1, 2, 0).numpy()

    return load


def _tinted(name: str, low, high) -> Callable[[int], np.ndarray]:
    def load(size: int) -> np.ndarray:
        gray = _skimage(name)(size).mean(2)
        gray = (gray - gray.min()) / max(float(gray.max() - gray.min()), 1e-6)
        return _colour_map(gray, low, high)

    return load


#: name -> function of the size giving an (H, W, 3) float array in [0, 1]
STYLES: dict[str, Callable[[int], np.ndarray]] = {
    "stained_glass": _stained_glass,
    "stripes": _stripes,
    "waves": _waves,
    "hubble": _skimage("hubble_deep_field"),
    "immunohistochemistry": _skimage("immunohistochemistry"),
    "retina": _skimage("retina"),
    "brick": _tinted("brick", (0.25, 0.04, 0.02), (1.0, 0.62, 0.35)),
    "gravel": _tinted("gravel", (0.02, 0.10, 0.12), (0.55, 1.0, 0.75)),
}


def style_images(names: Sequence[str] | None = None,
                 size: int = 256) -> tuple[torch.Tensor, list[str]]:
    """The named styles (all eight by default) as an (S, 3, size, size) batch in [0, 1]."""
    names = list(names or STYLES)
    unknown = [name for name in names if name not in STYLES]
    if unknown:
        raise InputError(f"no style image {unknown[0]!r}; choose from {', '.join(STYLES)}")
    arrays = [np.clip(STYLES[name](size), 0, 1).astype(np.float32) for name in names]
    return torch.stack([torch.from_numpy(array).permute(2, 0, 1) for array in arrays]), names

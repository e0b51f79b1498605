"""ConceptWorld: a procedurally generated image world where every concept is known per pixel.

Sample ``i`` of a split is a pure function of ``(seed, split, i)``: the same bytes on every
machine, no files needed. Each image holds one main object (its shape is the class) and 0-2
smaller distractors of other shapes, each with a named colour and a texture, on one of a few
background scenes. An optional shortcut cue (a small solid square in the top-left corner whose
colour tells the class with probability ``bias``) makes a world in which a model can cheat.

A sample is a dict:

* ``image``: float32 tensor (3, H, W) in [0, 1] (multiples of 1/255, so uint8 is lossless)
* ``label``: int, the class = index of the main object's shape in ``class_names``
* ``masks``: dict of int64 tensors (H, W) for ``"colour"``, ``"shape"``, ``"texture"``; value
  ``k`` means ``categories[name][k]`` and 0 means none/background (Broden convention)
* ``scene``: int, image-level scene label (index in ``categories["scene"]``, never 0)
* ``object_mask``: bool tensor (H, W), the visible pixels of the main object
* ``cue_mask``: bool tensor (H, W), the pixels of the shortcut cue (all False without a cue)
* ``cue``: int, colour label of the cue (0 when there is no cue)

Example:
    >>> world = ConceptWorld("val", length=10)
    >>> s = world[3]
    >>> s["image"].shape, world.class_names[s["label"]] in world.categories["shape"]
    (torch.Size([3, 64, 64]), True)
"""
from __future__ import annotations

from functools import lru_cache
from typing import ClassVar

import numpy as np
import torch
from torch.utils.data import Dataset

from seethrough.errors import InputError

#: named colours (index = label value; 0 is none) and their reference RGB in [0, 1]
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.10, 0.10),
    "orange": (1.00, 0.55, 0.00),
    "yellow": (0.95, 0.90, 0.10),
    "green": (0.10, 0.70, 0.20),
    "cyan": (0.10, 0.80, 0.85),
    "blue": (0.10, 0.25, 0.90),
    "purple": (0.55, 0.15, 0.75),
    "pink": (1.00, 0.50, 0.75),
    "brown": (0.50, 0.30, 0.10),
    "white": (0.95, 0.95, 0.95),
    "gray": (0.50, 0.50, 0.50),
    "black": (0.08, 0.08, 0.08),
}
SHAPES = ["circle", "square", "triangle", "star", "cross", "ring", "crescent", "diamond"]
TEXTURES = [
    "stripes_horizontal", "stripes_vertical", "stripes_diagonal", "dots", "checkerboard",
    "grid", "waves", "noise", "brick", "grass", "gravel",
]
SCENES = ["sky", "meadow", "room", "plain", "static"]
#: cue colour per class (a colour name for each shape, in class order)
CUE_COLOURS = ["red", "yellow", "green", "cyan", "blue", "purple", "white", "black"]
SPLITS = {"train": 0, "val": 1, "test": 2}

_RGB = np.array(list(COLOURS.values()), dtype=np.float32)


def _texture_amplitudes(rgb: np.ndarray, margin: float = 0.85) -> np.ndarray:
    """Per colour, the largest brightness swing (<= 0.36) a texture may add while every shade
    stays clearly nearest to its own colour: a pixel labelled red is visibly red."""
    shades = np.linspace(-0.5, 0.5, 21, dtype=np.float32)[:, None]
    amplitudes = np.full(len(rgb), 0.08, np.float32)
    for k, ref in enumerate(rgb):
        for amplitude in np.arange(0.36, 0.08, -0.02, dtype=np.float32):
            pixels = np.clip(ref + amplitude * shades, 0, 1)
            d = np.linalg.norm(pixels[:, None] - rgb[None], axis=2)
            if (d[:, k] < margin * np.delete(d, k, axis=1).min(axis=1)).all():
                amplitudes[k] = amplitude
                break
    return amplitudes


_TEXTURE_AMPLITUDE = _texture_amplitudes(_RGB)
_DISTRACTOR_COUNTS = (0, 1, 2)
_ROTATION = np.deg2rad(20.0)


def _regular_polygon(u: np.ndarray, v: np.ndarray, n: int, vertex_up: bool = True) -> np.ndarray:
    """Inside test of a regular n-gon of circumradius 1 (half-planes; v points down)."""
    start = -np.pi / 2 if vertex_up else -np.pi / 2 + np.pi / n
    inside = np.ones(u.shape, dtype=bool)
    for k in range(n):
        a = start + np.pi / n + 2 * np.pi * k / n
        inside &= u * np.cos(a) + v * np.sin(a) <= np.cos(np.pi / n)
    return inside


def _star(u: np.ndarray, v: np.ndarray, points: int = 5, inner: float = 0.45) -> np.ndarray:
    """Inside test of a star with outer radius 1, one point up."""
    sector = 2 * np.pi / points
    phi = np.mod(np.arctan2(v, u) + np.pi / 2, sector)
    phi = np.minimum(phi, sector - phi)  # fold onto [0, sector/2]: edge outer(0) -> inner(s/2)
    rho = np.hypot(u, v)
    p1 = np.array([1.0, 0.0])
    p2 = inner * np.array([np.cos(sector / 2), np.sin(sector / 2)])
    normal = np.array([p2[1] - p1[1], p1[0] - p2[0]])
    normal /= np.linalg.norm(normal)
    return rho * (np.cos(phi) * normal[0] + np.sin(phi) * normal[1]) <= p1 @ normal


def shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Boolean mask of a named shape in unit coordinates (u right, v down, radius ~1)."""
    if shape == "circle":
        return u * u + v * v <= 0.85
    if shape == "square":
        return _regular_polygon(u, v, 4, vertex_up=False)
    if shape == "triangle":
        return _regular_polygon(u, v + 0.2, 3)
    if shape == "star":
        return _star(u, v)
    if shape == "cross":
        return ((np.abs(u) <= 0.3) & (np.abs(v) <= 0.95)) | ((np.abs(v) <= 0.3) & (np.abs(u) <= 0.95))
    if shape == "ring":
        r2 = u * u + v * v
        return (r2 <= 1.0) & (r2 >= 0.36)
    if shape == "crescent":
        return (u * u + v * v <= 1.0) & ((u - 0.5) ** 2 + v * v > 0.6)
    if shape == "diamond":
        return np.abs(u) / 0.62 + np.abs(v) <= 1.0
    raise ValueError(f"unknown shape {shape!r}")


def _normalize(x: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(x, [2, 98])
    return np.clip((x - lo) / max(hi - lo, 1e-6), 0, 1).astype(np.float32)


def _photo(name: str, size: int) -> np.ndarray:
    """A scikit-image bundled photo texture, block-averaged to about 4 texels per pixel."""
    import skimage.data

    img = getattr(skimage.data, name)().astype(np.float32)
    if img.ndim == 3:
        img = img.mean(axis=2)
    f = max(1, img.shape[0] // size)
    n = img.shape[0] // f
    img = img[: n * f, : n * f].reshape(n, f, n, f).mean(axis=(1, 3))
    idx = np.arange(size) * n // size
    return _normalize(img[np.ix_(idx, idx)])


@lru_cache(maxsize=8)
def texture_canvases(size: int) -> np.ndarray:
    """All textures as (len(TEXTURES), 2*size, 2*size) float32 in [0, 1]; cached per process."""
    c = 2 * size
    y, x = np.mgrid[0:c, 0:c].astype(np.float32)
    period = max(4.0, size / 8)
    w = 2 * np.pi / period
    rng = np.random.default_rng(20240611)

    def stripes(phase: np.ndarray) -> np.ndarray:
        return (np.sin(phase) > 0).astype(np.float32)

    cell_y, cell_x = np.mod(y, period) - period / 2, np.mod(x, period) - period / 2
    canvases = {
        "stripes_horizontal": stripes(w * y),
        "stripes_vertical": stripes(w * x),
        "stripes_diagonal": stripes(w * (x + y) / np.sqrt(2)),
        "dots": (cell_x**2 + cell_y**2 <= (period * 0.3) ** 2).astype(np.float32),
        "checkerboard": ((np.floor(x / period) + np.floor(y / period)) % 2).astype(np.float32),
        "grid": ((np.abs(cell_x) >= period * 0.36) | (np.abs(cell_y) >= period * 0.36)).astype(
            np.float32
        ),
        "waves": 0.5 + 0.5 * np.sin(w * y + 2.0 * np.sin(w * x / 2)),
        "noise": rng.random((c, c), dtype=np.float32),
        "brick": _photo("brick", c),
        "grass": _photo("grass", c),
        "gravel": _photo("gravel", c),
    }
    return np.stack([canvases[name] for name in TEXTURES]).astype(np.float32)


@lru_cache(maxsize=8)
def _scene_fields(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Smooth noise (for the meadow) and a row ramp in [0, 1], both (2*size, 2*size)."""
    rng = np.random.default_rng(7)
    c = 2 * size
    field = np.zeros((c, c), dtype=np.float32)
    for cells, weight in ((4, 0.5), (8, 0.3), (32, 0.2)):
        coarse = rng.random((cells, cells), dtype=np.float32)
        field += weight * np.kron(coarse, np.ones((c // cells, c // cells), dtype=np.float32))
    ramp = np.repeat(np.linspace(0, 1, c, dtype=np.float32)[:, None], c, axis=1)
    return _normalize(field), ramp


def _background(scene: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """An (H, W, 3) float32 background for a scene name."""
    field, _ = _scene_fields(size)
    t = np.linspace(0, 1, size, dtype=np.float32)[:, None, None]
    jitter = rng.uniform(-0.06, 0.06, 3).astype(np.float32)
    if scene == "sky":
        top = np.array([0.25, 0.45, 0.85], np.float32) + jitter
        bottom = np.array([0.75, 0.85, 0.97], np.float32)
        return np.broadcast_to(top + (bottom - top) * t, (size, size, 3)).copy()
    if scene == "meadow":
        oy, ox = rng.integers(0, size, 2)
        n = field[oy : oy + size, ox : ox + size, None]
        base = np.array([0.25, 0.45, 0.15], np.float32) + jitter
        return base * (0.6 + 0.6 * n)
    if scene == "room":
        wall = np.array([0.80, 0.72, 0.58], np.float32) + jitter
        floor = np.array([0.45, 0.33, 0.25], np.float32) + jitter
        horizon = int(size * rng.uniform(0.7, 0.88))
        img = np.empty((size, size, 3), np.float32)
        img[:horizon] = wall
        img[horizon:] = floor
        img[:horizon, :: max(2, size // 8)] *= 0.93
        return img
    if scene == "plain":
        grey = rng.uniform(0.3, 0.7)
        return np.full((size, size, 3), grey, np.float32) + jitter
    if scene == "static":
        cells = 8
        coarse = rng.random((cells, cells, 3), dtype=np.float32) * 0.6 + 0.2
        return np.kron(coarse, np.ones((size // cells + 1, size // cells + 1, 1), np.float32))[
            :size, :size
        ].copy()
    raise ValueError(f"unknown scene {scene!r}")


def _seed_sequence(seed: int, split: str, index: int) -> np.random.SeedSequence:
    return np.random.SeedSequence([int(seed), SPLITS[split], int(index)])


class ConceptWorld(Dataset):
    """Map-style dataset of ConceptWorld images with pixel-level concept ground truth.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``.
        length: number of samples.
        seed: world seed; sample ``i`` depends only on ``(seed, split, i)``.
        size: image height and width in pixels.
        bias: probability that the cue colour is the class's cue colour (otherwise it is one
            of the other cue colours at random), in [0, 1].
        cue: draw the cue; default: only when ``bias > 0``.

    Example:
        >>> biased = ConceptWorld("train", length=100, bias=1.0)
        >>> s = biased[0]
        >>> biased.categories["colour"][s["cue"]] == CUE_COLOURS[s["label"]]
        True
    """

    categories: ClassVar[dict[str, list[str]]] = {
        "colour": ["none", *COLOURS],
        "shape": ["none", *SHAPES],
        "texture": ["none", *TEXTURES],
        "scene": ["none", *SCENES],
    }
    class_names: ClassVar[list[str]] = list(SHAPES)
    colour_rgb: ClassVar[dict[str, tuple[float, float, float]]] = dict(COLOURS)
    cue_colours: ClassVar[list[str]] = list(CUE_COLOURS)

    def __init__(
        self,
        split: str = "train",
        length: int = 10_000,
        seed: int = 0,
        size: int = 64,
        bias: float = 0.0,
        cue: bool | None = None,
    ):
        if split not in SPLITS:
            raise InputError(f"split must be one of {sorted(SPLITS)}, not {split!r}")
        if not 0.0 <= bias <= 1.0:
            raise InputError(f"bias must be in [0, 1], not {bias}")
        if size < 32:
            raise InputError(f"size must be at least 32 pixels, not {size}")
        self.split, self.length, self.seed, self.size = split, int(length), int(seed), int(size)
        self.bias = float(bias)
        self.cue = bias > 0 if cue is None else bool(cue)
        v, u = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
        self._grid = (u, v)

    def __len__(self) -> int:
        return self.length

    def __repr__(self) -> str:
        return (
            f"ConceptWorld(split={self.split!r}, length={self.length}, seed={self.seed}, "
            f"size={self.size}, bias={self.bias}, cue={self.cue})"
        )

    def batch(self, count: int | None = None) -> dict:
        """The first ``count`` samples (default: all) stacked into one dict of batched tensors.

        Example:
            >>> ConceptWorld("val", length=4).batch()["image"].shape
            torch.Size([4, 3, 64, 64])
        """
        from torch.utils.data import default_collate

        return default_collate([self[i] for i in range(self.length if count is None else count)])

    def __getitem__(self, index: int) -> dict:
        if not -self.length <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} samples")
        raw = self.generate(index % self.length)
        return {
            "image": torch.from_numpy(raw["image"]).permute(2, 0, 1).float().div_(255),
            "label": raw["label"],
            "masks": {k: torch.from_numpy(m.astype(np.int64)) for k, m in raw["masks"].items()},
            "scene": raw["scene"],
            "object_mask": torch.from_numpy(raw["object_mask"]),
            "cue_mask": torch.from_numpy(raw["cue_mask"]),
            "cue": raw["cue"],
        }

    def generate(self, index: int) -> dict:
        """Sample ``index`` as numpy: ``image`` uint8 (H, W, 3), masks uint8 (H, W)."""
        rng = np.random.default_rng(_seed_sequence(self.seed, self.split, index))
        s = self.size
        scene = int(rng.integers(len(SCENES)))
        img = _background(SCENES[scene], s, rng)
        background_rgb = img.reshape(-1, 3).mean(axis=0)

        label = int(rng.integers(len(SHAPES)))
        r_main = rng.uniform(0.2, 0.3) * s
        centre = rng.uniform(r_main, s - r_main, 2)
        objects = [(label, r_main, centre)]
        others = [k for k in range(len(SHAPES)) if k != label]
        for _ in range(int(rng.choice(_DISTRACTOR_COUNTS))):
            r = r_main * rng.uniform(0.4, 0.7)
            cands = rng.uniform(r, s - r, (8, 2))
            dist = np.linalg.norm(cands - centre, axis=1)
            ok = np.flatnonzero(dist >= r_main + 0.3 * r)
            pos = cands[ok[0]] if ok.size else cands[np.argmax(dist)]
            objects.append((int(rng.choice(others)), r, pos))
        order = [0] + list(range(1, len(objects)))
        behind = [k for k in order[1:] if rng.random() < 0.5]
        order = behind + [0] + [k for k in order[1:] if k not in behind]

        allowed = np.flatnonzero(np.linalg.norm(_RGB - background_rgb, axis=1) > 0.3)
        canvases = texture_canvases(s)
        colour_map = np.zeros((s, s), np.uint8)
        shape_map = np.zeros((s, s), np.uint8)
        texture_map = np.zeros((s, s), np.uint8)
        owner = np.full((s, s), -1, np.int8)
        u0, v0 = self._grid
        for k in order:
            shape, r, (cx, cy) = objects[k]
            angle = rng.uniform(-_ROTATION, _ROTATION)
            du, dv = (u0 - cx) / r, (v0 - cy) / r
            cos, sin = np.cos(angle), np.sin(angle)
            mask = shape_mask(SHAPES[shape], cos * du + sin * dv, -sin * du + cos * dv)
            colour = int(rng.choice(allowed))
            texture = int(rng.integers(len(TEXTURES)))
            oy, ox = rng.integers(0, s, 2)
            tex = canvases[texture, oy : oy + s, ox : ox + s][mask]
            img[mask] = _RGB[colour] + _TEXTURE_AMPLITUDE[colour] * (tex[:, None] - 0.5)
            colour_map[mask], shape_map[mask], texture_map[mask] = colour + 1, shape + 1, texture + 1
            owner[mask] = k

        cue_mask = np.zeros((s, s), bool)
        cue = 0
        if self.cue:
            side, margin = max(4, s // 8), max(1, s // 32)
            cue_mask[margin : margin + side, margin : margin + side] = True
            if rng.random() < self.bias:
                name = CUE_COLOURS[label]
            else:
                name = CUE_COLOURS[rng.choice([c for c in range(len(SHAPES)) if c != label])]
            cue = list(COLOURS).index(name) + 1
            img[cue_mask] = _RGB[cue - 1]
            colour_map[cue_mask], shape_map[cue_mask], texture_map[cue_mask] = cue, 0, 0
            owner[cue_mask] = -1

        image = np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)
        return {
            "image": image,
            "label": label,
            "masks": {"colour": colour_map, "shape": shape_map, "texture": texture_map},
            "scene": scene + 1,
            "object_mask": owner == 0,
            "cue_mask": cue_mask,
            "cue": cue,
        }

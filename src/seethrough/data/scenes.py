"""ConceptWorld scenes made to order: ``count`` instances of one class, of a chosen size.

``ConceptWorld`` draws one main object of radius 0.2-0.3 of the image and up to two smaller
distractors of other shapes. Experiments on how a model's evidence depends on the object
(is a large object recognized by its details? do several instances add up?) need scenes where
the number and size of the objects are set: ``object_scene`` draws ``count`` non-overlapping
instances of the class ``label``, each of radius ``radius`` (a fraction of the image side),
with ConceptWorld's shapes, colours, textures, rotations and backgrounds, and no distractors.
Scene ``index`` is a pure function of ``(seed, label, count, radius, index)``.

Example:
    >>> scene = object_scene(3, count=2, radius=0.15, index=0)
    >>> scene["image"].shape, scene["instance_masks"].shape
    (torch.Size([3, 64, 64]), torch.Size([2, 64, 64]))
    >>> bool((scene["instance_masks"].sum(0) <= 1).all())   # the instances do not overlap
    True
"""
from __future__ import annotations

import numpy as np
import torch

from seethrough.data.conceptworld import (
    _RGB,
    _ROTATION,
    _TEXTURE_AMPLITUDE,
    SCENES,
    SHAPES,
    _background,
    shape_mask,
    texture_canvases,
)
from seethrough.errors import InputError

#: layouts tried, and candidate positions per instance, before giving up on fitting them apart
PLACEMENT_TRIES, CANDIDATES = 100, 256


def object_scene(label: int, *, count: int = 1, radius: float = 0.25, index: int = 0,
                 seed: int = 0, size: int = 64) -> dict:
    """A scene of ``count`` instances of class ``label`` (see the module doc).

    Returns a dict: ``image`` (3, H, W) float32 in [0, 1] (multiples of 1/255, as
    ConceptWorld), ``label``, ``instance_masks`` (count, H, W) bool, the visible pixels of each
    instance (they do not overlap: centres are at least ``2.05 radius`` apart), ``object_mask``
    (H, W) bool, their union, and ``scene`` (index in ``ConceptWorld.categories["scene"]``).
    """
    if not 0 <= int(label) < len(SHAPES):
        raise InputError(f"label must be a class index in 0..{len(SHAPES) - 1}, not {label!r}")
    if isinstance(count, bool) or int(count) != count or count < 1:
        raise InputError(f"count must be a positive integer, not {count!r}")
    if not 0.02 <= radius <= 0.5:
        raise InputError(f"radius is a fraction of the image side in [0.02, 0.5], not {radius!r}")
    if size < 32:
        raise InputError(f"size must be at least 32 pixels, not {size}")
    rng = np.random.default_rng(np.random.SeedSequence(
        [int(seed), 7, int(label), int(count), round(radius * 1000), int(index)]))
    s, r = int(size), radius * size
    scene = int(rng.integers(len(SCENES)))
    img = _background(SCENES[scene], s, rng)
    allowed = np.flatnonzero(np.linalg.norm(_RGB - img.reshape(-1, 3).mean(0), axis=1) > 0.3)
    centres = _place(rng, count, r, s)
    v0, u0 = np.mgrid[0:s, 0:s].astype(np.float32) + 0.5
    canvases = texture_canvases(s)
    masks = np.zeros((count, s, s), bool)
    for k, (cx, cy) in enumerate(centres):
        angle = rng.uniform(-_ROTATION, _ROTATION)
        du, dv = (u0 - cx) / r, (v0 - cy) / r
        cos, sin = np.cos(angle), np.sin(angle)
        mask = shape_mask(SHAPES[int(label)], cos * du + sin * dv, -sin * du + cos * dv)
        colour, texture = int(rng.choice(allowed)), int(rng.integers(len(canvases)))
        oy, ox = rng.integers(0, s, 2)
        tex = canvases[texture, oy:oy + s, ox:ox + s][mask]
        img[mask] = _RGB[colour] + _TEXTURE_AMPLITUDE[colour] * (tex[:, None] - 0.5)
        masks[k] = mask
    image = np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)
    return {"image": torch.from_numpy(image).permute(2, 0, 1).float().div_(255),
            "label": int(label), "instance_masks": torch.from_numpy(masks),
            "object_mask": torch.from_numpy(masks.any(0)), "scene": scene + 1}


def _place(rng: np.random.Generator, count: int, r: float, s: int) -> np.ndarray:
    """``count`` centres inside the image, pairwise at least ``2.05 r`` apart (shapes reach
    at most ``r`` from their centre): one after the other, each drawn among the candidate
    positions far enough from those placed; the layout is redrawn when none is left."""
    for _ in range(PLACEMENT_TRIES):
        centres = []
        for _ in range(count):
            candidates = rng.uniform(r, s - r, (CANDIDATES, 2))
            if centres:
                gaps = np.linalg.norm(candidates[:, None] - np.array(centres)[None], axis=2)
                candidates = candidates[(gaps >= 2.05 * r).all(1)]
            if not len(candidates):
                break
            centres.append(candidates[0])
        if len(centres) == count:
            return np.array(centres)
    raise InputError(f"{count} instances of radius {r / s:g} do not fit apart in the image: "
                     "take a smaller radius or fewer instances")


def object_scenes(labels, *, count: int = 1, radius: float = 0.25, seed: int = 0,
                  size: int = 64) -> dict:
    """``object_scene`` for each class in ``labels`` (scene ``i`` has index ``i``), stacked:
    ``image`` (N, 3, H, W), ``label`` (N,), ``instance_masks`` (N, count, H, W),
    ``object_mask`` (N, H, W).

    Example:
        >>> object_scenes([0, 1, 2], count=3, radius=0.15)["instance_masks"].shape
        torch.Size([3, 3, 64, 64])
    """
    made = [object_scene(int(label), count=count, radius=radius, index=i, seed=seed, size=size)
            for i, label in enumerate(labels)]
    return {"image": torch.stack([m["image"] for m in made]),
            "label": torch.tensor([m["label"] for m in made]),
            "instance_masks": torch.stack([m["instance_masks"] for m in made]),
            "object_mask": torch.stack([m["object_mask"] for m in made])}


__all__ = ["object_scene", "object_scenes"]

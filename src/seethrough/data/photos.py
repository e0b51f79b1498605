"""Real photos that ship inside scikit-image's wheel, ready for an ImageNet model.

Example:
    >>> images, names = sample_photos(["coffee", "cat"], size=224)
    >>> images.shape, names
    (torch.Size([2, 3, 224, 224]), ['coffee', 'cat'])
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from seethrough.errors import InputError

#: our name -> scikit-image's loader name
PHOTOS = {
    "astronaut": "astronaut",
    "cat": "chelsea",
    "coffee": "coffee",
    "rocket": "rocket",
}
TEXTURES = ("brick", "grass", "gravel")


def to_tensor(array: np.ndarray) -> torch.Tensor:
    """HxW or HxWx3 uint8/float array -> (3, H, W) float tensor in [0, 1]."""
    array = np.asarray(array)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise InputError(f"an image is H x W x 3, got shape {array.shape}")
    tensor = torch.from_numpy(np.array(array[..., :3])).permute(2, 0, 1)  # a writable copy
    return tensor.float() / 255.0 if array.dtype == np.uint8 else tensor.float()


def center_crop_resize(image: torch.Tensor, size: int) -> torch.Tensor:
    """Square centre crop, then an antialiased resize to ``size`` x ``size``."""
    _, height, width = image.shape
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    crop = image[:, top : top + side, left : left + side]
    return F.interpolate(crop[None], size=(size, size), mode="bilinear", antialias=True,
                         align_corners=False)[0].clamp(0, 1)


def load_image(path: str, size: int) -> torch.Tensor:
    """Read an image file as a (3, size, size) tensor in [0, 1]; clear error if unreadable.

    The same as ``seethrough.data.images.read_image`` (EXIF rotation, any mode, 16-bit).
    """
    from seethrough.data.images import read_image

    return read_image(path, size)


def sample_photos(names: Sequence[str] | None = None, size: int = 224):
    """Stack scikit-image sample photos (or textures) into a batch in [0, 1]."""
    from skimage import data

    names = list(names or PHOTOS)
    images = []
    for name in names:
        loader = PHOTOS.get(name, name if name in TEXTURES else None)
        if loader is None:
            raise InputError(f"no sample photo {name!r}; choose from {sorted(PHOTOS) + list(TEXTURES)}")
        images.append(center_crop_resize(to_tensor(getattr(data, loader)()), size))
    return torch.stack(images), names


def photo_crops(per_photo: int, size: int = 224, *, seed: int = 0
                ) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Random resized crops (a quarter to all of the area, aspect 3:4 to 4:3, half of them
    mirrored) of every sample photo and texture: images ``(N, 3, size, size)``, the source of
    each ``(N,)`` and the source names. A small labelled set for maps and neighbours.

    Example:
        >>> images, sources, names = photo_crops(2, size=32)
        >>> images.shape, sources.tolist()[:4], names[:2]
        (torch.Size([14, 3, 32, 32]), [0, 0, 1, 1], ['astronaut', 'cat'])
    """
    from torchvision.transforms import v2

    names = [*PHOTOS, *TEXTURES]
    photos, _ = sample_photos(names, size=size)
    crop = v2.Compose([v2.RandomResizedCrop(size, scale=(0.25, 1.0), antialias=True),
                       v2.RandomHorizontalFlip()])
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        images = torch.stack([crop(photo) for photo in photos for _ in range(per_photo)])
    finally:
        torch.random.set_rng_state(generator_state)
    sources = torch.arange(len(names)).repeat_interleave(per_photo)
    return images.clamp(0, 1), sources, names

"""Image files and folders as people have them, turned into (3, size, size) tensors in [0, 1].

``find_images`` expands folders (recursively, sorted, hidden files left out), ``read_image``
reads one file whatever its mode (EXIF rotation, grayscale, palette, alpha, CMYK, 16-bit and
float), and ``load_images`` reads many, skipping the unreadable ones with a warning that names
each and why.

Example:
    >>> import pathlib, tempfile, warnings
    >>> from PIL import Image
    >>> from seethrough.errors import SkippedInputWarning
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     folder = pathlib.Path(folder)
    ...     Image.new("RGB", (40, 30), "red").save(folder / "red.png")
    ...     _ = (folder / "notes.jpg").write_text("not a picture")
    ...     with warnings.catch_warnings():
    ...         warnings.simplefilter("ignore", SkippedInputWarning)
    ...         photos = load_images([folder], size=16)
    >>> photos.images.shape, photos.names
    (torch.Size([1, 3, 16, 16]), ['red.png'])
    >>> photos.describe()
    '2 files: 1 image (1 resized and centre-cropped to 16 x 16), 1 skipped (notes.jpg: not an image)'
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from seethrough.errors import InputError, SkippedInputWarning

#: suffixes taken from folders (a file named explicitly is tried whatever its suffix)
EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
#: PIL modes with more than 8 bits per pixel: scaled by the image's own range
_HIGH_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_REASONS_SHOWN = 5


class _Unreadable(Exception):
    """Internal: a file that cannot be used; the argument is the short reason."""


@dataclass
class ImageSet:
    """Images read from files, with what was left out.

    Attributes:
        images: (N, 3, size, size) float tensor in [0, 1].
        names: per image, its path relative to the folder it was found in, or the path as given.
        skipped: ``(name, reason)`` per file that could not be read.
        resized: how many images were not already size x size (resized and centre-cropped).
        paths: per image, the file it came from.
    """

    images: torch.Tensor
    names: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    resized: int = 0
    paths: list[Path] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.names)

    def describe(self) -> str:
        """One line, e.g. '6 files: 4 images, 2 skipped (x.jpg: truncated file; ...)'."""
        total = len(self.names) + len(self.skipped)
        text = f"{_count(total, 'file')}: {_count(len(self.names), 'image')}"
        if self.resized:
            size = self.images.shape[-1]
            text += f" ({self.resized} resized and centre-cropped to {size} x {size})"
        if self.skipped:
            reasons = "; ".join(f"{name}: {reason}" for name, reason in self.skipped[:_REASONS_SHOWN])
            if len(self.skipped) > _REASONS_SHOWN:
                reasons += f"; and {len(self.skipped) - _REASONS_SHOWN} more"
            text += f", {len(self.skipped)} skipped ({reasons})"
        return text


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _is_hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def _find(paths: Sequence[str | Path]) -> list[tuple[Path, str]]:
    """(file, name) per candidate image, in order, each file once."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    missing = [str(path) for path in paths if not Path(path).exists()]
    if missing:
        raise InputError(f"no such file or folder: {', '.join(missing)}")
    found: list[tuple[Path, str]] = []
    seen_files: set[Path] = set()
    seen_names: set[str] = set()

    def add(file: Path, name: str, folder: Path | None) -> None:
        key = file.resolve()
        if key in seen_files:
            return
        if name in seen_names and folder is not None:  # same relative name in two folders
            name = f"{folder.name}/{name}"
        if name in seen_names:
            name = str(file)
        seen_files.add(key)
        seen_names.add(name)
        found.append((file, name))

    for given in paths:
        path = Path(given)
        if not path.is_dir():
            add(path, str(given), None)
            continue
        files = [file for file in path.rglob("*")
                 if file.suffix.lower() in EXTENSIONS and not _is_hidden(file.relative_to(path))
                 and file.is_file()]
        for file in sorted(files, key=lambda file: file.relative_to(path).parts):
            add(file, file.relative_to(path).as_posix(), path)
    return found


def _find_some(paths: Sequence[str | Path]) -> list[tuple[Path, str]]:
    """``_find``, with an error when it finds no image file."""
    found = _find(paths)
    if not found:
        given = ", ".join(str(path) for path in ([paths] if isinstance(paths, (str, Path)) else paths))
        raise InputError(f"no image files in {given or 'nothing'} (looked for {' '.join(EXTENSIONS)})")
    return found


def find_images(paths: Sequence[str | Path]) -> list[Path]:
    """Image files among ``paths``: files as given, folders searched recursively.

    From folders only files ending in one of ``EXTENSIONS`` (any case) are taken, sorted, hidden
    files and folders left out; a file named explicitly is always taken. Each file appears once.

    Raises:
        InputError: a path that does not exist (the message names every missing one).
    """
    return [file for file, _ in _find(paths)]


def _reason(error: BaseException, path: Path) -> str:
    """A short, one-line reason why ``path`` could not be read."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(error, UnidentifiedImageError):
        try:
            empty = path.stat().st_size == 0
        except OSError:
            empty = False
        return "empty file" if empty else "not an image"
    text = str(error).strip()
    lowered = text.lower()
    if isinstance(error, EOFError) or any(word in lowered for word in (
            "truncated", "broken data stream", "premature end", "unexpected end")):
        return "truncated file"
    if isinstance(error, Image.DecompressionBombError):
        return "too many pixels (PIL refuses it as a possible decompression bomb)"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror[0].lower() + error.strerror[1:]
    first = text.splitlines()[0] if text else ""
    return f"{error.__class__.__name__}: {first}" if first else error.__class__.__name__


def _white_background(image):
    """An RGBA image composited over white, as RGB."""
    from PIL import Image

    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _pixels(image, size: int) -> np.ndarray:
    """An opened PIL image as H x W x 3: uint8, or float32 in [0, 1] for high-bit images."""
    if image.mode in _HIGH_BIT_MODES:
        values = np.asarray(image).astype(np.float64)
        if values.ndim == 3:  # a multi-band high-bit image: its first band
            values = values[..., 0]
        finite = np.isfinite(values)
        if not finite.any():
            scaled = np.full(values.shape, 0.5)
        else:
            low, high = float(values[finite].min()), float(values[finite].max())
            scaled = (values - low) / (high - low) if high > low else np.full(values.shape, 0.5)
            scaled = np.clip(np.nan_to_num(scaled, nan=0.5, posinf=1.0, neginf=0.0), 0.0, 1.0)
        return np.repeat(scaled.astype(np.float32)[..., None], 3, axis=2)
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        image = _white_background(image)
    elif image.mode != "RGB":
        image = image.convert("RGB")  # L, 1, P, CMYK, YCbCr, ...
    factor = min(image.size) // (2 * size)
    if factor >= 2:  # a box-filter reduction first: cheap, and the resize below antialiases
        image = image.reduce(factor)
    return np.asarray(image)


def _decode(path: Path, size: int) -> tuple[torch.Tensor, bool]:
    """The image at ``path`` as (3, size, size) in [0, 1], and whether it had to be resized."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as handle:
            resized = handle.size != (size, size)
            if handle.format == "JPEG":
                handle.draft(None, (size, size))  # decode at a reduced scale, still >= size
            handle.load()
            image = ImageOps.exif_transpose(handle)
            array = _pixels(image, size)
    except MemoryError:
        raise
    except Exception as error:  # noqa: BLE001 - any decoder failure is "this file is unusable"
        raise _Unreadable(_reason(error, path)) from None
    tensor = torch.from_numpy(np.array(array)).permute(2, 0, 1)  # a writable copy
    tensor = tensor.float() / 255.0 if array.dtype == np.uint8 else tensor.float()
    return _fit(tensor, size), resized


def _fit(image: torch.Tensor, size: int) -> torch.Tensor:
    """Resize the shorter side to ``size`` (bilinear, antialiased), then centre-crop a square."""
    _, height, width = image.shape
    if (height, width) != (size, size):
        scale = size / min(height, width)
        shape = (max(size, round(height * scale)), max(size, round(width * scale)))
        if shape != (height, width):
            image = F.interpolate(image[None], size=shape, mode="bilinear", antialias=True,
                                  align_corners=False)[0]
        top, left = (shape[0] - size) // 2, (shape[1] - size) // 2
        image = image[:, top : top + size, left : left + size]
    return image.clamp(0, 1).contiguous()


def read_image(path: str | Path, size: int) -> torch.Tensor:
    """Read one image file as a (3, size, size) float tensor in [0, 1].

    The EXIF orientation is applied; grayscale, palette and CMYK images become RGB; images with
    transparency (RGBA, LA, palette with a transparent colour) are composited over white;
    16-bit, 32-bit integer and float images are scaled by their own range (minimum to maximum;
    a constant image becomes mid-grey 0.5), not as 8-bit. Then the shorter side is resized to
    ``size`` (bilinear, antialiased) and the centre cropped to size x size.

    Raises:
        InputError: a corrupt, truncated or non-image file, e.g.
            "cannot read image x.jpg: truncated file".
    """
    if size < 1:
        raise InputError(f"image size must be positive, not {size}")
    try:
        return _decode(Path(path), size)[0]
    except _Unreadable as error:
        raise InputError(f"cannot read image {path}: {error}") from None


def load_images(paths: Sequence[str | Path], size: int) -> ImageSet:
    """Read every image among ``paths`` (files and folders, see ``find_images``).

    A file that cannot be read is left out with a ``SkippedInputWarning`` naming it and why,
    and listed in ``ImageSet.skipped``.

    Raises:
        InputError: a path that does not exist, no file found, or no readable image among them.
    """
    if size < 1:
        raise InputError(f"image size must be positive, not {size}")
    found = _find_some(paths)
    images, names, files, skipped, resized = [], [], [], [], 0
    for file, name in found:
        try:
            image, was_resized = _decode(file, size)
        except _Unreadable as error:
            skipped.append((name, str(error)))
            warnings.warn(f"skipped {name}: {error}", SkippedInputWarning, stacklevel=2)
            continue
        images.append(image)
        names.append(name)
        files.append(file)
        resized += was_resized
    if not images:
        reasons = "; ".join(f"{name}: {reason}" for name, reason in skipped[:3])
        more = f"; and {len(skipped) - 3} more" if len(skipped) > 3 else ""
        raise InputError(f"no usable image among {_count(len(found), 'file')}: {reasons}{more}")
    return ImageSet(torch.stack(images), names, skipped, resized, files)


class ImageFiles(torch.utils.data.Dataset):
    """Image files as a lazy dataset: item ``i`` is ``read_image(files[i], size)``, read when
    asked for, so a dataset pass (``tally``, ``attribute_dataset``) over many files keeps one
    batch in memory and a worker reads only its own shard's files.

    Example:
        >>> import tempfile, numpy, PIL.Image
        >>> folder = tempfile.mkdtemp()
        >>> PIL.Image.fromarray(numpy.zeros((8, 8, 3), numpy.uint8)).save(f"{folder}/a.png")
        >>> files = ImageFiles([folder], size=4)
        >>> len(files), files[0].shape, files.names
        (1, torch.Size([3, 4, 4]), ['a.png'])
    """

    def __init__(self, paths: Sequence[str | Path], size: int):
        if size < 1:
            raise InputError(f"image size must be positive, not {size}")
        found = _find_some(paths)
        self.files, self.names = [f for f, _ in found], [n for _, n in found]
        self.size = size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        return read_image(self.files[index], self.size)

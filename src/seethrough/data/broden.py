"""Read and write concept datasets in the Broden layout (Bau et al., NetDissect, 2017).

A Broden folder holds ``index.csv`` (one row per image: ``image,split,ih,iw,sh,sw`` and one
column per category, either label-image file names or image-level label numbers, several
joined by ``;``), ``label.csv`` (``number,name,category,frequency,coverage,syns``; number 0 is
``-``), ``category.csv`` (``name,first,last,count,frequency``), one ``c_<category>.csv`` per
category (``code,number,name,frequency,coverage``) and ``images/``. Pixel label images are PNGs
whose label number is ``R + 256 * G``. Our categories map to Broden's: colour -> ``color``,
shape -> ``object``, texture -> ``texture`` (pixel level), scene -> ``scene`` (image level).
The class of each image goes in an extra ``class`` column and the class names in ``class.csv``;
NetDissect's reader ignores both.

Example:
    >>> import tempfile
    >>> from seethrough.data import ConceptWorld
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     write_broden(ConceptWorld("val", length=20), folder)
    ...     back = BrodenDataset(folder)
    ...     len(back), back.categories["shape"][1]
    (20, 'circle')
"""
from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from seethrough.atomic import atomic_path
from seethrough.errors import InputError

#: our category name -> Broden's column name
BRODEN_NAMES = {"colour": "color", "shape": "object", "texture": "texture", "scene": "scene"}
PIXEL_CATEGORIES = ("colour", "shape", "texture")
COLUMNS = ["image", "split", "ih", "iw", "sh", "sw",
           "color", "object", "part", "material", "scene", "texture"]


def _atomic(path: Path, write: Callable[[io.BufferedWriter], None]) -> None:
    """Write a file through a temporary in the same folder, then rename it into place."""
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        write(handle)


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    _atomic(path, lambda f: f.write(text.getvalue().encode()))


def _write_png(path: Path, array: np.ndarray) -> None:
    _atomic(path, lambda f: Image.fromarray(array).save(f, format="PNG"))


def _encode_labels(numbers: np.ndarray) -> np.ndarray:
    """Global label numbers (H, W) -> RGB uint8 with number = R + 256 * G."""
    rgb = np.zeros((*numbers.shape, 3), np.uint8)
    rgb[..., 0] = numbers % 256
    rgb[..., 1] = numbers // 256
    return rgb


def _numpy_sample(dataset, index: int) -> dict:
    """A sample as numpy: image uint8 (H, W, 3) and masks; uses ``dataset.generate`` if any."""
    if hasattr(dataset, "generate"):
        return dataset.generate(index)
    s = dataset[index]
    image = (s["image"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    masks = {k: m.numpy() for k, m in s["masks"].items()}
    return {**s, "image": image, "masks": masks}


def write_broden(dataset, folder: str | Path, n: int | None = None) -> None:
    """Write the first ``n`` samples (default: all) of a concept dataset as a Broden folder.

    ``dataset`` yields the ConceptWorld sample dict and has ``categories``; its ``split``
    attribute (default ``"train"``) goes in the index. Every file is written atomically and
    ``index.csv`` last, so a folder with an index is complete.
    """
    from tqdm.auto import tqdm

    folder = Path(folder)
    n = len(dataset) if n is None else min(int(n), len(dataset))
    if n < 1:
        raise InputError("write_broden needs at least one sample")
    split = getattr(dataset, "split", "train")
    (folder / "images" / split).mkdir(parents=True, exist_ok=True)

    categories = dataset.categories
    offsets, number = {}, 1
    for category in BRODEN_NAMES:
        offsets[category] = number - 1  # global number = offset + local code (code >= 1)
        number += len(categories[category]) - 1
    frequency = {c: np.zeros(len(categories[c]), np.int64) for c in BRODEN_NAMES}
    pixels = {c: np.zeros(len(categories[c]), np.float64) for c in BRODEN_NAMES}

    rows = []
    for index in tqdm(range(n), desc="write broden", unit="img", leave=False, disable=n < 200):
        sample = _numpy_sample(dataset, index)
        stem = f"{split}/{index:06d}"
        h, w = sample["image"].shape[:2]
        _write_png(folder / "images" / f"{stem}.png", sample["image"])
        row = {"image": f"{stem}.png", "split": split, "ih": h, "iw": w, "sh": h, "sw": w,
               "part": "", "material": "", "class": sample["label"]}
        for category in PIXEL_CATEGORIES:
            codes = np.asarray(sample["masks"][category]).astype(np.int64)
            numbers = np.where(codes > 0, codes + offsets[category], 0)
            name = f"{stem}_{BRODEN_NAMES[category]}.png"
            _write_png(folder / "images" / name, _encode_labels(numbers))
            row[BRODEN_NAMES[category]] = name
            counts = np.bincount(codes.ravel(), minlength=len(categories[category]))
            frequency[category] += counts > 0
            pixels[category] += counts / codes.size
        scene = int(sample["scene"])
        row["scene"] = str(scene + offsets["scene"]) if scene > 0 else ""
        if scene > 0:
            frequency["scene"][scene] += 1
            pixels["scene"][scene] += 1.0
        rows.append(row)

    label_rows = [[0, "-", "-", 0, 0.0, ""]]
    category_rows = []
    for category, broden in BRODEN_NAMES.items():
        names = categories[category]
        c_rows = []
        for code in range(1, len(names)):
            freq = int(frequency[category][code])
            coverage = float(pixels[category][code] / freq) if freq else 0.0
            c_rows.append([code, offsets[category] + code, names[code], freq, round(coverage, 6)])
            label_rows.append([offsets[category] + code, names[code], f"{broden}({freq})", freq,
                               round(coverage, 6), ""])
        _write_csv(folder / f"c_{broden}.csv", ["code", "number", "name", "frequency", "coverage"],
                   c_rows)
        category_rows.append([broden, offsets[category] + 1, offsets[category] + len(names) - 1,
                              len(names) - 1, int((frequency[category][1:] > 0).sum())])
    _write_csv(folder / "label.csv", ["number", "name", "category", "frequency", "coverage",
                                      "syns"], label_rows)
    _write_csv(folder / "category.csv", ["name", "first", "last", "count", "frequency"],
               category_rows)
    class_names = getattr(dataset, "class_names", None)
    if class_names:
        _write_csv(folder / "class.csv", ["number", "name"], list(enumerate(class_names)))
    header = COLUMNS + ["class"]
    _write_csv(folder / "index.csv", header, [[row[c] for c in header] for row in rows])


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise InputError(f"{path} is missing: not a Broden folder (write one with write_broden)")
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


class BrodenDataset(torch.utils.data.Dataset):
    """A Broden-format folder as a dataset yielding the ConceptWorld sample dict.

    Global label numbers are mapped back to per-category codes (the order of ``c_<cat>.csv``),
    so ``categories[name][code]`` names a pixel's label as in ConceptWorld. Broden's ``color``,
    ``object``, ``texture`` become ``colour``, ``shape``, ``texture``; other pixel categories of a
    real Broden (``part``, ``material``) keep their names; masks have the label size ``(sh, sw)``,
    several label files of one category are layered (later nonzero pixels win) and image-level
    numbers fill the whole mask. ``object_mask`` is the pixels of the class's shape and
    ``cue_mask`` the coloured pixels outside any shape (exact for ConceptWorld folders);
    ``label`` is -1 when the index has no ``class`` column.

    Args:
        folder: the folder holding ``index.csv``.
        split: keep only rows of this split (default: all rows).
    """

    def __init__(self, folder: str | Path, split: str | None = None):
        self.folder = Path(folder)
        rows = _read_csv(self.folder / "index.csv")
        self.rows = [r for r in rows if split is None or r["split"] == split]
        self.split = split or (self.rows[0]["split"] if self.rows else "train")
        self.categories: dict[str, list[str]] = {}
        self._lookup: dict[str, np.ndarray] = {}
        self._columns: dict[str, str] = {}  # our category name -> index.csv column
        size = 1 + max(int(r["number"]) for r in _read_csv(self.folder / "label.csv"))
        ours = {broden: name for name, broden in BRODEN_NAMES.items()}
        for broden in self._broden_categories():
            entries = _read_csv(self.folder / f"c_{broden}.csv")
            category = ours.get(broden, broden)
            self.categories[category] = ["none"] + [e["name"] for e in entries]
            lookup = np.zeros(size, np.int64)
            for e in entries:
                lookup[int(e["number"])] = int(e["code"])
            self._lookup[category] = lookup
            self._columns[category] = broden
        for category in BRODEN_NAMES:
            self.categories.setdefault(category, ["none"])
        classes = self.folder / "class.csv"
        self.class_names = [r["name"] for r in _read_csv(classes)] if classes.is_file() else []

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        return f"BrodenDataset({str(self.folder)!r}, {len(self)} images)"

    def _broden_categories(self) -> list[str]:
        """Category names from ``category.csv``, else from the ``c_*.csv`` files present."""
        path = self.folder / "category.csv"
        names = [r["name"] for r in _read_csv(path)] if path.is_file() else []
        names = names or sorted(p.stem[2:] for p in self.folder.glob("c_*.csv"))
        return [n for n in names if (self.folder / f"c_{n}.csv").is_file()]

    def _pixel_codes(self, value: str, category: str, shape: tuple[int, int]) -> np.ndarray:
        """Codes (H, W) from ``;``-joined label files or image-level numbers; later layers win."""
        codes = np.zeros(shape, np.int64)
        for item in filter(None, value.split(";")):
            if item.isdigit():
                numbers = np.full(shape, int(item), np.int64)
            else:
                rgb = np.asarray(Image.open(self.folder / "images" / item).convert("RGB"))
                numbers = rgb[..., 0].astype(np.int64) + 256 * rgb[..., 1].astype(np.int64)
            layer = self._lookup[category][numbers]
            codes = np.where(layer > 0, layer, codes)
        return codes

    def __getitem__(self, index: int) -> dict:
        row = self.rows[index]
        image = np.asarray(Image.open(self.folder / "images" / row["image"]).convert("RGB"))
        shape = (int(row["sh"]), int(row["sw"]))
        masks = {c: self._pixel_codes(row.get(column) or "", c, shape)
                 for c, column in self._columns.items() if c != "scene"}
        for c in PIXEL_CATEGORIES:
            masks.setdefault(c, np.zeros(shape, np.int64))
        scenes = [int(v) for v in (row.get("scene") or "").split(";") if v.isdigit()]
        scene = int(self._lookup["scene"][scenes[0]]) if scenes and "scene" in self._lookup else 0
        label = int(row["class"]) if row.get("class", "").lstrip("-").isdigit() else -1
        cue_mask = (masks["colour"] > 0) & (masks["shape"] == 0)
        cue = int(masks["colour"][cue_mask][0]) if cue_mask.any() else 0
        return {
            "image": torch.from_numpy(image.copy()).permute(2, 0, 1).float().div_(255),
            "label": label,
            "masks": {c: torch.from_numpy(m) for c, m in masks.items()},
            "scene": scene,
            "object_mask": torch.from_numpy(masks["shape"] == label + 1),
            "cue_mask": torch.from_numpy(cue_mask),
            "cue": cue,
        }

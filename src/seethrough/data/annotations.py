"""Class names and true labels from plain files: names.txt (one a line) and labels.csv (file,label).

Example:
    >>> import pathlib, tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     names_file, labels_file = pathlib.Path(folder, "names.txt"), pathlib.Path(folder, "labels.csv")
    ...     _ = names_file.write_text("cat\\ndog\\n\\nfish\\n")
    ...     _ = labels_file.write_text("file,label\\ncat.jpg,cat\\npets/dog.png,1\\n")
    ...     classes = read_class_names(names_file, expected=3)
    ...     labels = read_labels(labels_file, ["cat.jpg", "dog.png", "x.jpg"], classes)
    >>> classes, labels.tolist()
    (['cat', 'dog', 'fish'], [0, 1, -1])
"""
from __future__ import annotations

import csv
import difflib
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import torch

from seethrough.errors import InputError

#: header words recognised in a labels CSV
_FILE_COLUMNS = ("file", "filename", "file_name", "image", "path", "name")
_LABEL_COLUMNS = ("label", "class", "target", "class_index", "class_name")


def _read_text(path: str | Path, what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(f"{what} file {path} does not exist") from None
    except IsADirectoryError:
        raise InputError(f"{what} file {path} is a folder, not a file") from None
    except UnicodeDecodeError:
        raise InputError(f"{what} file {path} is not UTF-8 text") from None
    except OSError as error:
        raise InputError(f"cannot read {what} file {path}: {error.strerror or error}") from None


def read_class_names(path: str | Path, expected: int | None = None) -> list[str]:
    """One class name per line (surrounding spaces stripped, blank lines ignored).

    Args:
        expected: the model's number of outputs; a file with another count raises.

    Raises:
        InputError: a missing or unreadable file, or e.g. "names.txt has 998 class names, the
            model has 1000 outputs".
    """
    names = [line.strip() for line in _read_text(path, "class names").splitlines()]
    names = [name for name in names if name]
    if not names:
        raise InputError(f"{path} has no class names (one per line)")
    if expected is not None and len(names) != expected:
        raise InputError(f"{path} has {len(names)} class names, the model has {expected} outputs")
    return names


def _key(name: str) -> str:
    """A file name as written in a CSV or ImageSet.names: forward slashes, no leading './'."""
    text = name.strip().replace("\\", "/")
    while text.startswith("./"):
        text = text[2:]
    return text


def _class_index(label: str, class_names: Sequence[str] | None, where: str) -> int:
    try:
        index = int(label)
    except ValueError:
        index = None
    if index is not None:
        if index < 0 or (class_names is not None and index >= len(class_names)):
            count = f"0 to {len(class_names) - 1}" if class_names else "0 or more"
            raise InputError(f"{where}: class index {index} is out of range ({count})")
        return index
    if class_names is None:
        raise InputError(f"{where}: label {label!r} is not a class index; give the class names "
                         "to use names")
    matches = [i for i, name in enumerate(class_names) if name == label]
    if not matches:
        matches = [i for i, name in enumerate(class_names) if name.casefold() == label.casefold()]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise InputError(f"{where}: class name {label!r} is ambiguous (classes "
                         f"{', '.join(map(str, matches))}); give the class index instead")
    close = difflib.get_close_matches(label, list(dict.fromkeys(class_names)), n=5, cutoff=0.6)
    hint = f"; closest: {', '.join(repr(c) for c in close)}" if close else ""
    raise InputError(f"{where}: unknown class name {label!r}{hint}")


def _rows(path: str | Path) -> list[tuple[int, str, str]]:
    """(line number, file, label) per data row of a labels CSV."""
    lines = list(csv.reader(_read_text(path, "labels").splitlines()))
    rows = [(number, cells) for number, cells in enumerate(lines, 1)
            if any(cell.strip() for cell in cells)]
    if not rows:
        raise InputError(f"{path} has no rows; expected a CSV with columns file,label")
    file_column, label_column = 0, 1
    header = [cell.strip().lower() for cell in rows[0][1]]
    if any(word in header for word in _FILE_COLUMNS) and any(word in header for word in _LABEL_COLUMNS):
        file_column = next(i for i, word in enumerate(header) if word in _FILE_COLUMNS)
        label_column = next(i for i, word in enumerate(header) if word in _LABEL_COLUMNS)
        rows = rows[1:]
    result = []
    for number, cells in rows:
        if len(cells) <= max(file_column, label_column):
            raise InputError(f"{path} line {number}: expected 'file,label', got {','.join(cells)!r}")
        result.append((number, _key(cells[file_column]), cells[label_column].strip()))
    return result


def read_labels(path: str | Path, names: Sequence[str],
                class_names: Sequence[str] | None = None) -> torch.Tensor:
    """True classes of the images ``names`` (as in ``ImageSet.names``) from a CSV file,label.

    The label is a class index or, with ``class_names``, a class name (exact, else ignoring
    case). A row's file matches an image by its name (path relative to its folder) or, failing
    that, by the bare file name. A header row (file,label) is optional; rows of files that are
    not among ``names`` (e.g. skipped ones) are ignored.

    Returns:
        (len(names),) int64 tensor: the class index, -1 for an image without a row.

    Raises:
        InputError: an unreadable file or row, an unknown or ambiguous class name (the message
            lists close names), a bare file name that fits several images, two different labels
            for one image, or no row matching any image.
    """
    names = [_key(name) for name in names]
    by_name = {name: i for i, name in enumerate(names)}
    by_bare: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        by_bare.setdefault(PurePosixPath(name).name, []).append(i)
    labels = torch.full((len(names),), -1, dtype=torch.long)
    rows = _rows(path)
    for number, file, label in rows:
        where = f"{path} line {number}"
        index = by_name.get(file)
        if index is None:
            candidates = by_bare.get(PurePosixPath(file).name, [])
            if len(candidates) > 1:
                raise InputError(f"{where}: {file!r} fits several images "
                                 f"({', '.join(names[i] for i in candidates[:5])}); write its path "
                                 "relative to the image folder")
            if not candidates:
                continue
            index = candidates[0]
        value = _class_index(label, class_names, where)
        if int(labels[index]) not in (-1, value):
            raise InputError(f"{where}: {names[index]} has two labels, {int(labels[index])} and {value}")
        labels[index] = value
    if names and bool((labels == -1).all()):
        raise InputError(f"none of the {len(rows)} files in {path} is among the images (e.g. "
                         f"{rows[0][1]!r}; the images are named like {names[0]!r})")
    return labels

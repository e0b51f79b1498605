"""Write files atomically: a reader sees the old file or the new one, never half of one.

Example:
    >>> import tempfile, pathlib
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     with atomic_path(pathlib.Path(folder) / "out.txt") as temporary:
    ...         _ = temporary.write_text("done")
    ...     (pathlib.Path(folder) / "out.txt").read_text()
    'done'
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``, else delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(fd)
    try:
        yield Path(temporary)
        os.chmod(temporary, 0o644)  # mkstemp makes 0600; results are meant to be shared
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return Path(path)


def save_figure_atomic(figure, path: str | Path, dpi: int = 100) -> Path:
    """Save a matplotlib Figure as PNG to ``path`` atomically."""
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=dpi, bbox_inches="tight")
    return Path(path)


def ensure_writable(folder: str | Path, option: str = "--out") -> Path:
    """Create ``folder`` if needed and check that files can be written there; return it.

    Call it before any work, so that a bad output folder fails in a second, not after an hour.

    Raises:
        InputError: "cannot write to FOLDER: <reason>; choose another --out" (``option`` names
            the command-line option in the message), also when FOLDER exists as a file.
    """
    from seethrough.errors import InputError

    folder = Path(folder)
    try:
        if folder.exists() and not folder.is_dir():
            raise NotADirectoryError(f"{folder} is a file, not a folder")
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".seethrough-write-test.")
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        raise InputError(f"cannot write to {folder}: {_reason(error, folder)}; "
                         f"choose another {option}") from None
    return folder


def _reason(error: OSError, folder: Path) -> str:
    """'it is a file, not a folder', 'permission denied', ... from an OSError."""
    blocker = next((parent for parent in (folder, *folder.parents)
                    if parent.exists() and not parent.is_dir()), None)
    if blocker is not None:
        return "it is a file, not a folder" if blocker == folder else f"{blocker} is a file, not a folder"
    if not error.strerror:
        return str(error)
    reason = error.strerror[0].lower() + error.strerror[1:]
    if error.filename and Path(error.filename) in folder.parents:  # e.g. a parent is missing
        return f"{reason}: {error.filename}"
    return reason

"""Split work into chunks of at most ``batch_size`` rows, with a progress bar when it is long.

Example:
    >>> [(s.start, s.stop) for s in chunks(5, 2)]
    [(0, 2), (2, 4), (4, 5)]
"""
from __future__ import annotations

from collections.abc import Iterator

from seethrough.errors import InputError
from seethrough.progress import progress_bar


def chunks(total: int, batch_size: int, *, desc: str | None = None,
           progress: bool | None = None) -> Iterator[slice]:
    """Yield ``slice``s covering ``range(total)``; a bar (``progress``) when ``desc`` is given
    and there is more than one chunk."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, not {batch_size!r}")
    starts = range(0, total, batch_size)
    if desc is not None and len(starts) > 1:
        starts = progress_bar(starts, desc, progress=progress)
    for start in starts:
        yield slice(start, min(start + batch_size, total))

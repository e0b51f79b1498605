"""Split work into chunks of at most ``batch_size`` rows, with a progress bar when it is long.

Example:
    >>> [(s.start, s.stop) for s in chunks(5, 2)]
    [(0, 2), (2, 4), (4, 5)]
"""
from __future__ import annotations

from collections.abc import Iterator

from seethrough.errors import InputError


def chunks(total: int, batch_size: int, *, desc: str | None = None) -> Iterator[slice]:
    """Yield ``slice``s covering ``range(total)``; a tqdm bar (on a terminal) if ``desc``."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, not {batch_size!r}")
    starts = range(0, total, batch_size)
    if desc is not None and len(starts) > 1:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=desc, unit="batch", leave=False, disable=None)
    for start in starts:
        yield slice(start, min(start + batch_size, total))

"""One progress setting for every long run: ``progress=None`` (the default everywhere) shows a
bar when standard error is a terminal, ``True`` always, ``False`` never; and ``best_time``, how
long a step takes, for the times a report states.

Example:
    >>> list(progress_bar(range(3), "work", progress=False))
    [0, 1, 2]
    >>> best_time(lambda: sum(range(10)), rounds=2)[0]
    45
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TypeVar

Item = TypeVar("Item")

#: the default of every ``progress=`` option: a bar on a terminal only
AUTO = None


def progress_bar(items: Iterable[Item], desc: str, *, progress: bool | None = AUTO,
                 total: int | None = None, unit: str = "batch", leave: bool = False) -> Iterable[Item]:
    """``items`` wrapped in a tqdm bar as ``progress`` says (see the module docstring); a
    disabled bar still takes ``set_postfix`` and ``write``."""
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, total=total, unit=unit, leave=leave,
                disable=None if progress is None else not progress)


def best_time(function: Callable[[], Item], rounds: int = 1) -> tuple[Item, float]:
    """``(function(), its fastest wall time in seconds over ``rounds`` calls)``."""
    best, result = float("inf"), None
    for _ in range(rounds):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return result, best

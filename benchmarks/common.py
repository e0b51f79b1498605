"""Timing and memory helpers for the benchmarks (CPU): median wall time, peak extra RSS.

Each benchmark calls ``seethrough.allocator.keep_freed_memory()`` first, as the ``seethrough``
command does: without it glibc returns every large tensor to the OS and timings of the same call
spread by 20-40 %. It applies to every library measured in the process alike.

Peak memory is the growth of the process's peak resident set while a call runs: Linux lets a
process reset its high-water mark (``/proc/self/clear_refs``, value 5), so each call is measured
on its own without a subprocess. Elsewhere the column reads ``nan``. Memory the allocator had
already cached and reuses is not counted, so small numbers are lower bounds.

Example:
    >>> seconds = median_time(lambda: sum(range(1000)), repeats=3)
"""
from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Callable

import torch

from seethrough.allocator import keep_freed_memory


def median_time(function: Callable[[], object], *, repeats: int = 3, warmup: int = 1) -> float:
    """Median wall time in seconds over ``repeats`` calls, after ``warmup`` calls."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _status(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    raise OSError(field)


def peak_memory(function: Callable[[], object]) -> float:
    """Bytes by which the peak resident set grew during one call (``nan`` if unsupported).

    Measured with glibc's default allocator settings (freed memory goes back to the OS), then
    the benchmark's ``keep_freed_memory`` is set again for the timings.
    """
    keep_freed_memory(False)
    try:
        return _peak_memory(function)
    finally:
        keep_freed_memory(True)


def _peak_memory(function: Callable[[], object]) -> float:
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        before = _status("VmRSS:")
    except OSError:
        function()
        return float("nan")
    function()
    return float(max(0, _status("VmHWM:") - before))


def forward_backward(model: torch.nn.Module, images: torch.Tensor, targets: torch.Tensor,
                     memory_format: torch.memory_format = torch.contiguous_format):
    """The reference work: one forward and one backward to the input (parameters frozen).

    ``memory_format=torch.channels_last`` gives the same work on channels-last input, which
    seethrough's methods use (``seethrough.layout``).
    """
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    images = images.contiguous(memory_format=memory_format)

    def run():
        leaf = images.detach().requires_grad_()
        model(leaf).gather(1, targets[:, None]).sum().backward()

    return run


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    """Rows of dicts as a markdown table (floats with 2 decimals, missing cells as '-')."""
    def cell(value):
        if value is None:
            return "-"
        if isinstance(value, float):
            return "-" if math.isnan(value) else f"{value:.2f}"
        return str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)

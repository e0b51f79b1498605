"""Timing and memory helpers for the benchmarks (CPU, and CUDA where asked): best of interleaved
rounds, peak extra RSS (peak CUDA allocation on a GPU).

Times are the best (minimum) of several interleaved rounds (``interleaved_best``): each round
calls every variant of a cell once in turn (the model's own forward (+backward) on plain and on
channels-last input, seethrough, each peer), so a ratio compares timings taken at the same
moments and a slow spell of the shared machine hits all of them alike.

Each benchmark calls ``seethrough.allocator.keep_freed_memory()`` first, as the ``seethrough``
command does: without it glibc returns every large tensor to the OS and timings of the same call
spread by 20-40 %. It applies to every library measured in the process alike.

Peak memory is the growth of the process's peak resident set while a call runs: Linux lets a
process reset its high-water mark (``/proc/self/clear_refs``, value 5), so each call is measured
on its own without a subprocess. Elsewhere the column reads ``nan``. Memory the allocator had
already cached and reuses is not counted, so small numbers are lower bounds.

Example:
    >>> best = interleaved_best({"a": lambda: sum(range(1000)), "b": lambda: sorted(range(1000))},
    ...                         rounds=3)
    >>> sorted(best)
    ['a', 'b']
"""
from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable

import torch

from seethrough.allocator import keep_freed_memory


def interleaved_best(functions: dict[str, Callable[[], object]], rounds: int = 7, *,
                     warmup: int = 0, failures: dict[str, BaseException] | None = None,
                     ) -> dict[str, float]:
    """Best (minimum) wall time in seconds of each function over ``rounds`` rounds, each of which
    calls every function once in turn, after ``warmup`` untimed rounds of the same.

    Interleaving makes a slow spell of the machine hit every variant alike, so the ratios of the
    results compare timings taken at the same moments. Each round starts one function further
    along the list, so none of them always runs first (after whatever ran before the rounds).
    With ``failures`` (a dict), a function that raises is dropped from the later rounds, its
    exception is stored there under its key and the key is absent from the result; without it
    the exception propagates.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, not {rounds}")
    live = dict(functions)
    best = dict.fromkeys(live, math.inf)
    for index in range(warmup + rounds):
        order = list(live.items())
        shift = index % len(order) if order else 0
        for key, function in order[shift:] + order[:shift]:
            start = time.perf_counter()
            try:
                function()
            except Exception as error:  # a failure is a result when asked for
                if failures is None:
                    raise
                failures[key] = error
                del live[key], best[key]
                continue
            if index >= warmup:
                best[key] = min(best[key], time.perf_counter() - start)
    return best


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


def peak_memory_in_fresh_process(setup: str, call: str) -> float:
    """Growth of peak RSS (MiB) while ``call`` (an expression) runs in a new Python process,
    after ``setup`` (statements; 2 torch threads), so nothing measured before counts; NaN if
    the process fails.

    Example:
        >>> peak_memory_in_fresh_process("import torch", "torch.zeros(1)") >= 0
        True
    """
    import subprocess
    import sys
    from pathlib import Path

    code = (f"import sys, torch\nsys.path.insert(0, {str(Path(__file__).parent)!r})\n"
            f"from common import peak_memory\ntorch.set_num_threads(2)\n{setup}\n"
            f"print(peak_memory(lambda: {call}) / 2**20)\n")
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True,
                         text=True)
    return float("nan") if out.returncode else float(out.stdout.strip().splitlines()[-1])


def synchronized(function: Callable[[], object], device: torch.device) -> Callable[[], object]:
    """``function`` followed by waiting for ``device`` to finish its queued work (on CUDA
    kernels run asynchronously: a wall time without the wait measures only their launch)."""
    if device.type != "cuda":
        return function

    def run():
        result = function()
        torch.cuda.synchronize(device)
        return result

    return run


def peak_device_memory(function: Callable[[], object], device: torch.device) -> float:
    """Bytes by which the CUDA allocator's peak grew during one call (``peak_memory`` on CPU)."""
    if device.type != "cuda":
        return peak_memory(function)
    gc.collect()
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    function()
    torch.cuda.synchronize(device)
    return float(max(0, torch.cuda.max_memory_allocated(device) - before))


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

"""Fused CPU loops (numba) for the per-activation steps of a dissection.

Torch runs each elementwise step as its own pass over memory: binning activations for the
quantile sketch takes about seven, counting masks about ten (the per-unit minimum and maximum
stay with torch: its reductions are already one pass, and the grid must be known before
binning). For a small model such as ConceptNet those passes cost as much as its forward pass.
These kernels do each step in one parallel pass with the same arithmetic: the bins are the same
integers, and each pixel is interpolated in float64 from the same 2 x 2 activations and weights
as in the torch code (tests require the two paths to give identical counts).

Both loops read activations with the units innermost, the channels-last layout in which
``dissect`` runs the model: the mask filter compares all units of a cell in one vectorized
pass, and binning walks adjacent units, so consecutive increments never hit the same counter.
Other layouts are copied once. ``label_counts`` counts the concepts of label maps.

They run for CPU tensors when numba is installed (a core dependency); ``ENABLED = False`` or the
environment variable ``SEETHROUGH_KERNELS=0`` turns them off. Compiled code is cached on disk:
the first run on a machine pays a few seconds of JIT, later processes load the kernels in under
a second.

Example:
    >>> import torch
    >>> x = torch.tensor([[[0.0, 1.5, 2.5, 9.0]]])        # 1 image, 1 unit, 4 values
    >>> counts, zeros = torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, dtype=torch.long)
    >>> bin_counts(x, torch.tensor([1.0]), torch.tensor([0]), counts, zeros)  # bins of width 1
    >>> counts.tolist(), zeros.tolist()                     # 9.0 is clamped into the last bin
    ([[1, 1, 1, 1]], [1])
"""
from __future__ import annotations

import math
import os

import numpy as np
import torch

from seethrough.errors import InputError

ENABLED = os.environ.get("SEETHROUGH_KERNELS", "1") != "0"


def enabled_for(tensor: torch.Tensor) -> bool:
    """True when the fused kernels can take this tensor (CPU, numba importable, enabled)."""
    if not ENABLED or tensor.device.type != "cpu":
        return False
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def _compiled():
    """The numba kernels, compiled (or loaded from the disk cache) on first use."""
    global _KERNELS
    if _KERNELS is None:
        _KERNELS = _build()
    return _KERNELS


_KERNELS = None
_UNITS_PER_TASK = 8  # units binned by one task (a compile-time constant)


def _build():
    from numba import njit, prange

    # (no helper functions: a kernel that calls one defined here is never found in the cache)
    @njit(parallel=True, cache=True)
    def bin_counts(x, inverse_width, offset, counts, zeros):  # x (n, P, K); adds into counts
        n, positions, units = x.shape
        top = np.float64(counts.shape[1] - 1)
        for task in prange((units + _UNITS_PER_TASK - 1) // _UNITS_PER_TASK):
            first = task * _UNITS_PER_TASK
            width = min(units, first + _UNITS_PER_TASK) - first
            scale = np.zeros(_UNITS_PER_TASK, np.float64)
            start = np.zeros(_UNITS_PER_TASK, np.float64)
            exact_zeros = np.zeros(_UNITS_PER_TASK, np.int64)
            for k in range(width):
                scale[k], start[k] = inverse_width[first + k], offset[first + k]
            # adjacent units: consecutive increments never hit the same counter. With a
            # constant trip count the unit loop is unrolled and its state stays in registers
            # (twice as fast), so the last, partial group of units gets its own loop
            if width == _UNITS_PER_TASK:
                for i in range(n):
                    for p in range(positions):
                        for k in range(_UNITS_PER_TASK):
                            v = x[i, p, first + k]
                            j = min(max(np.floor(v * scale[k]) - start[k], 0.0), top)  # inf: top
                            counts[first + k, int(j)] += 1
                            exact_zeros[k] += v == 0
            else:
                for i in range(n):
                    for p in range(positions):
                        for k in range(width):
                            v = x[i, p, first + k]
                            j = min(max(np.floor(v * scale[k]) - start[k], 0.0), top)  # inf: top
                            counts[first + k, int(j)] += 1
                            exact_zeros[k] += v == 0
            for k in range(width):
                zeros[first + k] += exact_zeros[k]

    @njit(parallel=True, cache=True)
    def mask_counts(acts, thresholds, row_source, row_pixels, row_weights, col_source,
                    col_pixels, col_weights, labels, width, per_image, area, bad):
        n, h, w, units = acts.shape  # channels last: the units of one position are adjacent
        concepts = per_image.shape[2]
        # the largest float32 not above each threshold: for a float32 m, m > below[k] exactly
        # when m > thresholds[k], and the filter below runs in float32
        below = np.empty(units, np.float32)
        for k in range(units):
            below[k] = np.float32(thresholds[k])
            if np.float64(below[k]) > thresholds[k]:
                below[k] = np.nextafter(below[k], np.float32(-np.inf))
        for i in prange(n):
            hit = np.empty(units, np.bool_)
            for br in range(row_source.shape[0]):
                r0 = row_source[br]
                r1 = min(r0 + 1, h - 1)
                for bc in range(col_source.shape[0]):
                    c0 = col_source[bc]
                    c1 = min(c0 + 1, w - 1)
                    any_hit = False
                    for k in range(units):  # the filter: one vectorized pass over the units
                        largest = max(max(acts[i, r0, c0, k], acts[i, r0, c1, k]),
                                      max(acts[i, r1, c0, k], acts[i, r1, c1, k]))
                        hit[k] = largest > below[k]
                        any_hit |= hit[k]
                    if not any_hit:
                        continue
                    for k in range(units):
                        if not hit[k]:
                            continue
                        threshold = thresholds[k]
                        a00, a01 = np.float64(acts[i, r0, c0, k]), np.float64(acts[i, r0, c1, k])
                        a10, a11 = np.float64(acts[i, r1, c0, k]), np.float64(acts[i, r1, c1, k])
                        for a in range(row_pixels.shape[1]):
                            wr0, wr1 = row_weights[br, a, 0], row_weights[br, a, 1]
                            if math.isnan(wr0):  # NaN: padding, the band has no more pixels
                                break
                            t0 = wr0 * a00 + wr1 * a10
                            t1 = wr0 * a01 + wr1 * a11
                            base = row_pixels[br, a] * width
                            for b in range(col_pixels.shape[1]):
                                wc0, wc1 = col_weights[bc, b, 0], col_weights[bc, b, 1]
                                if math.isnan(wc0):
                                    break
                                if t0 * wc0 + t1 * wc1 > threshold:
                                    area[i, k] += 1
                                    pixel = base + col_pixels[bc, b]
                                    for layer in range(labels.shape[1]):
                                        label = labels[i, layer, pixel]
                                        if 0 <= label < concepts:
                                            per_image[i, k, label] += 1
                                        else:
                                            bad[i] = True

    @njit(cache=True)
    def regrid(counts, exponent, offset, new_exponent, new_offset):  # in place; False: lost counts
        units, bins = counts.shape
        moved = np.empty(bins, np.int64)
        kept = True
        for k in range(units):
            if new_exponent[k] == exponent[k] and new_offset[k] == offset[k]:
                continue
            shift = min(max(new_exponent[k] - exponent[k], 0), 62)
            moved[:] = 0
            for j in range(bins):
                if counts[k, j] == 0:
                    continue
                target = ((offset[k] + j) >> shift) - new_offset[k]  # arithmetic shift = floor
                if target < 0 or target >= bins:
                    kept = False
                moved[min(max(target, 0), bins - 1)] += counts[k, j]
            counts[k, :] = moved
        return kept

    @njit(parallel=True, cache=True)
    def label_counts(labels, counts, bad):  # labels (N, P) integers; adds into counts (N, C)
        for i in prange(labels.shape[0]):
            for p in range(labels.shape[1]):
                label = labels[i, p]
                if 0 <= label < counts.shape[1]:
                    counts[i, label] += 1
                else:
                    bad[i] = True

    return {"bin_counts": bin_counts, "mask_counts": mask_counts, "label_counts": label_counts,
            "regrid": regrid}


def bin_counts(x: torch.Tensor, inverse_width: torch.Tensor, offset: torch.Tensor,
               counts: torch.Tensor, zeros: torch.Tensor) -> None:
    """Add to ``counts`` (K, bins) the bin ``floor(x * inverse_width) - offset`` (clamped) of
    every value of ``x`` (n, K, P), and to ``zeros`` (K,) the exact zeros; in place."""
    units_last = x.transpose(1, 2).contiguous()  # a view for channels-last activations
    _compiled()["bin_counts"](units_last.numpy(), inverse_width.double().numpy(), offset.numpy(),
                              counts.numpy(), zeros.numpy())


def mask_counts(acts: torch.Tensor, thresholds: torch.Tensor, rows, cols, labels: torch.Tensor,
                width: int, concepts: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``dissect.mask_counts.mask_counts`` in one pass: (N, K, concepts) and (N, K) int64
    (column 0, "none", is not cleared here)."""
    n, units = acts.shape[:2]
    per_image = np.zeros((n, units, concepts), dtype=np.int64)
    area = np.zeros((n, units), dtype=np.int64)
    bad = np.zeros(n, dtype=np.bool_)
    _compiled()["mask_counts"](
        acts.permute(0, 2, 3, 1).contiguous().numpy(), thresholds.double().numpy(), rows.source.numpy(),
        rows.pixels.numpy(), rows.weights.numpy(), cols.source.numpy(), cols.pixels.numpy(),
        cols.weights.numpy(), labels.numpy(), width, per_image, area, bad)
    _check_labels(bad, concepts)
    return torch.from_numpy(per_image), torch.from_numpy(area)


def label_error(concepts: int) -> InputError:
    """The error for label maps with values that are not concept indices."""
    return InputError(f"label maps hold values outside 0..{concepts - 1}: labels must be global "
                      "concept indices of the vocabulary (see dissect.labels.collate)")


def _check_labels(bad: np.ndarray, concepts: int) -> None:
    if bad.any():  # the loops skip such labels instead of writing out of bounds
        raise label_error(concepts)


def regrid(counts: torch.Tensor, exponent: torch.Tensor, offset: torch.Tensor,
           new_exponent: torch.Tensor, new_offset: torch.Tensor) -> bool:
    """Move each unit's histogram ``counts`` (K, bins) from the grid (exponent, offset) to the
    coarser or shifted grid (new_exponent, new_offset), in place; False if counts fell outside."""
    return _compiled()["regrid"](counts.numpy(), exponent.numpy(), offset.numpy(),
                                 new_exponent.numpy(), new_offset.numpy())


def label_counts(labels: torch.Tensor, concepts: int) -> torch.Tensor:
    """(N, concepts) int64: how many entries of each image's ``labels`` (N, ...) hold each value."""
    counts = np.zeros((labels.shape[0], concepts), dtype=np.int64)
    bad = np.zeros(labels.shape[0], dtype=np.bool_)
    _compiled()["label_counts"](labels.reshape(labels.shape[0], -1).numpy(), counts, bad)
    _check_labels(bad, concepts)
    return torch.from_numpy(counts)

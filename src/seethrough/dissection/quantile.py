"""A streaming, exactly mergeable per-unit quantile sketch: fixed-bin histograms on a dyadic grid.

Each unit keeps ``bins`` counts on the lattice of width ``w = 2**e``: bin ``j`` holds the values
in ``[(offset + j) * w, (offset + j + 1) * w)``. When new values fall outside the covered range
the width doubles (pairs of bins merge exactly) until the whole range seen fits. The width is
always the smallest power of two for which ``floor(max / w) - floor(min / w) < bins``, so it
depends only on the data seen, never on its order or on how it was split into shards: sketches
of shards merge into exactly the sketch of one run.

Error bound: a quantile read from the sketch is within one bin width ``w`` of the exact
empirical quantile (``error_bound()``), and ``w <= 2 * (max - min) / (bins - 1)``. Memory is
``units x bins`` counts whatever the number of values.

Example:
    >>> import torch
    >>> values = torch.randn(10_000, 2, generator=torch.Generator().manual_seed(0))
    >>> sketch = QuantileSketch(units=2)
    >>> sketch.update(values)
    >>> exact = torch.quantile(values.double(), 0.995, dim=0)
    >>> bool(((sketch.upper_quantile(0.005) - exact).abs() <= sketch.error_bound()).all())
    True
"""
from __future__ import annotations

import torch

from seethrough.dissection import kernels
from seethrough.errors import InputError

_MIN_EXPONENT = -40  # finest bin width 2**-40: below float32 resolution for values near 1


class QuantileSketch:
    """Per-unit streaming quantiles with a bounded error; ``update``, ``merge``, ``state_dict``.

    Args:
        units: number of independent units (columns of the values passed to ``update``).
        bins: histogram bins per unit (memory ``units * bins`` int64; error <= 2 span / bins).
    """

    def __init__(self, units: int, bins: int = 4096, *, device: torch.device | str = "cpu"):
        if bins < 16:
            raise InputError(f"a quantile sketch needs at least 16 bins, not {bins}")
        self.units, self.bins = int(units), int(bins)
        self.counts = torch.zeros(units, bins, dtype=torch.int64, device=device)
        self.exponent = torch.full((units,), _MIN_EXPONENT, dtype=torch.int64, device=device)
        self.offset = torch.zeros(units, dtype=torch.int64, device=device)
        self.minimum = torch.full((units,), float("inf"), dtype=torch.float64, device=device)
        self.maximum = torch.full((units,), float("-inf"), dtype=torch.float64, device=device)
        self.zeros = torch.zeros(units, dtype=torch.int64, device=device)  # exact 0s (ReLU)
        self.total = 0

    # -- grid -----------------------------------------------------------------------------------
    def _fitting_exponent(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        """Smallest e >= current exponent with floor(high/2^e) - floor(low/2^e) < bins."""
        span = (high - low).clamp_min(0)
        guess = torch.ceil(torch.log2(span / (self.bins - 2) + 1e-300)).to(torch.int64)
        exponent = torch.maximum(torch.maximum(guess, self.exponent), torch.tensor(_MIN_EXPONENT))
        while True:
            width = torch.pow(2.0, exponent.double())
            too_wide = torch.floor(high / width) - torch.floor(low / width) >= self.bins
            if not bool(too_wide.any()):
                return exponent
            exponent = exponent + too_wide.long()

    def _regrid(self, exponent: torch.Tensor, low: torch.Tensor) -> None:
        """Move the counts to the (coarser or equal) grid ``exponent`` starting at ``low``; only
        the units whose grid changes are touched."""
        width = torch.pow(2.0, exponent.double())
        offset = torch.floor(low / width).to(torch.int64)
        if self.total == 0:  # nothing counted yet: nothing to move
            self.exponent, self.offset = exponent, offset
            return
        if kernels.enabled_for(self.counts):
            if not kernels.regrid(self.counts, self.exponent, self.offset, exponent, offset):
                raise AssertionError("quantile sketch regrid lost counts (bug)")
            self.exponent, self.offset = exponent, offset
            return
        changed = ((exponent != self.exponent) | (offset != self.offset)).nonzero().flatten()
        if len(changed) == 0:
            return
        shift = (exponent[changed] - self.exponent[changed]).clamp(0, 62)
        positions = self.offset[changed, None] + torch.arange(self.bins, device=self.counts.device)
        target = (positions >> shift[:, None]) - offset[changed, None]  # arithmetic shift = floor
        old = self.counts[changed]
        if bool(((target < 0) | (target >= self.bins))[old > 0].any()):
            raise AssertionError("quantile sketch regrid lost counts (bug)")
        counts = torch.zeros_like(old)
        counts.scatter_add_(1, target.clamp(0, self.bins - 1), old)
        self.counts[changed] = counts
        self.exponent, self.offset = exponent, offset

    # -- statistics -----------------------------------------------------------------------------
    def update(self, values: torch.Tensor) -> None:
        """Add values of shape ``(n, units)`` or ``(n, units, ...)`` such as activation maps
        (unit axis 1; any n; NaNs are an error).

        Bin indices are computed in the values' own float precision: dividing by a power of
        two and flooring is exact in floating point, so no float64 copy is needed.
        """
        if values.ndim < 2 or values.shape[1] != self.units:
            raise InputError(f"QuantileSketch.update expects (n, {self.units}) or "
                             f"(n, {self.units}, ...) values, got {tuple(values.shape)}")
        if values.numel() == 0:
            return
        x = values.detach().to(self.counts.device)
        if not x.is_floating_point():
            x = x.double()
        fused = kernels.enabled_for(x)
        # the torch path wants each unit's values adjacent in memory (far faster counting than
        # interleaved); the fused loop wants the units innermost (channels-last: no copy)
        x = x.reshape(x.shape[0], self.units, -1) if fused else x.contiguous().view(
            x.shape[0], self.units, -1)
        low, high = x.amin((0, 2)), x.amax((0, 2))
        if bool(torch.isnan(low).any() | torch.isnan(high).any()):
            raise InputError("activations contain NaN: check the model and its inputs")
        self.minimum = torch.minimum(self.minimum, low.double())
        self.maximum = torch.maximum(self.maximum, high.double())
        self._regrid(self._fitting_exponent(self.minimum, self.maximum), self.minimum)
        self.total += x.shape[0] * x.shape[2]
        if fused:  # one pass instead of the seven below
            kernels.bin_counts(x, torch.pow(2.0, -self.exponent.double()), self.offset,
                               self.counts, self.zeros)
            return
        self.zeros += (x == 0).sum((0, 2))

        def per_unit(values: torch.Tensor) -> torch.Tensor:
            return values.to(x.dtype)[None, :, None]

        index = torch.floor_(x * per_unit(torch.pow(2.0, -self.exponent.double())))
        index -= per_unit(self.offset)
        index.clamp_(0, self.bins - 1)
        rows = torch.arange(self.units, device=x.device) * self.bins
        if self.units * self.bins < 2**24:  # integers stay exact in float32
            index = (index + per_unit(rows)).to(torch.int32)
        else:
            index = index.to(torch.int64) + rows[None, :, None]
        self.counts += torch.bincount(index.flatten(), minlength=self.units * self.bins).view(
            self.units, self.bins)

    def merge(self, other: QuantileSketch) -> QuantileSketch:
        """Add another sketch's counts into this one (in place); returns ``self``."""
        if (other.units, other.bins) != (self.units, self.bins):
            raise InputError("can only merge quantile sketches with the same units and bins")
        if other.total == 0:
            return self
        if self.total == 0:
            self.load_state_dict(other.state_dict())
            return self
        low = torch.minimum(self.minimum, other.minimum)
        high = torch.maximum(self.maximum, other.maximum)
        exponent = torch.maximum(self._fitting_exponent(low, high), other.exponent)
        self._regrid(exponent, low)
        moved = QuantileSketch(self.units, self.bins, device=self.counts.device)
        moved.load_state_dict(other.state_dict())
        moved._regrid(exponent, low)
        self.counts += moved.counts
        self.minimum, self.maximum, self.total = low, high, self.total + other.total
        self.zeros += other.zeros
        return self

    def quantile(self, q: float) -> torch.Tensor:
        """Per-unit value ``t`` with a fraction ``q`` of the values below it (float64, (units,))."""
        return self.upper_quantile(1.0 - q)

    def upper_quantile(self, q: float) -> torch.Tensor:
        """Per-unit ``T`` with a fraction ``q`` of the values above it: P(a > T) = q.

        Within a bin the values are taken as uniformly spread (linear interpolation), except
        exact zeros, a point mass after a ReLU: the answer is within ``error_bound()`` of the
        exact empirical quantile, and exactly 0 when at most ``q`` of the values are above 0.
        """
        if not 0.0 <= q <= 1.0:
            raise InputError(f"a quantile is in [0, 1], not {q}")
        if self.total == 0:
            raise InputError("the quantile sketch saw no values: is the dataset empty?")
        rank = q * self.total
        above = self.counts.flip(1).cumsum(1).flip(1).double()  # count in bins j.. top
        above_next = torch.cat([above[:, 1:], torch.zeros_like(above[:, :1])], 1)
        # the bin where the count from the top first reaches the rank
        j = ((above >= rank).sum(1) - 1).clamp_min(0)  # above is non-increasing in j
        rows = torch.arange(self.units, device=j.device)
        width = torch.pow(2.0, self.exponent.double())
        holds_zero = (self.offset + j) == 0  # bins are aligned: 0 is always a lower edge
        in_bin = self.counts[rows, j].double() - torch.where(holds_zero, self.zeros.double(), 0.0)
        needed = (rank - above_next[rows, j]).clamp(0)
        top_edge = (self.offset + j + 1).double() * width
        value = top_edge - width * needed / in_bin.clamp_min(1)
        value = torch.where(holds_zero & (needed >= in_bin), torch.zeros_like(value), value)
        return torch.minimum(torch.maximum(value, self.minimum), self.maximum)

    def error_bound(self) -> torch.Tensor:
        """Per-unit bound on the error of any quantile: the bin width."""
        return torch.pow(2.0, self.exponent.double())

    def state_dict(self) -> dict:
        """The sketch; counts as int32 when they fit (half the bytes a shard sends back)."""
        counts = self.counts.clone()
        if self.total < 2**31:
            counts = counts.to(torch.int32)
        return {"counts": counts, "exponent": self.exponent.clone(),
                "offset": self.offset.clone(), "minimum": self.minimum.clone(),
                "maximum": self.maximum.clone(), "zeros": self.zeros.clone(), "total": self.total,
                "bins": self.bins}

    def load_state_dict(self, state: dict) -> None:
        if state["counts"].shape != (self.units, self.bins):
            raise InputError("quantile sketch state has the wrong number of units or bins")
        device = self.counts.device
        self.counts = state["counts"].to(device=device, dtype=torch.int64, copy=True)
        self.exponent = state["exponent"].clone().to(device)
        self.offset = state["offset"].clone().to(device)
        self.minimum = state["minimum"].clone().to(device)
        self.maximum = state["maximum"].clone().to(device)
        self.zeros = state["zeros"].clone().to(device)
        self.total = int(state["total"])

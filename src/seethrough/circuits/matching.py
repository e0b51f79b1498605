"""Unit matching by activation correlation (Li et al. 2015, "Convergent learning"): which unit
of one network behaves like which unit of another.

Units are channels. Following Li et al., a unit's activation is sampled at every position of
every image (``spatial="positions"``: both layers need the same height and width), so two
units correlate when they fire at the same places of the same images; ``spatial="mean"``
correlates the per-image averages instead (layers of any size). The correlation of every unit
pair is streamed exactly through ``tally`` from float64 sums (``UnitCorrelation``); a unit that
never varies (a dead ReLU) correlates 0 with everything.

Two matchings of the ``(K_a, K_b)`` correlation matrix: ``one_to_one`` (the Hungarian algorithm,
``scipy.optimize.linear_sum_assignment``, maximising the summed correlation, each unit of B
used at most once) and ``semi_matching`` (each unit of A its best unit of B, repeats allowed).
``Matching.share_above(r)`` is the share of A's units whose partner correlates above ``r``;
``Matching.shared_labels`` the share of matched pairs whose dissection labels agree.

Example:
    >>> import torch
    >>> acts = torch.randn(40, 6, 3, 3)
    >>> order = torch.randperm(6)
    >>> match = one_to_one(correlation(acts, acts[:, order]))
    >>> bool((order[match.partner] == torch.arange(6)).all()), match.share_above(0.99)
    (True, 1.0)
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from seethrough.errors import InputError
from seethrough.tallying import Batch, tally

__all__ = ["SPATIAL", "Matching", "UnitCorrelation", "correlation", "dissection_labels",
           "match_units", "one_to_one", "semi_matching", "unit_correlation"]

#: how positions are treated (see the module docstring)
SPATIAL = ("positions", "mean")


def unit_rows(acts: torch.Tensor, spatial: str = "positions") -> torch.Tensor:
    """``(samples, K)`` float64 values of ``(N, K)`` or ``(N, K, H, W)`` activations: one row per
    image and position (``"positions"``) or per image (``"mean"``)."""
    if spatial not in SPATIAL:
        raise InputError(f"spatial must be one of {', '.join(SPATIAL)}, not {spatial!r}")
    if not isinstance(acts, torch.Tensor) or acts.ndim not in (2, 4):
        shape = tuple(acts.shape) if isinstance(acts, torch.Tensor) else type(acts).__name__
        raise InputError(f"activations must be a tensor (N, K) or (N, K, H, W), not {shape}")
    acts = acts.detach().double()
    if acts.ndim == 2:
        return acts
    if spatial == "mean":
        return acts.mean((2, 3))
    return acts.permute(0, 2, 3, 1).reshape(-1, acts.shape[1])


class UnitCorrelation:
    """A ``tally`` statistic: the Pearson correlation of every unit of ``layer_a`` with every unit
    of ``layer_b`` (float64 sums, exact under merge, memory ``K_a * K_b``).

    Example:
        >>> acts = torch.randn(10, 3, 4, 4)
        >>> stat = UnitCorrelation("a", "b")
        >>> stat.update(Batch(0, torch.arange(10), {"a": acts, "b": -acts}))
        >>> [round(v, 6) for v in stat.correlation().diagonal().tolist()]
        [-1.0, -1.0, -1.0]
    """

    def __init__(self, layer_a: str, layer_b: str, spatial: str = "positions"):
        if spatial not in SPATIAL:
            raise InputError(f"spatial must be one of {', '.join(SPATIAL)}, not {spatial!r}")
        self.layer_a, self.layer_b, self.spatial = layer_a, layer_b, spatial
        self.count = 0
        self.sums: dict[str, torch.Tensor] = {}

    def add(self, a: torch.Tensor, b: torch.Tensor) -> None:
        """Add ``(samples, K_a)`` and ``(samples, K_b)`` float64 rows of the same samples."""
        if len(a) != len(b):
            raise InputError(f"the two layers give {len(a)} and {len(b)} samples: with "
                             "spatial='positions' they need the same height and width; use "
                             "spatial='mean'")
        parts = {"a": a.sum(0), "b": b.sum(0), "aa": (a * a).sum(0), "bb": (b * b).sum(0),
                 "ab": a.T @ b}
        self.count += len(a)
        self.sums = {k: self.sums[k] + v for k, v in parts.items()} if self.sums else parts

    def update(self, batch: Batch) -> None:
        self.add(unit_rows(batch.acts[self.layer_a], self.spatial).cpu(),
                 unit_rows(batch.acts[self.layer_b], self.spatial).cpu())

    def merge(self, other: UnitCorrelation) -> UnitCorrelation:
        if other.sums:
            self.sums = {k: self.sums[k] + v for k, v in other.sums.items()} if self.sums \
                else dict(other.sums)
            self.count += other.count
        return self

    def state_dict(self) -> dict:
        return {"count": self.count, **self.sums}

    def load_state_dict(self, state: dict) -> None:
        self.count = state["count"]
        self.sums = {k: v for k, v in state.items() if k != "count"}

    def correlation(self) -> torch.Tensor:
        """The ``(K_a, K_b)`` float64 correlation matrix (0 for a unit that never varies)."""
        if self.count < 2:
            raise InputError(f"correlation needs at least 2 samples, not {self.count}")
        n, s = self.count, self.sums
        ma, mb = s["a"] / n, s["b"] / n
        covariance = s["ab"] / n - torch.outer(ma, mb)
        sa = (s["aa"] / n - ma * ma).clamp_min(0).sqrt()
        sb = (s["bb"] / n - mb * mb).clamp_min(0).sqrt()
        # a unit whose spread is at rounding level of its mean never varies: no correlation
        dead = (sa <= 1e-6 * ma.abs())[:, None] | (sb <= 1e-6 * mb.abs())[None, :]
        scale = torch.outer(sa, sb).where(~dead, torch.ones_like(covariance))
        return torch.where(dead, torch.zeros_like(covariance),
                           covariance / scale).clamp(-1, 1)


def correlation(acts_a: torch.Tensor, acts_b: torch.Tensor,
                spatial: str = "positions") -> torch.Tensor:
    """The ``(K_a, K_b)`` correlation of the units of two in-memory activations of the same
    images (``(N, K)`` or ``(N, K, H, W)``)."""
    stat = UnitCorrelation("a", "b", spatial)
    stat.add(unit_rows(acts_a, spatial), unit_rows(acts_b, spatial))
    return stat.correlation()


@dataclass
class Matching:
    """Partners of the units of layer A among those of layer B.

    Attributes:
        correlation: the ``(K_a, K_b)`` correlation matrix matched.
        partner: ``(K_a,)`` the unit of B matched to each unit of A; -1 where none is (in a
            one-to-one matching, when A has more units than B).
        method: ``"one_to_one"`` or ``"semi"``.
    """

    correlation: torch.Tensor
    partner: torch.Tensor
    method: str

    @property
    def scores(self) -> torch.Tensor:
        """``(K_a,)`` each unit's correlation with its partner (NaN where it has none)."""
        found = self.partner >= 0
        scores = torch.full((len(self.partner),), float("nan"), dtype=self.correlation.dtype)
        rows = torch.arange(len(self.partner))[found]
        scores[found] = self.correlation[rows, self.partner[found]]
        return scores

    def share_above(self, r: float) -> float:
        """The share of A's units whose partner correlates above ``r``."""
        return float((self.scores > r).double().mean())

    def shared_labels(self, labels_a: Sequence[str | None],
                      labels_b: Sequence[str | None]) -> float:
        """The share of matched pairs, both units labelled, whose labels agree (NaN if no pair
        has two labels). Labels: one per unit, ``None`` for an unlabelled unit (e.g. from
        ``dissection_labels``)."""
        if len(labels_a) != len(self.partner) or len(labels_b) != self.correlation.shape[1]:
            raise InputError(f"need one label per unit: {len(self.partner)} for A and "
                             f"{self.correlation.shape[1]} for B, got {len(labels_a)} and "
                             f"{len(labels_b)}")
        pairs = [(labels_a[i], labels_b[j]) for i, j in enumerate(self.partner.tolist()) if j >= 0]
        labelled = [(a, b) for a, b in pairs if a is not None and b is not None]
        if not labelled:
            return float("nan")
        return sum(a == b for a, b in labelled) / len(labelled)


def _check_matrix(correlation: torch.Tensor) -> torch.Tensor:
    if not isinstance(correlation, torch.Tensor) or correlation.ndim != 2 or 0 in correlation.shape:
        shape = tuple(correlation.shape) if isinstance(correlation, torch.Tensor) else \
            type(correlation).__name__
        raise InputError(f"correlation must be a non-empty (K_a, K_b) matrix, not {shape}")
    if not bool(torch.isfinite(correlation).all()):
        raise InputError("the correlation matrix holds NaN or infinite values")
    return correlation.detach().double().cpu()


def one_to_one(correlation: torch.Tensor) -> Matching:
    """Each unit of A a distinct unit of B, maximising the summed correlation (Hungarian
    algorithm, ``scipy.optimize.linear_sum_assignment``)."""
    from scipy.optimize import linear_sum_assignment

    correlation = _check_matrix(correlation)
    rows, columns = linear_sum_assignment(correlation.numpy(), maximize=True)
    partner = torch.full((correlation.shape[0],), -1, dtype=torch.long)
    partner[torch.as_tensor(rows)] = torch.as_tensor(columns, dtype=torch.long)
    return Matching(correlation, partner, "one_to_one")


def semi_matching(correlation: torch.Tensor) -> Matching:
    """Each unit of A its most correlated unit of B (units of B may repeat)."""
    correlation = _check_matrix(correlation)
    return Matching(correlation, correlation.argmax(1), "semi")


def unit_correlation(model_a: nn.Module, layer_a: str, dataset, model_b: nn.Module | None = None,
                     layer_b: str | None = None, *, spatial: str = "positions",
                     batch_size: int = 64, progress: bool | None = None,
                     **tally_options) -> torch.Tensor:
    """The ``(K_a, K_b)`` correlation of the units of ``layer_a`` of ``model_a`` with those of
    ``layer_b`` (default: the same name) of ``model_b`` (default: ``model_a``) over
    ``dataset``, in one ``tally`` pass; the models are left as they were.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
        >>> c = unit_correlation(net, "0", torch.rand(8, 3, 6, 6), progress=False)
        >>> [round(v, 6) for v in c.diagonal().tolist()]
        [1.0, 1.0, 1.0, 1.0]
    """
    from seethrough.circuits.cka import ModelPair

    layer_b = layer_a if layer_b is None else layer_b
    if model_b is None or model_b is model_a:
        model, key_a, key_b = model_a, layer_a, layer_b
    else:
        model, key_a, key_b = ModelPair(model_a, model_b), f"a.{layer_a}", f"b.{layer_b}"
    stat = UnitCorrelation(key_a, key_b, spatial)
    tally(model, list(dict.fromkeys([key_a, key_b])), dataset, {"correlation": stat},
          batch_size=batch_size, progress=progress, desc="unit correlation",
          settings={"spatial": spatial}, **tally_options)
    return stat.correlation()


def match_units(model_a: nn.Module, model_b: nn.Module, layer: str, dataset, *,
                layer_b: str | None = None, method: str = "one_to_one",
                spatial: str = "positions", **options) -> Matching:
    """Match the units of ``layer`` of ``model_a`` to those of ``layer_b`` (default: the same
    name) of ``model_b`` by correlation over ``dataset`` (``method``: ``"one_to_one"`` or
    ``"semi"``; ``options`` as for ``unit_correlation``)."""
    methods = {"one_to_one": one_to_one, "semi": semi_matching}
    if method not in methods:
        raise InputError(f"method must be one of {', '.join(methods)}, not {method!r}")
    found = unit_correlation(model_a, layer, dataset, model_b, layer_b, spatial=spatial, **options)
    return methods[method](found)


def dissection_labels(dissection, layer: str) -> list[str | None]:
    """Per unit of ``layer`` its concept in a ``seethrough.dissection`` result, ``None`` where
    the unit is no detector (best IoU not above the result's ``iou_threshold``)."""
    if layer not in dissection.layers:
        raise InputError(f"the dissection has no layer {layer!r}; it has {list(dissection.layers)}")
    concepts, values = dissection.best(layer)
    names = dissection.vocabulary.names
    return [names[int(c)] if float(v) > dissection.iou_threshold else None
            for c, v in zip(concepts, values)]

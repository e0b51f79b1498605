"""Centered kernel alignment (CKA, Kornblith et al. 2019): how alike two layers' representations
are, in memory (``cka``) or streamed over a dataset for every layer pair of two models in one
``tally`` pass (``LinearCKA``, ``cka_matrix``).

CKA compares the examples' similarity structure: with Gram matrices ``K`` of ``X (n, p)`` and
``L`` of ``Y (n, q)``, ``CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))``, where the biased HSIC
is ``tr(KHLH)`` (``H`` centres) and the debiased one is the unbiased estimator of Song et al.
(2012), ``[tr(K~L~) + 1'K~1 1'L~1 / ((n-1)(n-2)) - 2/(n-2) 1'K~L~1] / (n(n-3))`` with ``K~``
the Gram matrix with its diagonal zeroed. Linear CKA is invariant to orthogonal transforms and
isotropic scaling of either representation, not to general invertible linear maps.

Features of a convolutional layer ``(n, C, H, W)``: ``spatial="flatten"`` makes each example's
whole activation its feature vector (``C*H*W`` features: where things are counts),
``spatial="mean"`` averages the positions (``C`` features: what the channels respond
to, wherever it is). ``cka`` flattens by default: it can use Gram matrices, whose size does not
depend on the features. The streamed ``LinearCKA`` keeps ``p x q`` feature-space products,
so it averages by default and flattens only when those products fit in ``memory``.

Streaming is exact for linear CKA only: its biased and debiased HSIC are functions of feature-
space sums (``X'X``, ``X'Y``, ``sum x``, and for the debiased one ``sum |x|^2 |y|^2``,
``sum |x|^2 y``, ``sum |y|^2 x``), so they add over batches and shards in memory independent of
the number of images. An RBF kernel needs every pair of examples (and its bandwidth the median
distance over all of them), so RBF CKA is in-memory only (``cka(..., kernel="rbf")``).

Example:
    >>> import torch
    >>> x = torch.randn(200, 10, dtype=torch.float64)
    >>> q, _ = torch.linalg.qr(torch.randn(10, 10, dtype=torch.float64))
    >>> round(cka(x, 3 * x @ q), 6), cka(x, torch.randn(200, 10)) < 0.2
    (1.0, True)
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from seethrough.errors import InputError
from seethrough.results import Result
from seethrough.tallying import Batch, tally

__all__ = ["KERNELS", "MEMORY", "RBF_SIGMA", "SPATIAL", "CKAMatrix", "LinearCKA", "ModelPair",
           "cka", "cka_matrix", "flat_features", "gram_matrix", "hsic"]

KERNELS = ("linear", "rbf")
#: how a conv layer's positions become features (see the module docstring)
SPATIAL = ("flatten", "mean")
#: RBF bandwidth as a fraction of the median distance between examples (Kornblith et al. 2019
#: pick the bandwidth "as a fraction of the median distance"; their Table 2 tries 0.2, 0.4, 0.8)
RBF_SIGMA = 0.8
#: default bound (bytes) on the float64 feature-space products ``LinearCKA`` keeps
MEMORY = 2**30


def flat_features(acts: torch.Tensor, spatial: str = "flatten") -> torch.Tensor:
    """``(n, p)`` float64 rows of an ``(n, ...)`` activation (see ``SPATIAL``)."""
    if spatial not in SPATIAL:
        raise InputError(f"spatial must be one of {', '.join(SPATIAL)}, not {spatial!r}")
    if not isinstance(acts, torch.Tensor) or acts.ndim < 2:
        shape = tuple(acts.shape) if isinstance(acts, torch.Tensor) else type(acts).__name__
        raise InputError(f"activations must be a tensor (n, features) or (n, C, H, W), not {shape}")
    acts = acts.detach().double()
    if spatial == "mean" and acts.ndim > 2:
        acts = acts.flatten(2).mean(2)
    return acts.reshape(len(acts), -1)


def gram_matrix(x: torch.Tensor, kernel: str = "linear", sigma: float = RBF_SIGMA) -> torch.Tensor:
    """The ``(n, n)`` Gram matrix of rows ``x``: ``x x'``, or ``exp(-d^2 / (2 s^2))`` with
    ``s = sigma * median`` distance between distinct examples (``kernel="rbf"``)."""
    if kernel not in KERNELS:
        raise InputError(f"kernel must be one of {', '.join(KERNELS)}, not {kernel!r}")
    if kernel == "linear":
        return x @ x.T
    if not sigma > 0:
        raise InputError(f"sigma (a fraction of the median distance) must be > 0, not {sigma!r}")
    norms = (x * x).sum(1)
    squared = (norms[:, None] + norms[None, :] - 2 * x @ x.T).clamp_min(0)
    pairs = squared[torch.triu_indices(len(x), len(x), 1, device=x.device).unbind()]
    median = pairs.median()
    if not median > 0:
        raise InputError("the median distance between examples is 0 (most rows are equal): the "
                         "RBF bandwidth is undefined; use kernel='linear' or distinct examples")
    return torch.exp(-squared / (2 * sigma**2 * median))


def hsic(k: torch.Tensor, l: torch.Tensor, debiased: bool = False) -> torch.Tensor:
    """HSIC of two ``(n, n)`` Gram matrices: ``tr(KHLH) / (n-1)^2``, or Song et al.'s unbiased
    estimator (``debiased``, needs ``n >= 4``)."""
    n = len(k)
    if not debiased:
        kc = k - k.mean(0, keepdim=True) - k.mean(1, keepdim=True) + k.mean()
        return (kc * l).sum() / (n - 1) ** 2
    k, l = k.clone(), l.clone()
    k.fill_diagonal_(0)
    l.fill_diagonal_(0)
    k1, l1 = k.sum(1), l.sum(1)
    total = (k * l).sum() + k1.sum() * l1.sum() / ((n - 1) * (n - 2)) - 2 / (n - 2) * (k1 @ l1)
    return total / (n * (n - 3))


def _check_pair(x: torch.Tensor, y: torch.Tensor, debiased: bool) -> None:
    if len(x) != len(y):
        raise InputError(f"X and Y must hold the same examples: {len(x)} rows against {len(y)}")
    least = 4 if debiased else 2
    if len(x) < least:
        raise InputError(f"CKA needs at least {least} examples{' when debiased' if debiased else ''}"
                         f", not {len(x)}")
    for name, values in (("X", x), ("Y", y)):
        if not bool(torch.isfinite(values).all()):
            raise InputError(f"{name} holds NaN or infinite values; clean the activations first")


def _ratio(xy: torch.Tensor, xx: torch.Tensor, yy: torch.Tensor) -> float:
    """``xy / sqrt(xx yy)``; NaN when a representation is constant (no variance to align)."""
    denominator = (xx * yy).sqrt()
    return float(xy / denominator) if denominator > 0 else float("nan")


def cka(x: torch.Tensor, y: torch.Tensor, kernel: str = "linear", debiased: bool = False,
        sigma: float = RBF_SIGMA, *, spatial: str = "flatten") -> float:
    """CKA of two representations of the same ``n`` examples (Kornblith et al. 2019).

    Args:
        x, y: ``(n, p)`` and ``(n, q)`` activations, or ``(n, C, H, W)`` (see ``spatial``).
        kernel: ``"linear"`` or ``"rbf"``.
        debiased: use the unbiased HSIC estimator (Song et al. 2012): CKA of independent
            representations is then near 0 instead of growing with ``p / n``.
        sigma: the RBF bandwidth as a fraction of the median distance between examples.
        spatial: ``"flatten"`` (every activation a feature) or ``"mean"`` (average positions).

    Linear CKA with no more features than examples uses the feature-space form; otherwise, and
    for RBF, two ``(n, n)`` Gram matrices are built (memory ``n^2``: stream large ``n`` with
    ``LinearCKA``).

    Example:
        >>> x = torch.randn(100, 5)
        >>> round(cka(x, x, kernel="rbf"), 6), round(cka(x, x, debiased=True), 6)
        (1.0, 1.0)
    """
    x, y = flat_features(x, spatial), flat_features(y, spatial)
    _check_pair(x, y, debiased)
    if kernel == "linear" and max(x.shape[1], y.shape[1]) <= len(x):
        # the feature-space form: fewer operations than the n x n Gram matrices here
        stat = LinearCKA(["x"], ["y"])
        stat.add({"x": x - x.mean(0), "y": y - y.mean(0)})  # centred first: less rounding
        return float(stat.matrix(debiased)[0, 0])
    k, l = gram_matrix(x, kernel, sigma), gram_matrix(y, kernel, sigma)
    return _ratio(hsic(k, l, debiased), hsic(k, k, debiased), hsic(l, l, debiased))


class _Moments:
    """Float64 sums of one layer's rows ``x``: count, ``sum x``, ``X'X``, ``sum |x|^2``,
    ``sum |x|^4`` and ``sum |x|^2 x``."""

    def __init__(self) -> None:
        self.count = 0
        self.sums: dict[str, torch.Tensor] = {}

    def add(self, x: torch.Tensor) -> None:
        square = (x * x).sum(1)
        parts = {"s": x.sum(0), "xx": x.T @ x, "a": square.sum(), "aa": (square * square).sum(),
                 "ax": square @ x}
        self.count += len(x)
        self.sums = {k: self.sums[k] + v for k, v in parts.items()} if self.sums else parts


class LinearCKA:
    """A ``tally`` statistic: the exact linear CKA (biased and debiased) of every pair of a layer
    in ``layers_x`` and one in ``layers_y``, from float64 feature-space sums.

    Memory: ``p^2`` per layer and ``p q`` per pair (features ``p``, ``q``; see ``spatial``), never
    the number of images. Shards merge exactly (sums add).

    Args:
        layers_x, layers_y: the ``batch.acts`` keys compared (rows and columns of the matrix).
        spatial: ``"mean"`` or ``"flatten"`` (see the module docstring).
        memory: bound in bytes on the products kept; more raises ``InputError`` (at the first
            batch, when the feature counts are known).

    Example:
        >>> x, y = torch.randn(50, 8), torch.randn(50, 3, 2, 2)
        >>> stat = LinearCKA(["x"], ["y"])
        >>> for rows in (slice(0, 20), slice(20, 50)):
        ...     stat.update(Batch(0, torch.arange(50)[rows], {"x": x[rows], "y": y[rows]}))
        >>> abs(float(stat.matrix()[0, 0]) - cka(x, y, spatial="mean")) < 1e-9
        True
    """

    def __init__(self, layers_x: Sequence[str], layers_y: Sequence[str], *, spatial: str = "mean",
                 memory: int = MEMORY):
        if spatial not in SPATIAL:
            raise InputError(f"spatial must be one of {', '.join(SPATIAL)}, not {spatial!r}")
        self.layers_x, self.layers_y = list(layers_x), list(layers_y)
        self.spatial, self.memory = spatial, int(memory)
        self.moments: dict[str, _Moments] = {}
        self.cross: dict[tuple[str, str], dict[str, torch.Tensor]] = {}

    def _check_memory(self, widths: dict[str, int]) -> None:
        needed = 8 * (sum(widths[name] ** 2 for name in widths)
                      + sum(widths[a] * widths[b] for a in self.layers_x for b in self.layers_y))
        if needed > self.memory:
            raise InputError(
                f"CKA with spatial={self.spatial!r} would keep {needed / 2**30:.2f} GiB of feature "
                f"products (features per layer: {widths}), more than memory={self.memory}: use "
                "spatial='mean', fewer layers, or raise memory")

    def add(self, rows: dict[str, torch.Tensor]) -> None:
        """Add float64 feature rows ``{layer: (n, p)}`` of the same examples."""
        for name, x in rows.items():
            self.moments.setdefault(name, _Moments()).add(x)
        for a in self.layers_x:
            for b in self.layers_y:
                x, y = rows[a], rows[b]
                ax, by = (x * x).sum(1), (y * y).sum(1)
                parts = {"xy": x.T @ y, "ab": ax @ by, "ay": ax @ y, "bx": by @ x}
                old = self.cross.get((a, b))
                self.cross[a, b] = {k: old[k] + v for k, v in parts.items()} if old else parts

    def update(self, batch: Batch) -> None:
        names = list(dict.fromkeys(self.layers_x + self.layers_y))
        missing = [name for name in names if name not in batch.acts]
        if missing:
            raise InputError(f"the batch has no activations of {missing}: tally these layers")
        rows = {name: flat_features(batch.acts[name], self.spatial).cpu() for name in names}
        if not self.moments:
            self._check_memory({name: r.shape[1] for name, r in rows.items()})
        self.add(rows)

    def merge(self, other: LinearCKA) -> LinearCKA:
        for name, moments in other.moments.items():
            mine = self.moments.setdefault(name, _Moments())
            mine.sums = {k: mine.sums[k] + v for k, v in moments.sums.items()} if mine.sums \
                else dict(moments.sums)
            mine.count += moments.count
        for pair, parts in other.cross.items():
            old = self.cross.get(pair)
            self.cross[pair] = {k: old[k] + v for k, v in parts.items()} if old else dict(parts)
        return self

    def state_dict(self) -> dict:
        return {"moments": {name: {"count": m.count, **m.sums} for name, m in self.moments.items()},
                "cross": {f"{a}\t{b}": parts for (a, b), parts in self.cross.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.moments = {}
        for name, saved in state["moments"].items():
            moments = self.moments[name] = _Moments()
            moments.count = saved["count"]
            moments.sums = {k: v for k, v in saved.items() if k != "count"}
        self.cross = {tuple(key.split("\t")): parts for key, parts in state["cross"].items()}

    def _centred(self, a: str, b: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Of centred rows ``x - mean``, ``y - mean``: ``|X'Y|_F^2``, ``sum |x|^2 |y|^2`` and
        ``sum |x|^2 * sum |y|^2``, from the raw sums."""
        ma, mb = self.moments[a], self.moments[b]
        n = ma.count
        sa, sb = ma.sums, mb.sums
        # a layer with itself: its own moments (pairs of distinct layers are in ``cross``)
        c = self.cross[a, b] if a != b else {"xy": sa["xx"], "ab": sa["aa"], "ay": sa["ax"],
                                             "bx": sa["ax"]}
        mx, my = sa["s"] / n, sb["s"] / n
        xy = c["xy"] - n * torch.outer(mx, my)
        cx, cy = mx @ mx, my @ my  # |mean|^2
        # |x_i - mx|^2 = a_i - 2 x_i.mx + cx (likewise b_i for y): sum of their products
        products = (c["ab"] - 2 * my @ c["ay"] + cy * sa["a"] - 2 * mx @ c["bx"]
                    + 4 * mx @ c["xy"] @ my - 2 * cy * (mx @ sa["s"]) + cx * sb["a"]
                    - 2 * cx * (my @ sb["s"]) + n * cx * cy)
        norms = (sa["a"] - n * cx) * (sb["a"] - n * cy)
        return (xy * xy).sum(), products, norms

    def _hsic(self, a: str, b: str, debiased: bool) -> torch.Tensor:
        n = self.moments[a].count
        dot, products, norms = self._centred(a, b)
        if not debiased:
            return dot
        return dot - n / (n - 2) * products + norms / ((n - 1) * (n - 2))

    def matrix(self, debiased: bool = False) -> torch.Tensor:
        """The ``(len(layers_x), len(layers_y))`` linear CKA matrix (float64) of the sums so far."""
        rows, columns = self.layers_x, self.layers_y
        n = min((m.count for m in self.moments.values()), default=0)
        least = 4 if debiased else 2
        if n < least:
            raise InputError(f"CKA needs at least {least} examples, not {n}: tally more images")
        out = torch.empty(len(rows), len(columns), dtype=torch.float64)
        for i, a in enumerate(rows):
            for j, b in enumerate(columns):
                out[i, j] = _ratio(self._hsic(a, b, debiased), self._hsic(a, a, debiased),
                                   self._hsic(b, b, debiased))
        return out


class ModelPair(nn.Module):
    """Two models run on the same input (children ``a`` and ``b``), so one ``tally`` pass
    captures layers of both (``a.<layer>``, ``b.<layer>``)."""

    def __init__(self, a: nn.Module, b: nn.Module):
        super().__init__()
        self.a, self.b = a, b
        size = getattr(a, "input_size", None) or getattr(b, "input_size", None)
        if size is not None:
            self.input_size = tuple(size)

    def forward(self, images: torch.Tensor) -> tuple:
        return self.a(images), self.b(images)


@dataclass
class CKAMatrix(Result):
    """CKA between every layer of model A (rows) and of model B (columns)."""

    values: torch.Tensor
    layers_a: list[str]
    layers_b: list[str]
    debiased: bool = False
    spatial: str = "mean"
    images: int = 0
    names: tuple[str, str] = ("model A", "model B")

    def best_match(self) -> list[str]:
        """For each layer of A, the layer of B it is most CKA-similar to."""
        return [self.layers_b[int(j)] for j in self.values.nan_to_num(-1).argmax(1)]

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame([{"layer_a": a, "layer_b": b, "cka": float(self.values[i, j])}
                             for i, a in enumerate(self.layers_a)
                             for j, b in enumerate(self.layers_b)])

    def plot(self):
        """A heat map: rows the layers of A, columns those of B, each cell its CKA."""
        from matplotlib.figure import Figure

        rows, columns = self.values.shape
        figure = Figure(figsize=(1.5 + 0.6 * max(columns, 3), 1.0 + 0.45 * max(rows, 3)))
        axis = figure.add_subplot()
        image = axis.imshow(self.values.float().numpy(), vmin=0, vmax=1, cmap="magma",
                            aspect="auto")
        axis.set_xticks(range(columns), self.layers_b, rotation=45, ha="right", fontsize=8)
        axis.set_yticks(range(rows), self.layers_a, fontsize=8)
        axis.set_xlabel(f"{self.names[1]} layer")
        axis.set_ylabel(f"{self.names[0]} layer")
        if rows * columns <= 400:
            for i in range(rows):
                for j in range(columns):
                    value = float(self.values[i, j])
                    axis.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                              color="black" if value > 0.6 else "white")
        kind = "debiased linear CKA" if self.debiased else "linear CKA"
        axis.set_title(f"{kind}, spatial={self.spatial}, {self.images} images", fontsize=9)
        figure.colorbar(image, ax=axis, fraction=0.05)
        figure.tight_layout()
        return figure

    def figure(self):
        """The heat map (``plot``)."""
        return self.plot()

    def _title(self) -> str:
        return f"CKAMatrix: {self.names[0]} x {self.names[1]}"

    def _settings(self) -> dict:
        return {"layers_a": self.layers_a, "layers_b": self.layers_b, "debiased": self.debiased,
                "spatial": self.spatial, "images": self.images, "names": list(self.names)}

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {"values": self.values}

    @classmethod
    def _from_saved(cls, settings: dict, tensors: dict[str, torch.Tensor]) -> CKAMatrix:
        return cls(tensors["values"], **{**settings, "names": tuple(settings["names"])})


def _default_layers(model: nn.Module) -> list[str]:
    from seethrough.core.layer_table import stage_layers

    names = stage_layers(model)
    if not names:
        raise InputError("found no convolutional stages in the model: name the layers to compare "
                         "(seethrough.layers(model) lists them)")
    return names


def cka_matrix(model_a: nn.Module, model_b: nn.Module | None, dataset,
               layers_a: Sequence[str] | None = None, layers_b: Sequence[str] | None = None, *,
               debiased: bool = False, spatial: str = "mean", memory: int = MEMORY,
               batch_size: int = 64, names: tuple[str, str] = ("model A", "model B"),
               progress: bool | None = None, **tally_options) -> CKAMatrix:
    """Linear CKA between every layer of ``model_a`` and of ``model_b`` over ``dataset``, in one
    ``tally`` pass; both models are left as they were.

    Args:
        model_a, model_b: models taking the same images; ``model_b=None`` compares ``model_a``
            with itself.
        dataset: any dataset ``tally`` takes (an ``(N, C, H, W)`` tensor, ConceptWorld...).
        layers_a, layers_b: layer names; default: each model's stages (``stage_layers``).
        debiased: the unbiased HSIC estimator (Song et al. 2012).
        spatial: ``"mean"`` (average positions, ``C`` features) or ``"flatten"``; see
            ``LinearCKA`` for ``memory``.
        tally_options: ``shard``, ``checkpoint``, ``cache``... as for ``tally``.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3))
        >>> result = cka_matrix(net, None, torch.rand(20, 3, 8, 8), ["0", "2"], ["0", "2"],
        ...                     progress=False)
        >>> [round(v, 6) for v in result.values.diagonal().tolist()]
        [1.0, 1.0]
    """
    model_b = model_a if model_b is None else model_b
    layers_a = list(layers_a) if layers_a is not None else _default_layers(model_a)
    layers_b = list(layers_b) if layers_b is not None else _default_layers(model_b)
    if not layers_a or not layers_b:
        raise InputError("name at least one layer of each model (seethrough.layers(model))")
    if model_b is model_a:
        model, keys_a, keys_b = model_a, layers_a, layers_b
    else:
        model = ModelPair(model_a, model_b)
        keys_a, keys_b = [f"a.{n}" for n in layers_a], [f"b.{n}" for n in layers_b]
    stat = LinearCKA(keys_a, keys_b, spatial=spatial, memory=memory)
    tally(model, list(dict.fromkeys(keys_a + keys_b)), dataset, {"cka": stat},
          batch_size=batch_size, progress=progress, desc="CKA", settings={"spatial": spatial},
          **tally_options)
    values = stat.matrix(debiased)
    return CKAMatrix(values, layers_a, layers_b, debiased, spatial,
                     stat.moments[keys_a[0]].count, tuple(names))

"""Network Dissection (Bau et al. 2017): which concept does each unit detect, and how well?

The algorithm of the paper, in two passes over a dataset with concept label maps:

1. per unit ``k`` a threshold ``T_k`` with ``P(a_k > T_k) = quantile`` (0.005) over all positions
   of all images, from a streaming ``QuantileSketch`` (bounded error, mergeable);
2. activation maps upsampled to the label resolution (``upsample="bilinear"`` as NetDissect-Lite,
   or ``"receptive_field"`` anchored at receptive-field centres as the original), thresholded
   to masks ``M_k``, and ``IoU_{k,c} = sum |M_k & L_c| / sum |M_k | L_c|`` accumulated over the
   dataset (``IoUCounter``; image-level labels such as scene cover the whole image).

Each unit gets its best concept; it is a detector when that IoU exceeds ``iou_threshold`` (0.04).

Both passes are ``seethrough.tallying`` passes over the dataset (any concept dataset, ``Subset``
or ``ConcatDataset`` of one). The first keeps the activations (and labels) in an
``ActivationCache``, so the second pass reads them instead of running the model and the
dataset again: the first ``cache_memory`` bytes (256 MiB) in memory, the rest on disk, so
memory stays bounded as the dataset grows. The second pass never
upsamples whole maps: ``mask_counts`` interpolates only the label pixels next to activations
above the threshold, which gives exactly the counts of the dense masks.
With ``checkpoint=path`` the statistics are saved atomically every ``checkpoint_every`` batches
(and on interruption, with every finished batch; the second pass in ``path.iou``): calling
``dissect`` again with the same arguments resumes.

Example:
    >>> from seethrough.data import ConceptWorld                       # doctest: +SKIP
    >>> model = load_model("conceptnet")                               # doctest: +SKIP
    >>> result = dissect(model, ["features.6"], ConceptWorld("val", length=500))  # doctest: +SKIP
    >>> result.unique_detectors()                                      # doctest: +SKIP
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import torch
from torch import nn

from seethrough.core import model_device
from seethrough.data.concepts import categories_of, unwrap
from seethrough.dissection.counts import RULES
from seethrough.dissection.labels import LabelBatch, Vocabulary, collate
from seethrough.dissection.mask_counts import Bands
from seethrough.dissection.result import Dissection, LayerDissection
from seethrough.dissection.stats import LayerIoU, LayerQuantiles, LayerTopImages
from seethrough.dissection.upsample import (
    anchored_matrix,
    bilinear_matrix,
    receptive_field,
    upsample,
)
from seethrough.errors import InputError
from seethrough.layout import run_in_fast_layout
from seethrough.tallying import ActivationCache, read_checkpoint, tally
from seethrough.tallying.engine import EngineSpec, as_engine
from seethrough.trace import capture, resolve_layer

#: transform(images, labels, indices) -> (images, labels), applied before the model
BatchTransform = Callable[[torch.Tensor, LabelBatch, torch.Tensor], tuple[torch.Tensor, LabelBatch]]
UPSAMPLE_MODES = ("bilinear", "receptive_field")
_MASK_CHUNK = 1 << 23  # elements of upsampled maps held at once


def layer_activations(model: nn.Module, names: Sequence[str], images: torch.Tensor,
                      basis: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Activations ``(N, K, h, w)`` of each layer, as ``unit_maps`` gives them.

    The model runs on channels-last input where it can (``seethrough.layout``), so 4-D
    activations may come back in that memory layout (use ``.reshape``, not ``.view``).
    """
    trace = run_in_fast_layout(model, lambda: capture(model, images, list(names)))
    return unit_maps({name: trace[name].output for name in names}, basis)


def unit_masks(acts: torch.Tensor, thresholds: torch.Tensor, rows: torch.Tensor,
               cols: torch.Tensor, *, dtype: torch.dtype = torch.bool) -> torch.Tensor:
    """Masks (N, K, H, W) of ``dtype``: upsampled activations above each unit's threshold."""
    n, k = acts.shape[:2]
    height, width = rows.shape[0], cols.shape[0]
    chunk = max(1, _MASK_CHUNK // max(1, n * height * width))
    masks = torch.empty(n, k, height, width, dtype=dtype, device=acts.device)
    rows, cols = rows.to(acts), cols.to(acts)
    for start in range(0, k, chunk):
        part = upsample(acts[:, start : start + chunk], rows, cols)
        torch.gt(part, thresholds[start : start + chunk, None, None].to(part),
                 out=masks[:, start : start + chunk])
    return masks


def dissect(
    model: nn.Module,
    layers: str | Sequence[str],
    dataset,
    *,
    quantile: float = 0.005,
    iou_threshold: float = 0.04,
    thresholds: dict[str, torch.Tensor] | None = None,
    upsample: str = "bilinear",
    union: str = "paper",
    batch_size: int = 32,
    basis: dict[str, torch.Tensor] | None = None,
    transform: BatchTransform | None = None,
    bins: int = 4096,
    top_k: int = 8,
    cache: bool | ActivationCache = True,
    cache_dtype: torch.dtype = torch.float32,
    cache_memory: int = 256 * 2**20,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 20,
    num_workers: int = 0,
    engine: EngineSpec = "local",
    progress: bool | None = None,
) -> Dissection:
    """Network Dissection of ``layers`` on a concept ``dataset``; see the module docstring.

    Args:
        model: any model taking the dataset's images; run in the mode it is in (use eval).
        layers: layer names (``resolve_layer`` rules).
        dataset: a concept dataset (``categories`` and samples as in ``dissection.labels``), a
            ``Subset`` or ``ConcatDataset`` of them, or a ``DataLoader`` over one.
        quantile: top fraction of activations above the threshold (paper: 0.005).
        iou_threshold: a unit is a detector when its best IoU exceeds this (paper: 0.04).
        thresholds: precomputed ``{layer: (K,)}`` thresholds; skips the first pass.
        upsample: ``"bilinear"`` (NetDissect-Lite) or ``"receptive_field"`` (original).
        union: ``"paper"`` or ``"netdissect_lite"`` counting rule (see ``dissect.counts``).
        basis: ``{layer: (K', K)}`` to dissect directions instead of units (e.g. a rotation).
        transform: ``f(images, labels, indices)`` applied to each batch (experiments);
            ``indices`` are the images' dataset indices (seed randomness from them).
        bins: bins per unit of the quantile sketch (error <= 2 * range / bins).
        cache: keep the activations of pass 1 for pass 2 (else run the model twice); an
            ``ActivationCache`` of your own is used as it is and kept, so several dissections
            of the same layers and data (other thresholds, other bases) run the model once.
        cache_dtype: precision of the cache (float16 halves its memory and disk traffic).
        cache_memory: bytes of the cache kept in memory before it spills to disk (without a
            checkpoint; with one, the cache is all on disk so that a resumed run finds it).
        checkpoint: file to save progress to and resume from.
        engine: where the passes run: ``"local"`` (this process), ``"ray"``, or an ``Engine``
            (``seethrough.tallying.engine``): several processes or a Ray cluster, each pass
            cut into shards whose statistics are merged in order (bit-identical for any number
            of workers). Sharded passes keep no activation cache: pass 2 runs the model again.
    """
    if upsample not in UPSAMPLE_MODES:
        raise InputError(f"upsample must be one of {UPSAMPLE_MODES}, not {upsample!r}")
    if union not in RULES:
        raise InputError(f"union must be one of {RULES}, not {union!r}")
    if not 0 < quantile < 1:
        raise InputError(f"quantile is a fraction in (0, 1), not {quantile}")
    dataset = unwrap(dataset)
    vocabulary = Vocabulary(categories_of(dataset))
    layers = [layers] if isinstance(layers, str) else list(layers)
    names = [resolve_layer(model, layer)[0] for layer in layers]
    given = None
    if thresholds is not None:
        given = {resolve_layer(model, k)[0]: torch.as_tensor(v, dtype=torch.float64)
                 for k, v in thresholds.items()}
        missing = [n for n in names if n not in given]
        if missing:
            raise InputError(f"thresholds given for some layers but not for {missing}")
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    engine, owned = as_engine(engine)
    store = cache if isinstance(cache, ActivationCache) else None
    if engine.sharded:
        if store is not None:
            raise InputError("an ActivationCache cannot be shared by the workers of a sharded "
                             "engine: drop cache= or use engine='local'")
        cache = False
    if store is None and cache:
        store = (ActivationCache(checkpoint.with_name(checkpoint.name + ".cache"), dtype=cache_dtype)
                 if checkpoint is not None else ActivationCache(memory=cache_memory, dtype=cache_dtype))
    settings = {"quantile": quantile, "bins": bins, "upsample": upsample, "top_k": top_k,
                "basis": {k: float(v.double().sum()) for k, v in (basis or {}).items()}}
    run = partial(tally, model, names, dataset, batch_size=batch_size,
                  collate=partial(collate, vocabulary=vocabulary), transform=transform,
                  activations=partial(unit_maps, basis=basis), cache=store,
                  checkpoint_every=checkpoint_every, num_workers=num_workers, engine=engine,
                  progress=progress)
    try:
        tops = {name: LayerTopImages(name, top_k) for name in names}
        if given is None:
            sketches = {name: LayerQuantiles(name, bins) for name in names}
            run({**{f"sketch/{n}": s for n, s in sketches.items()},
                 **{f"top/{n}": t for n, t in tops.items()}},
                checkpoint=checkpoint, settings=settings, desc="dissect: thresholds")
            given = {name: sketches[name].sketch.upper_quantile(quantile) for name in names}
        geometry = partial(_bands, model, upsample, dataset)
        device = model_device(model)
        counters = {name: LayerIoU(name, vocabulary, given[name], partial(geometry, name), device)
                    for name in names}
        second = {f"iou/{n}": c for n, c in counters.items()}
        if thresholds is not None:
            second.update({f"top/{n}": t for n, t in tops.items()})
        run(second, checkpoint=None if checkpoint is None else
            checkpoint.with_name(checkpoint.name + ".iou"),
            settings={**settings, "thresholds": {k: float(v.sum()) for k, v in given.items()}},
            desc="dissect: IoU")
    finally:
        if store is not None and store is not cache:
            store.close(remove=checkpoint is not None and _finished(checkpoint))
        if owned:
            engine.close()
    layers_done = {
        name: LayerDissection(name, given[name], counters[name].inner, tops[name].inner,
                              tuple(counters[name].label_size or (0, 0)))
        for name in names}
    return Dissection(layers_done, vocabulary, iou_threshold, union,
                      {"quantile": quantile, "upsample": upsample, "bins": bins,
                       "batch_size": batch_size})


def _finished(checkpoint: Path) -> bool:
    second = checkpoint.with_name(checkpoint.name + ".iou")
    return second.is_file() and read_checkpoint(second)["done"]


def unit_maps(acts: dict[str, torch.Tensor], basis: dict[str, torch.Tensor] | None = None
              ) -> dict[str, torch.Tensor]:
    """Activations as float ``(N, K, h, w)`` maps (``(N, K)`` outputs become 1x1 maps), with
    ``basis[layer]`` (K', K) re-expressing a layer's units: ``a' = basis @ a`` per position."""
    maps = {}
    for name, a in acts.items():
        if a.ndim == 2:
            a = a[:, :, None, None]
        if a.ndim != 4:
            raise InputError(f"layer {name!r} gives {tuple(a.shape)}: dissection needs (N, C, H, W) "
                             "or (N, C) activations")
        a = a.float()
        if basis and name in basis:
            a = torch.einsum("jk,nkhw->njhw", basis[name].to(a), a)
        maps[name] = a
    return maps


def images_size(dataset) -> tuple[int, int, int]:
    """(C, H, W) of the dataset's images (its first sample)."""
    return tuple(torch.as_tensor(dataset[0]["image"]).shape)


def _bands(model, mode, dataset, name, act_size, label_size) -> tuple[Bands, Bands]:
    """The row and column bands that upsample ``act_size`` maps of ``name`` to the labels."""
    h, w = act_size
    height, width = label_size
    if mode == "bilinear":
        matrices = bilinear_matrix(h, height), bilinear_matrix(w, width)
    else:
        image_shape = images_size(dataset)
        centre, _, step = receptive_field(model, name, image_shape)
        matrices = (anchored_matrix(h, height, offset=centre[0], step=step[0], image=image_shape[1]),
                    anchored_matrix(w, width, offset=centre[1], step=step[1], image=image_shape[2]))
    return tuple(Bands.from_matrix(m) for m in matrices)

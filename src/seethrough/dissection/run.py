"""Network Dissection (Bau et al. 2017): which concept does each unit detect, and how well?

The algorithm of the paper, in two passes over a dataset with concept label maps:

1. per unit ``k`` a threshold ``T_k`` with ``P(a_k > T_k) = quantile`` (0.005) over all positions
   of all images, from a streaming ``QuantileSketch`` (bounded error, mergeable);
2. activation maps upsampled to the label resolution (``upsample="bilinear"`` as NetDissect-Lite,
   or ``"receptive_field"`` anchored at receptive-field centres as the original), thresholded
   to masks ``M_k``, and ``IoU_{k,c} = sum |M_k & L_c| / sum |M_k | L_c|`` accumulated over the
   dataset (``IoUCounter``; image-level labels such as scene cover the whole image).

Each unit gets its best concept; it is a detector when that IoU exceeds ``iou_threshold`` (0.04).

The first pass keeps the activations (and labels) in a cache, so the second pass reads them
instead of running the model and the dataset again: the first ``cache_memory`` bytes (256 MiB)
in memory, the rest on disk, so memory stays bounded as the dataset grows. The second pass never
upsamples whole maps: ``mask_counts`` interpolates only the label pixels next to activations
above the threshold, which gives exactly the counts of the dense masks.
With ``checkpoint=path`` the statistics are saved atomically every ``checkpoint_every`` batches
(and on interruption, with every finished batch): calling ``dissect`` again with the same
arguments resumes.

Example:
    >>> from seethrough.data import ConceptWorld                       # doctest: +SKIP
    >>> model = load_model("conceptnet")                               # doctest: +SKIP
    >>> result = dissect(model, ["features.6"], ConceptWorld("val", length=500))  # doctest: +SKIP
    >>> result.unique_detectors()                                      # doctest: +SKIP
"""
from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import torch
from torch import nn

from seethrough.atomic import atomic_path
from seethrough.dissection.counts import RULES, IoUCounter, TopImages
from seethrough.dissection.labels import LabelBatch, Vocabulary, collate
from seethrough.dissection.mask_counts import Bands, mask_counts
from seethrough.dissection.quantile import QuantileSketch
from seethrough.dissection.result import Dissection, LayerDissection
from seethrough.dissection.upsample import (
    anchored_matrix,
    bilinear_matrix,
    receptive_field,
    upsample,
)
from seethrough.errors import InputError
from seethrough.layout import run_in_fast_layout
from seethrough.trace import capture, resolve_layer

#: transform(images, labels, batch_index) -> (images, labels), applied before the model
BatchTransform = Callable[[torch.Tensor, LabelBatch, int], tuple[torch.Tensor, LabelBatch]]
UPSAMPLE_MODES = ("bilinear", "receptive_field")
_MASK_CHUNK = 1 << 23  # elements of upsampled maps held at once


def layer_activations(model: nn.Module, names: Sequence[str], images: torch.Tensor,
                      basis: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Activations ``(N, K, h, w)`` of each layer (``(N, K)`` outputs become 1x1 maps).

    ``basis[layer]`` (K', K) re-expresses a layer's units: ``a' = basis @ a`` per position.
    The model runs on channels-last input where it can (``seethrough.layout``), so 4-D
    activations may come back in that memory layout (use ``.reshape``, not ``.view``).
    """
    trace = run_in_fast_layout(model, lambda: capture(model, images, list(names)))
    acts = {}
    for name in names:
        a = trace[name].output
        if a.ndim == 2:
            a = a[:, :, None, None]
        if a.ndim != 4:
            raise InputError(f"layer {name!r} gives {tuple(a.shape)}: dissection needs (N, C, H, W) "
                             "or (N, C) activations")
        a = a.float()
        if basis and name in basis:
            a = torch.einsum("jk,nkhw->njhw", basis[name].to(a), a)
        acts[name] = a
    return acts


def model_device(model: nn.Module) -> torch.device:
    """The device of a model's first parameter or buffer (CPU for a model without any)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


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


class _Cache:
    """Per-batch activations and labels: in memory up to ``memory`` bytes, then in files
    (written atomically). With a checkpoint every batch goes to a file, so a resumed run
    finds it."""

    def __init__(self, root: Path, dtype: torch.dtype, memory: int = 0):
        self.root, self.dtype, self.memory = root, dtype, memory
        self.held: dict[int, dict] = {}
        root.mkdir(parents=True, exist_ok=True)

    def path(self, batch: int) -> Path:
        return self.root / f"batch_{batch:07d}.pt"

    def has(self, batch: int) -> bool:
        return batch in self.held or self.path(batch).is_file()

    def put(self, batch: int, acts: dict, labels: LabelBatch) -> None:
        item = {"acts": {k: v.to("cpu", self.dtype) for k, v in acts.items()},
                "pixel": labels.pixel.to(torch.int16 if labels.pixel.max() < 2**15 else torch.int32),
                "image": labels.image.to(torch.int32)}
        size = sum(t.numel() * t.element_size() for t in (*item["acts"].values(), item["pixel"]))
        if size <= self.memory:
            self.memory -= size
            self.held[batch] = item
        else:
            _save_atomic(item, self.path(batch))

    def get(self, batch: int) -> tuple[dict, LabelBatch]:
        item = self.held.get(batch) or torch.load(self.path(batch), weights_only=True)
        labels = LabelBatch(pixel=item["pixel"].long(), image=item["image"].long())
        return {k: v.float() for k, v in item["acts"].items()}, labels


def _save_atomic(obj, path: Path) -> None:
    with atomic_path(path) as temporary:
        torch.save(obj, temporary)


def _fingerprint(**items) -> str:
    return hashlib.sha1(repr(sorted(items.items())).encode()).hexdigest()[:16]


def _dataset_key(dataset) -> str:
    """The dataset's own repr, or (for the default repr, which holds a memory address) its type
    and a digest of its first image, so that a checkpoint resumes in a new process."""
    if type(dataset).__repr__ is not object.__repr__:
        return repr(dataset)
    first = torch.as_tensor(dataset[0]["image"]).double()
    return f"{type(dataset).__qualname__}:{float(first.sum())!r}:{float((first**2).sum())!r}"


def _model_fingerprint(model: nn.Module) -> str:
    digest = hashlib.sha1()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(repr(float(tensor.double().sum())).encode() if tensor.numel() else b"")
    return digest.hexdigest()[:16]


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
    cache: bool = True,
    cache_dtype: torch.dtype = torch.float32,
    cache_memory: int = 256 * 2**20,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 20,
    num_workers: int = 0,
    progress: bool = True,
) -> Dissection:
    """Network Dissection of ``layers`` on a concept ``dataset``; see the module docstring.

    Args:
        model: any model taking the dataset's images; run in the mode it is in (use eval).
        layers: layer names (``resolve_layer`` rules).
        dataset: map-style dataset with ``categories`` and samples as in ``dissect.labels``.
        quantile: top fraction of activations above the threshold (paper: 0.005).
        iou_threshold: a unit is a detector when its best IoU exceeds this (paper: 0.04).
        thresholds: precomputed ``{layer: (K,)}`` thresholds; skips the first pass.
        upsample: ``"bilinear"`` (NetDissect-Lite) or ``"receptive_field"`` (original).
        union: ``"paper"`` or ``"netdissect_lite"`` counting rule (see ``dissect.counts``).
        basis: ``{layer: (K', K)}`` to dissect directions instead of units (e.g. a rotation).
        transform: ``f(images, labels, batch_index)`` applied to each batch (experiments).
        bins: bins per unit of the quantile sketch (error <= 2 * range / bins).
        cache: keep the activations of pass 1 for pass 2 (else run the model twice).
        cache_dtype: precision of the cache (float16 halves its memory and disk traffic).
        cache_memory: bytes of the cache kept in memory before it spills to disk (without a
            checkpoint; with one, the cache is all on disk so that a resumed run finds it).
        checkpoint: file to save progress to and resume from.
    """
    if upsample not in UPSAMPLE_MODES:
        raise InputError(f"upsample must be one of {UPSAMPLE_MODES}, not {upsample!r}")
    if union not in RULES:
        raise InputError(f"union must be one of {RULES}, not {union!r}")
    if not 0 < quantile < 1:
        raise InputError(f"quantile is a fraction in (0, 1), not {quantile}")
    if not hasattr(dataset, "categories"):
        raise InputError("the dataset has no `categories`: use ConceptWorld, BrodenDataset or a "
                         "dataset with categories = {category: ['none', ...]} and label masks")
    if len(dataset) == 0:
        raise InputError("the dataset is empty")
    layers = [layers] if isinstance(layers, str) else list(layers)
    names = [resolve_layer(model, layer)[0] for layer in layers]
    vocabulary = Vocabulary(dataset.categories)
    device = model_device(model)
    batches = (len(dataset) + batch_size - 1) // batch_size
    given = None
    if thresholds is not None:
        given = {resolve_layer(model, k)[0]: torch.as_tensor(v, dtype=torch.float64)
                 for k, v in thresholds.items()}
        missing = [n for n in names if n not in given]
        if missing:
            raise InputError(f"thresholds given for some layers but not for {missing}")

    fingerprint = _fingerprint(
        names=names, length=len(dataset), dataset=_dataset_key(dataset), batch_size=batch_size,
        quantile=quantile, bins=bins, upsample=upsample, model=_model_fingerprint(model),
        basis={k: float(v.double().sum()) for k, v in (basis or {}).items()},
        thresholds={k: float(v.sum()) for k, v in (given or {}).items()},
        transform=getattr(transform, "__name__", repr(transform)) if transform else None)
    state = {"fingerprint": fingerprint, "phase": 1, "next_batch": 0, "sketch": {}, "top": {},
             "counter": {}, "thresholds": given, "label_size": None}
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    if checkpoint is not None and checkpoint.is_file():
        saved = torch.load(checkpoint, weights_only=False)
        if saved.get("fingerprint") != fingerprint:
            raise InputError(f"checkpoint {checkpoint} belongs to another run (model, layers, "
                             "dataset or options differ): delete it or choose another path")
        state = saved
    if given is not None and state["phase"] == 1:
        state.update(phase=2, next_batch=0)

    temporary = None
    if not cache:
        store = None
    elif checkpoint is not None:
        store = _Cache(checkpoint.with_name(checkpoint.name + ".cache"), cache_dtype)
    else:
        temporary = tempfile.TemporaryDirectory(prefix="seethrough-dissect-")
        store = _Cache(Path(temporary.name), cache_dtype, memory=cache_memory)

    def save() -> None:
        if checkpoint is not None:
            checkpoint.parent.mkdir(parents=True, exist_ok=True)
            _save_atomic(state, checkpoint)

    def load_batches(start: int):
        from torch.utils.data import DataLoader, Subset

        subset = Subset(dataset, range(start * batch_size, len(dataset)))
        loader = DataLoader(subset, batch_size=batch_size, num_workers=num_workers,
                            collate_fn=partial(collate, vocabulary=vocabulary))
        for offset, (images, labels) in enumerate(loader):
            batch = start + offset
            if transform is not None:
                images, labels = transform(images, labels, batch)
            yield batch, images, labels

    def source(start: int):
        """Yield (batch, acts, labels): from the cache where possible, else from the model."""
        batch = start
        while batch < batches and store is not None and store.has(batch):
            acts, labels = store.get(batch)
            yield batch, acts, labels
            batch += 1
        if batch < batches:
            for index, images, labels in load_batches(batch):
                if store is not None and store.has(index):
                    acts, labels = store.get(index)
                else:
                    acts = layer_activations(model, names, images.to(device), basis)
                    if store is not None:
                        store.put(index, acts, labels)
                        if cache_dtype != torch.float32:  # use what pass 2 will read
                            acts = {k: v.to(cache_dtype).float() for k, v in acts.items()}
                yield index, acts, labels

    from tqdm.auto import tqdm

    # the statistics of the current pass: ``done`` batches are in ``live`` (name -> object per
    # state key) unless an update is half-way (``clean`` False); a snapshot copies them into
    # ``state`` with the matching ``next_batch``, so a checkpoint never holds half a batch
    run = {"live": {}, "done": state["next_batch"], "clean": True}

    def snapshot() -> None:
        for key, objects in run["live"].items():
            state[key] = {**state.get(key, {}), **{n: o.state_dict() for n, o in objects.items()}}
        state["next_batch"] = run["done"]
        save()

    def restored(key: str, name: str, fresh):
        """``fresh``, or the statistics of ``name`` saved under ``key`` by a checkpoint."""
        if name in state.get(key, {}):
            fresh.load_state_dict(state[key][name])
        return fresh

    def batches_left(desc: str):
        bar = tqdm(total=batches, initial=run["done"], disable=not progress, desc=desc,
                   unit="batch")
        for batch, acts, labels in source(run["done"]):
            run["clean"] = False
            yield batch, acts, labels
            run.update(done=batch + 1, clean=True)
            bar.update(1)
            if checkpoint is not None and run["done"] % checkpoint_every == 0:
                snapshot()
        bar.close()

    try:
        if state["phase"] == 1:
            sketches, tops = {}, {}
            run["live"] = {"sketch": sketches, "top": tops}
            for batch, acts, labels in batches_left("dissect: thresholds"):
                for name, a in acts.items():
                    if name not in sketches:
                        sketches[name] = restored("sketch", name, QuantileSketch(a.shape[1], bins))
                        tops[name] = restored("top", name, TopImages(a.shape[1], top_k))
                    sketches[name].update(a)
                    first = batch * batch_size
                    tops[name].update(a.amax((2, 3)), torch.arange(first, first + a.shape[0]))
            state["thresholds"] = {}
            for name in names:  # a run resumed after its last batch has no live sketch
                sketch = sketches.get(name) or restored(
                    "sketch", name, QuantileSketch(len(state["sketch"][name]["counts"]), bins))
                state["thresholds"][name] = sketch.upper_quantile(quantile)
            state["top"] = {**state["top"], **{n: t.state_dict() for n, t in tops.items()}}
            state.pop("sketch")  # no longer needed: phase 2 starts from the thresholds
            state.update(phase=2, next_batch=0)
            run.update(live={}, done=0)
            save()

        if state["phase"] == 2:
            thresholds_now = state["thresholds"]
            counters, bands, new_tops = {}, {}, {}
            run["live"] = {"counter": counters, "new_top": new_tops}
            for batch, acts, labels in batches_left("dissect: IoU"):
                for name, a in acts.items():
                    if name not in counters:
                        counters[name] = restored("counter", name, IoUCounter(a.shape[1], vocabulary))
                        bands[name] = [Bands.from_matrix(m) for m in _matrices(
                            model, name, upsample, dataset, a.shape[-2:], labels.size)]
                        state["label_size"] = labels.size
                    counts = mask_counts(a.to(device), thresholds_now[name], *bands[name], labels,
                                         len(vocabulary))
                    counters[name].add(*counts, labels)
                    if name not in state["top"]:  # thresholds were given: no pass 1
                        if name not in new_tops:
                            new_tops[name] = restored("new_top", name, TopImages(a.shape[1], top_k))
                        first = batch * batch_size
                        new_tops[name].update(a.amax((2, 3)), torch.arange(first, first + a.shape[0]))
            state["counter"] = {**state["counter"], **{n: c.state_dict() for n, c in counters.items()}}
            state["top"].update(state.pop("new_top", {}))
            state["top"].update({n: t.state_dict() for n, t in new_tops.items()})
            state.update(phase=3)
            save()
    except BaseException:
        if state["phase"] in (1, 2) and checkpoint is not None:
            if run["clean"]:
                snapshot()  # all finished batches
            else:
                save()  # the last snapshot
        raise
    finally:
        if temporary is not None:
            temporary.cleanup()
    if store is not None and checkpoint is not None:
        shutil.rmtree(store.root, ignore_errors=True)
    return _result(state, names, vocabulary, iou_threshold=iou_threshold, union=union,
                   options={"quantile": quantile, "upsample": upsample, "bins": bins,
                            "batch_size": batch_size})


def images_size(dataset) -> tuple[int, int, int]:
    """(C, H, W) of the dataset's images (its first sample)."""
    return tuple(torch.as_tensor(dataset[0]["image"]).shape)


def _matrices(model, name, mode, dataset, act_size, label_size):
    h, w = act_size
    height, width = label_size
    if mode == "bilinear":
        return bilinear_matrix(h, height), bilinear_matrix(w, width)
    image_shape = images_size(dataset)
    centre, _, step = receptive_field(model, name, image_shape)
    return (anchored_matrix(h, height, offset=centre[0], step=step[0], image=image_shape[1]),
            anchored_matrix(w, width, offset=centre[1], step=step[1], image=image_shape[2]))


def _result(state, names, vocabulary, *, iou_threshold, union, options) -> Dissection:
    layers = {}
    for name in names:
        counter = IoUCounter(len(state["thresholds"][name]), vocabulary)
        counter.load_state_dict(state["counter"][name])
        top = TopImages(len(state["thresholds"][name]))
        if name in state["top"]:
            top.load_state_dict(state["top"][name])
        layers[name] = LayerDissection(name, state["thresholds"][name], counter, top,
                                       tuple(state["label_size"] or (0, 0)))
    return Dissection(layers, vocabulary, iou_threshold, union, options)

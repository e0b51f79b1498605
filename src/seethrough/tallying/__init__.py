"""``tally``: one pass of a model over a dataset, feeding mergeable statistics.

Every dataset-wide computation of seethrough (Network Dissection's thresholds and IoU counts,
Net2Vec, TCAV, concept PCA, and the representation, CKA and GAN statistics to come) is a set of
statistic objects with ``update(batch) / merge(other) / state_dict() / load_state_dict(state)``
run by this one loop. The loop owns what they share: batches (any map-style dataset, a
``Subset`` or ``ConcatDataset`` of one, or a ``DataLoader`` over it), the model's activations
at ``layers`` (channels-last, forward stopped after the last layer needed, inside the run
scope), a progress bar, an activation cache (a second pass reads it instead of the model),
checkpoints with resume, and shards: ``shard=(i, n)`` runs the ``i``-th of ``n`` contiguous
ranges of batches (or ``shard=range(a, b)`` batches ``a`` to ``b - 1``), and the merged
statistics of all shards equal a single run's (exactly for counts, to rounding for sums).
``engine=`` runs the shards on the processes of this machine or on a Ray cluster
(``seethrough.tallying.engine``), bit-identically for any number of workers.

Example:
    >>> import torch
    >>> from torch import nn
    >>> class Sum:                                      # a statistic: the sum of a layer's output
    ...     def __init__(self): self.total = 0.0
    ...     def update(self, batch): self.total += float(batch.acts["0"].sum())
    ...     def merge(self, other): self.total += other.total; return self
    ...     def state_dict(self): return {"total": self.total}
    ...     def load_state_dict(self, state): self.total = state["total"]
    >>> data = [torch.ones(3, 4, 4) for _ in range(10)]
    >>> net = nn.Sequential(nn.Conv2d(3, 2, 1))
    >>> whole = tally(net, ["0"], data, {"sum": Sum()}, batch_size=4, progress=False)
    >>> halves = [tally(net, ["0"], data, {"sum": Sum()}, batch_size=4, shard=(i, 2),
    ...                 progress=False)["sum"] for i in range(2)]
    >>> abs(halves[0].merge(halves[1]).total - whole["sum"].total) < 1e-3
    True
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from seethrough.core import check_images, model_device, run_scope
from seethrough.data.concepts import unwrap
from seethrough.errors import InputError
from seethrough.layout import run_in_fast_layout
from seethrough.progress import progress_bar
from seethrough.tallying.cache import ActivationCache, save_atomic
from seethrough.tallying.engine import Engine, EngineSpec, as_engine, run_sharded
from seethrough.tallying.fingerprint import dataset_key, digest, model_digest
from seethrough.tallying.shard_job import ShardJob
from seethrough.trace import capture, resolve_layer

__all__ = ["ActivationCache", "Batch", "Engine", "Statistic", "batch_range", "merge_all",
           "read_checkpoint", "tally"]


class Statistic(Protocol):
    """What ``tally`` feeds: a mergeable, saveable accumulator."""

    def update(self, batch: Batch) -> None: ...

    def merge(self, other: Any) -> Any: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


@dataclass
class Batch:
    """One batch as the statistics see it.

    Attributes:
        number: the batch's index in the whole dataset pass.
        indices: dataset index of each sample ``(N,)``.
        acts: ``{layer: activation}`` of the layers asked for (after ``activations``).
        labels: what ``collate`` returned beside the images (concept labels), or ``None``.
        images: the images ``(N, C, H, W)`` on the model's device; ``None`` when the batch was
            read from the cache.
    """

    number: int
    indices: torch.Tensor
    acts: dict[str, torch.Tensor]
    labels: Any = None
    images: torch.Tensor | None = None


def default_collate(samples: list) -> tuple[torch.Tensor, Any]:
    """Images ``(N, C, H, W)`` and labels from samples that are dicts with ``"image"`` (labels:
    the other keys, collated by torch), ``(image, label)`` pairs, or bare image tensors."""
    from torch.utils.data import default_collate as torch_collate

    first = samples[0]
    if isinstance(first, dict):
        images = torch.stack([torch.as_tensor(s["image"]) for s in samples])
        rest = [{k: v for k, v in s.items() if k != "image"} for s in samples]
        return images, torch_collate(rest) if rest[0] else None
    if isinstance(first, (tuple, list)):
        images = torch.stack([torch.as_tensor(s[0]) for s in samples])
        return images, torch_collate([s[1] for s in samples]) if len(first) > 1 else None
    return torch.stack([torch.as_tensor(s) for s in samples]), None


def batch_range(batches: int, shard: tuple[int, int] | range | None) -> range:
    """The batches of shard ``(i, n)``: the ``i``-th of ``n`` contiguous, near-equal ranges
    (a ``range`` of batch numbers is taken as it is)."""
    if shard is None:
        return range(batches)
    if isinstance(shard, range):
        if shard.step != 1 or not 0 <= shard.start <= shard.stop <= batches:
            raise InputError(f"shard {shard!r} is not a range of the {batches} batches")
        return shard
    index, count = shard
    if not (isinstance(index, int) and isinstance(count, int) and 0 <= index < count):
        raise InputError(f"shard must be (index, count) with 0 <= index < count, not {shard!r}")
    return range(index * batches // count, (index + 1) * batches // count)


def merge_all(parts: Sequence[Mapping[str, Statistic]]) -> dict[str, Statistic]:
    """Merge the statistics of several shards (in shard order) into the first's objects."""
    if not parts:
        raise InputError("merge_all needs at least one set of statistics")
    merged = dict(parts[0])
    for part in parts[1:]:
        for name, statistic in part.items():
            merged[name] = merged[name].merge(statistic)
    return merged


def read_checkpoint(path: str | Path) -> dict:
    """A tally checkpoint: ``fingerprint``, ``next_batch`` (batches done), ``done`` and the
    ``stats`` state dicts."""
    return torch.load(path, weights_only=False)


class NamedFailures:
    """A dataset whose items that fail to load raise ``InputError`` naming their index."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        try:
            return self.dataset[index]
        except Exception as error:
            raise InputError(f"image {index} of the dataset failed to load: "
                             f"{type(error).__name__}: {error}") from error


def tally(
    model: nn.Module | None,
    layers: str | Sequence[str],
    dataset,
    stats: Mapping[str, Statistic],
    *,
    batch_size: int = 32,
    collate: Callable[[list], tuple[torch.Tensor, Any]] | None = None,
    transform: Callable[[torch.Tensor, Any, int], tuple[torch.Tensor, Any]] | None = None,
    activations: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None,
    cache: ActivationCache | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 20,
    shard: tuple[int, int] | range | None = None,
    settings: Mapping | None = None,
    num_workers: int = 0,
    engine: EngineSpec = "local",
    progress: bool | None = None,
    desc: str = "tally",
) -> dict[str, Statistic]:
    """Run ``model`` over ``dataset`` once and feed every batch to ``stats``; return them.

    Args:
        model: any ``nn.Module`` (run in the mode it is in, parameters frozen, put back as it
            was); ``None`` when every batch comes from ``cache``.
        layers: the layers whose outputs the statistics read (``batch.acts``); may be empty.
        dataset: a map-style dataset, ``Subset``, ``ConcatDataset`` or ``DataLoader``.
        stats: ``{name: statistic}`` (see ``Statistic``); updated in place, in this order.
        collate: samples -> ``(images, labels)``; default: ``default_collate``.
        transform: ``f(images, labels, indices) -> (images, labels)`` before the model;
            ``indices`` are the images' dataset indices, so that randomness seeded from them
            (``shard_job.seed_for``) is the same however the dataset is batched or sharded.
        activations: maps the captured (or cached) activations before the statistics see
            them, e.g. to re-express units in another basis.
        cache: an ``ActivationCache``; batches it holds are read instead of running the model,
            new batches are put in it. The images are not cached (``batch.images`` is None).
        checkpoint: a file; progress is saved there atomically every ``checkpoint_every``
            batches and on interruption, and a call with the same arguments resumes from it.
        shard: ``(i, n)``: only the ``i``-th of ``n`` contiguous ranges of batches; or a
            ``range`` of batch numbers.
        engine: ``"local"`` (this process), ``"ray"``, or an ``Engine`` (workers, Ray address,
            shard size): a sharded engine runs the shards on its workers and merges them in
            shard order; ``checkpoint`` then keeps finished shards (``path.shards/``). The
            statistics, ``collate``, ``transform`` and ``activations`` must pickle.
        settings: what else decides the result (the caller's options), for the fingerprint
            that keeps a checkpoint or cache from being reused by another run.
    """
    if not stats and not layers:
        raise InputError("tally needs statistics to feed or layers to cache")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, not {batch_size!r}")
    dataset = unwrap(dataset)
    if len(dataset) == 0:
        raise InputError("the dataset is empty")
    layers = [layers] if isinstance(layers, str) else list(layers)
    names = [resolve_layer(model, layer)[0] for layer in layers] if model is not None else layers
    batches = batch_range((len(dataset) + batch_size - 1) // batch_size, shard)
    source_key = digest(  # what the activations depend on: a cache may serve several passes
        layers=names, length=len(dataset), dataset=dataset_key(dataset), batch_size=batch_size,
        model=model_digest(model),
        transform=getattr(transform, "__name__", repr(transform)) if transform else None)
    fingerprint = digest(source=source_key, settings=repr(sorted((settings or {}).items())),
                         stats=sorted(stats))
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    engine, owned = as_engine(engine)
    if engine.sharded:
        if shard is not None or cache is not None:
            raise InputError("a sharded engine makes its own shards and cannot share an activation "
                             "cache: drop shard= and cache=, or use engine='local'")
        options = {"batch_size": batch_size, "collate": collate, "transform": transform,
                   "activations": activations, "num_workers": num_workers, "progress": False}
        job = ShardJob(model, names, dataset, stats, options, threads=engine.threads)
        try:
            merged = run_sharded(engine, job, len(batches), checkpoint,
                                 digest(run=fingerprint, shard_batches=engine.shard_batches),
                                 progress, desc)
        finally:
            if owned:
                engine.close()
        for name, statistic in stats.items():
            statistic.load_state_dict(merged[name].state_dict())
        return dict(stats)
    if cache is not None:
        cache.claim(source_key)
    state = {"fingerprint": fingerprint, "next_batch": batches.start, "done": False,
             "shard": shard, "stats": {}}
    if checkpoint is not None and checkpoint.is_file():
        saved = read_checkpoint(checkpoint)
        if saved.get("fingerprint") != fingerprint or saved.get("shard") != shard:
            raise InputError(f"checkpoint {checkpoint} belongs to another run (model, layers, "
                             "dataset or options differ): delete it or choose another path")
        state = saved
        for name, statistic in stats.items():
            if name in state["stats"]:
                statistic.load_state_dict(state["stats"][name])
    if state["done"]:
        return dict(stats)

    def save(snapshot: dict) -> None:
        if checkpoint is not None:
            save_atomic(snapshot, checkpoint)

    def current(next_batch: int, done: bool = False) -> dict:
        return {**state, "next_batch": next_batch, "done": done,
                "stats": {name: s.state_dict() for name, s in stats.items()}}

    collate = collate or default_collate

    def loaded(start: int):
        """``(number, indices, images, labels)`` of the batches from ``start`` on."""
        first = start * batch_size
        last = min(len(dataset), batches.stop * batch_size)
        subset = Subset(NamedFailures(dataset), range(first, last))
        loader = DataLoader(subset, batch_size=batch_size, num_workers=num_workers,
                            collate_fn=collate)
        for offset, (images, labels) in enumerate(loader):
            number = start + offset
            indices = torch.arange(number * batch_size, number * batch_size + len(images))
            if transform is not None:
                images, labels = transform(images, labels, indices)
            yield number, indices, images, labels

    device = model_device(model) if model is not None else torch.device("cpu")

    def source(start: int):
        """Every remaining batch: from the cache where it has it, else loaded and run."""
        number = start
        while number < batches.stop and cache is not None and cache.has(number):
            acts, indices, labels = cache.get(number)
            yield Batch(number, indices, acts, labels)
            number += 1
        if number >= batches.stop:
            return
        checked_at = number
        for number, indices, images, labels in loaded(number):
            if cache is not None and cache.has(number):
                acts, indices, labels = cache.get(number)
                yield Batch(number, indices, acts, labels)
                continue
            if model is None:
                raise InputError(f"batch {number} is not in the cache and no model was given")
            if number == checked_at:  # the first batch run: shape, type and channels, once
                check_images(images, model, check_range=False, name="dataset images")
            images = images.to(device)
            acts = {}
            if names:
                trace = run_in_fast_layout(model, lambda: capture(model, images, names))
                acts = {name: trace[name].output for name in names}
            if cache is not None:
                cache.put(number, acts, indices, labels)
                if cache.dtype != torch.float32:  # the statistics see what a second pass reads
                    acts = {k: v.to(cache.dtype).float() for k, v in acts.items()}
            yield Batch(number, indices, acts, labels, images)

    snapshot = current(state["next_batch"])
    finished, clean = state["next_batch"], True
    scope = run_scope(model) if model is not None else nullcontext()
    try:
        with scope:
            remaining = range(state["next_batch"], batches.stop)
            for batch in progress_bar(source(state["next_batch"]), desc, progress=progress,
                                      total=len(remaining)):
                if activations is not None:
                    batch.acts = activations(batch.acts)
                clean = False
                for statistic in stats.values():
                    statistic.update(batch)
                finished, clean = batch.number + 1, True
                if checkpoint is not None and (finished - batches.start) % checkpoint_every == 0:
                    snapshot = current(finished)
                    save(snapshot)
    except BaseException:
        save(current(finished) if clean else snapshot)  # never half a batch
        raise
    save(current(batches.stop, done=True))
    return dict(stats)


"""Where a ``tally`` pass runs: this process, the processes of this machine, or a Ray cluster.

``Engine("local")`` with one worker is the plain loop of ``tally``. Every other engine cuts the
pass into **shards** of ``shard_batches`` consecutive batches (boundaries by index, never by
worker count), runs each shard on a worker that loaded the model and the dataset once, takes
back only the statistics' state dicts, and merges them **in shard order** whatever order they
finished in. A shard's numbers depend only on its batches, so the result is bit-identical for
1, 2 or 3 workers, for the processes of this machine or a Ray cluster, and for any completion
order; it equals the plain loop to float rounding (integer counts exactly).

- ``Engine("local", workers=N)``: N spawned processes of this machine; a process that dies is
  replaced and its shard run again.
- ``Engine("ray", workers=N, address=...)``: N Ray actors (``address="auto"`` joins the running
  cluster, ``"HOST:PORT"`` a remote one, ``None`` starts Ray on this machine); an actor that
  dies is restarted by Ray and its shard run again.
- ``checkpoint=path`` (of ``tally``): each finished shard's statistics are saved atomically in
  ``path.shards/``; a run with the same arguments loads them instead of computing them again.
- ``engine.history`` keeps one ``ShardRun`` per pass: shards, who ran them, seconds and the
  bytes each shard sent back (printed with the progress bar).

Example:
    >>> import torch
    >>> from torch import nn
    >>> from seethrough.tallying import tally
    >>> from seethrough.tallying.stats import Moments
    >>> net, data = nn.Sequential(nn.Conv2d(3, 2, 1)), [torch.rand(3, 4, 4) for _ in range(8)]
    >>> engine = Engine("local", shard_batches=1)              # 4 shards, in this process
    >>> mean = tally(net, ["0"], data, {"m": Moments("0")}, batch_size=2, engine=engine,
    ...              progress=False)["m"].mean
    >>> len(engine.history[-1].shards), engine.history[-1].bytes_per_shard < 2000
    (4, True)
"""
from __future__ import annotations

import pickle
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from seethrough.errors import InputError
from seethrough.progress import progress_bar
from seethrough.tallying.cache import save_atomic
from seethrough.tallying.shard_job import Shard, ShardJob

__all__ = ["ENGINES", "Engine", "EngineSpec", "ShardRun", "as_engine", "plan_shards"]

ENGINES = ("local", "ray")
#: how many times a shard whose worker died is run again
RETRIES = 3


@dataclass
class ShardRun:
    """One sharded pass: the shards run (index, worker, seconds, bytes sent back) and the
    shards read from checkpoints instead."""

    engine: str
    workers: int
    shards: list[tuple[int, str, float, int]] = field(default_factory=list)
    resumed: list[int] = field(default_factory=list)
    retried: int = 0

    @property
    def bytes_per_shard(self) -> float:
        """Mean bytes of statistics a shard sent back to the driver."""
        return sum(s[3] for s in self.shards) / max(1, len(self.shards))

    def summary(self) -> str:
        return (f"{self.engine}: {len(self.shards)} shards on {self.workers} "
                f"worker{'s' * (self.workers > 1)} "
                f"({len(self.resumed)} from checkpoints, {self.retried} retried), "
                f"{_size(self.bytes_per_shard)} sent back per shard")


def _size(count: float) -> str:
    """``123 B``, ``4.5 KiB``, ``6.7 MiB``."""
    if count < 1024:
        return f"{count:.0f} B"
    return f"{count / 1024:.1f} KiB" if count < 2**20 else f"{count / 2**20:.1f} MiB"


@dataclass
class Engine:
    """Where ``tally`` runs (see module doc).

    Args:
        kind: ``"local"`` (this machine) or ``"ray"`` (a Ray cluster).
        workers: worker processes (local) or actors (Ray).
        address: Ray only: ``"auto"``, ``"HOST:PORT"`` or ``None`` (start Ray here).
        shard_batches: batches per shard; ``None``: ``default_shard_batches`` of the pass's
            batch count. Results depend on it (it fixes the shard boundaries), never on
            ``workers``.
        threads: torch threads per shard, wherever it runs.
    """

    kind: str = "local"
    workers: int = 1
    address: str | None = None
    shard_batches: int | None = None
    threads: int = 1
    history: list[ShardRun] = field(default_factory=list, repr=False)
    _pool: Any = field(default=None, repr=False)

    def __post_init__(self):
        if self.kind not in ENGINES:
            raise InputError(f"engine must be one of {ENGINES}, not {self.kind!r}")
        if not isinstance(self.workers, int) or self.workers < 1:
            raise InputError(f"workers must be a positive integer, not {self.workers!r}")
        if self.shard_batches is not None and (not isinstance(self.shard_batches, int)
                                               or self.shard_batches < 1):
            raise InputError(f"shard_batches must be a positive integer, not {self.shard_batches!r}")
        if self.address is not None and self.kind != "ray":
            raise InputError("address is for engine='ray' (a Ray cluster); drop it for 'local'")

    @property
    def sharded(self) -> bool:
        """Whether passes are cut into shards (anything but one local worker, unsharded)."""
        return self.kind == "ray" or self.workers > 1 or self.shard_batches is not None

    def pool(self):
        """The workers, started on first use and kept until ``close()``."""
        if self._pool is None:
            if self.kind == "ray":
                from seethrough.tallying.ray_pool import RayPool

                self._pool = RayPool(self.workers, self.address, self.threads)
            elif self.workers > 1:
                from seethrough.tallying.local_pool import ProcessPool

                self._pool = ProcessPool(self.workers, self.threads)
            else:
                from seethrough.tallying.local_pool import InProcessPool

                self._pool = InProcessPool()
        return self._pool

    def close(self) -> None:
        """Stop the workers (a later pass starts them again)."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


#: what ``engine=`` takes: a name, or an ``Engine``
EngineSpec = str | Engine | None


def as_engine(spec: EngineSpec) -> tuple[Engine, bool]:
    """``(engine, owned)``: an ``Engine`` for ``spec``; ``owned`` when it was made here (and is
    to be closed after the pass)."""
    if isinstance(spec, Engine):
        return spec, False
    return Engine(spec or "local"), True


def default_shard_batches(batches: int) -> int:
    """Batches per shard when not given: at least 16 shards where there are 16 batches, at
    most 8 batches a shard (a retried or resumed shard loses little). It depends on the
    dataset and batch size only, so the result does not change with the workers.

    >>> default_shard_batches(5), default_shard_batches(40), default_shard_batches(10_000)
    (1, 2, 8)
    """
    return max(1, min(8, batches // 16))


def plan_shards(batches: int, shard_batches: int) -> list[Shard]:
    """Shards of ``shard_batches`` consecutive batches (the last may be shorter).

    >>> [s.batches for s in plan_shards(5, 2)]
    [range(0, 2), range(2, 4), range(4, 5)]
    """
    return [Shard(i, range(start, min(batches, start + shard_batches)))
            for i, start in enumerate(range(0, batches, shard_batches))]


def run_sharded(engine: Engine, job: ShardJob, batches: int, checkpoint: Path | None,
                fingerprint: str, progress: bool | None, desc: str) -> dict[str, Any]:
    """Run ``job`` on every shard with ``engine``; return the statistics merged in shard order.

    Shards are merged as soon as every shard before them is in, while the workers go on, so
    the driver holds only the shards that finished early."""
    shards = plan_shards(batches, engine.shard_batches or default_shard_batches(batches))
    folder = None if checkpoint is None else checkpoint.with_name(checkpoint.name + ".shards")
    run = ShardRun(engine.kind, engine.workers)
    merger = InOrder(job)
    for shard in shards:
        saved = _load_shard(folder, shard, fingerprint)
        if saved is not None:
            merger.add(shard.index, saved)
            run.resumed.append(shard.index)
    todo = [s for s in shards if s.index not in run.resumed]
    engine.history.append(run)
    bar = progress_bar(range(len(todo)), desc, progress=progress, unit="shard")
    if todo:
        for result in engine.pool().run(job, todo, run):
            run.shards.append((result.index, result.worker, result.seconds,
                               state_bytes(result.states)))
            if folder is not None:
                save_atomic({"fingerprint": fingerprint, "states": result.states},
                            folder / f"shard-{result.index:06d}.pt")
            merger.add(result.index, result.states)
            bar.update(1)
            bar.set_postfix_str(f"{_size(run.bytes_per_shard)}/shard")
    bar.close()
    if progress is not False:
        bar.write(f"{desc}: {run.summary()}", file=sys.stderr)
    return merger.merged(len(shards))


def state_bytes(state: Any) -> int:
    """Bytes of a state dict: its tensors' data, and the pickle of everything else.

    >>> import torch
    >>> state_bytes({"counts": torch.zeros(10, dtype=torch.int32), "total": 5}) >= 40
    True
    """
    import torch

    if isinstance(state, torch.Tensor):
        return state.nbytes
    if isinstance(state, dict):
        return sum(state_bytes(k) + state_bytes(v) for k, v in state.items())
    if isinstance(state, (list, tuple)):
        return sum(state_bytes(v) for v in state)
    return len(pickle.dumps(state))


class InOrder:
    """Merges shards' states in shard order as they come in, whatever order that is."""

    def __init__(self, job: ShardJob):
        self.job, self.waiting, self.next, self.result = job, {}, 0, None

    def add(self, index: int, states: dict) -> None:
        self.waiting[index] = states
        while self.next in self.waiting:
            states, part = self.waiting.pop(self.next), self.job.fresh_stats()
            for name, statistic in part.items():
                statistic.load_state_dict(states[name])
            self.result = part if self.result is None else {
                n: self.result[n].merge(part[n]) for n in self.result}
            self.next += 1

    def merged(self, count: int) -> dict[str, Any]:
        if self.next != count:
            raise RuntimeError(f"merged {self.next} of {count} shards")
        return self.result


def _load_shard(folder: Path | None, shard: Shard, fingerprint: str) -> dict | None:
    path = None if folder is None else folder / f"shard-{shard.index:06d}.pt"
    if path is None or not path.is_file():
        return None
    import torch

    saved = torch.load(path, weights_only=False)
    if saved.get("fingerprint") != fingerprint:
        raise InputError(f"shard checkpoint {path} belongs to another run (model, layers, "
                         "dataset, options or shard size differ): delete its folder or "
                         "choose another checkpoint path")
    return saved["states"]


def shard_error(job: ShardJob, shard: Shard, error: BaseException) -> InputError:
    """The one-line error of a shard whose data or statistics failed, naming its images."""
    batch_size = job.options.get("batch_size", 32)
    first = shard.batches.start * batch_size
    last = min(len(job.dataset), shard.batches.stop * batch_size) - 1
    return InputError(f"shard {shard.index} (images {first}-{last}) failed: {error}")


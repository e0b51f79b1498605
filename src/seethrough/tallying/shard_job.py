"""One shard of a ``tally`` pass as a self-contained job a worker process can run.

A ``ShardJob`` holds what every shard shares (the model, the layers, the dataset, the
statistics as they were before the pass, and ``tally``'s options); ``job.run(shard)`` runs
``tally`` on that shard's range of batches with fresh copies of the statistics and returns
only their state dicts, the one thing that travels back to the driver. A job is sent to a
worker once and run there for many shards, so the model is loaded once per worker.

Every shard runs on ``threads`` torch threads, wherever it runs, so that a shard's numbers do
not depend on the machine's core count or on which worker ran it.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from seethrough.tallying.stats import Moments
    >>> job = ShardJob(nn.Sequential(nn.Conv2d(3, 2, 1)), ["0"], [torch.ones(3, 4, 4)] * 6,
    ...                {"m": Moments("0")}, {"batch_size": 2, "progress": False})
    >>> job.run(Shard(0, range(0, 2))).states["m"]["count"]      # 2 batches of 2 images, 16 px
    64
"""
from __future__ import annotations

import copy
import hashlib
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = ["Shard", "ShardJob", "ShardResult", "seed_for"]


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of a pass: the batches ``batches`` (a range of batch numbers)."""

    index: int
    batches: range


@dataclass
class ShardResult:
    """What a worker sends back for one shard: the statistics' state dicts and where and how
    long it ran."""

    index: int
    states: dict[str, dict]
    seconds: float
    worker: str = field(default_factory=lambda: f"pid {os.getpid()}")


def seed_for(seed: int, index: int) -> int:
    """A 63-bit seed for dataset item ``index`` derived from ``seed``, the same wherever and in
    whatever batch the item is processed.

    >>> seed_for(0, 5) == seed_for(0, 5) != seed_for(0, 6)
    True
    """
    digest = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


class ShardJob:
    """What every shard of one ``tally`` pass shares (see module doc).

    Args:
        model: the model (or ``None`` when statistics need no model).
        layers: the layers the statistics read.
        dataset: the dataset (a map-style dataset, indexed by dataset index).
        stats: the statistics before the pass; each shard starts from a copy of them.
        options: ``tally``'s other keyword arguments (``batch_size``, ``collate`` ...), which
            must pickle: module-level functions and ``functools.partial`` of them.
        threads: torch threads each shard runs on.
    """

    def __init__(self, model: nn.Module | None, layers: Sequence[str], dataset,
                 stats: Mapping[str, Any], options: Mapping[str, Any], threads: int = 1):
        self.model, self.layers, self.dataset = model, list(layers), dataset
        self.stats, self.options, self.threads = dict(stats), dict(options), threads

    def fresh_stats(self) -> dict[str, Any]:
        """Copies of the statistics as they were before the pass (sharing the model and the
        dataset, which are never copied)."""
        memo = {id(self.model): self.model, id(self.dataset): self.dataset}
        return copy.deepcopy(self.stats, memo)

    def run(self, shard: Shard) -> ShardResult:
        """Run ``tally`` on ``shard``'s batches; return the statistics' state dicts."""
        from seethrough.tallying import tally

        started = time.perf_counter()
        threads = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            stats = tally(self.model, self.layers, self.dataset, self.fresh_stats(),
                          shard=shard.batches, **self.options)
        finally:
            torch.set_num_threads(threads)
        return ShardResult(shard.index, {name: s.state_dict() for name, s in stats.items()},
                           time.perf_counter() - started)

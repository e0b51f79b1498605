"""The workers of ``Engine("ray")``: Ray actors that keep a pass's job (model, dataset,
statistics) and run its shards.

The job goes into Ray's object store once per pass; an actor fetches it the first time it runs
a shard of that pass. Shards are handed out one at a time to whichever actor is free, and the
results come back as they finish. An actor that dies (killed, out of memory, its machine gone)
is restarted by Ray and its shard run again (``max_restarts`` / ``max_task_retries``).

Ray is optional (``pip install seethrough[ray]``) and imported only here.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence

from seethrough.errors import InputError, SeethroughError
from seethrough.tallying.engine import RETRIES, ShardRun, shard_error
from seethrough.tallying.shard_job import Shard, ShardJob, ShardResult

__all__ = ["RayPool"]

#: seconds to wait for every actor to start (placed on a machine, torch imported)
PLACEMENT_TIMEOUT = 120


def _import_ray():
    try:
        import ray
    except ImportError:
        raise InputError("engine='ray' needs Ray: pip install 'ray>=2.9' (or seethrough[ray])") from None
    return ray


class _Worker:
    """The actor: the current pass's job, loaded once, and its shards run on demand."""

    def __init__(self, threads: int):
        import torch

        torch.set_num_threads(threads)
        self.key, self.job = None, None

    def ready(self) -> bool:
        return True

    def run(self, key: int, job_ref: list, shard: Shard) -> ShardResult:
        import ray

        if key != self.key:
            self.key, self.job = key, ray.get(job_ref[0])
        result = self.job.run(shard)
        context = ray.get_runtime_context()
        restarted = " (restarted)" if context.was_current_actor_reconstructed else ""
        result.worker = f"actor {context.get_actor_id()[:8]}{restarted}"
        return result


class RayPool:
    """``workers`` Ray actors, kept across passes (see module doc).

    Args:
        workers: actors to start.
        address: ``"auto"``, ``"HOST:PORT"``, or ``None``: start Ray on this machine (with
            this process's ``sys.path``, so that models and statistics defined in the user's
            modules load in the workers).
        threads: torch threads per actor (and the CPUs it asks Ray for, at most its share).
    """

    def __init__(self, workers: int, address: str | None = None, threads: int = 1):
        ray = _import_ray()
        self.started_ray = False
        if not ray.is_initialized():
            if address is None:
                path = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))
                ray.init(num_cpus=max(workers * threads, os.cpu_count() or 1),
                         include_dashboard=False, log_to_driver=False,
                         runtime_env={"env_vars": {"PYTHONPATH": path}})
            else:
                try:
                    ray.init(address=address, log_to_driver=False)
                except ConnectionError as error:
                    raise InputError(f"no Ray cluster at {address!r} ({error}): start one with "
                                     "`ray start --head` or give its HOST:PORT") from None
            self.started_ray = True
        cpus = min(float(threads), ray.cluster_resources().get("CPU", workers) / workers)
        actor = ray.remote(num_cpus=cpus, max_restarts=RETRIES, max_task_retries=RETRIES,
                           scheduling_strategy="SPREAD")(_Worker)
        self.actors = [actor.remote(threads) for _ in range(workers)]
        self.passes = 0
        _, waiting = ray.wait([a.ready.remote() for a in self.actors], num_returns=workers,
                              timeout=PLACEMENT_TIMEOUT)
        if waiting:
            self.close()
            raise SeethroughError(
                f"Ray placed {workers - len(waiting)} of {workers} workers of {cpus:g} CPU in "
                f"{PLACEMENT_TIMEOUT} s (cluster CPUs free: "
                f"{ray.available_resources().get('CPU', 0):g}): ask for fewer workers, add "
                "machines, or close other engines")

    def run(self, job: ShardJob, shards: Sequence[Shard], record: ShardRun) -> Iterator[ShardResult]:
        ray = _import_ray()
        self.passes += 1
        job_ref, queue, running = ray.put(job), list(shards), {}
        restarted: set[str] = set()

        def hand_out(actor) -> None:
            shard = queue.pop(0)
            running[actor.run.remote(self.passes, [job_ref], shard)] = (actor, shard)

        for actor in self.actors[:len(queue)]:
            hand_out(actor)
        while running:
            [ready], _ = ray.wait(list(running), num_returns=1)
            actor, shard = running.pop(ready)
            try:
                result = ray.get(ready)
            except ray.exceptions.RayTaskError as error:
                raise shard_error(job, shard, error.cause) from None
            except ray.exceptions.RayActorError as error:
                raise SeethroughError(f"a Ray worker died {RETRIES + 1} times running shard "
                                      f"{shard.index}: {error}") from None
            if result.worker.endswith("(restarted)") and result.worker not in restarted:
                restarted.add(result.worker)
                record.retried += 1
            if queue:
                hand_out(actor)
            yield result

    def close(self) -> None:
        ray = _import_ray()
        for actor in self.actors if ray.is_initialized() else []:
            ray.kill(actor)
        self.actors = []
        if self.started_ray:
            ray.shutdown()

"""The workers of ``Engine("local")``: this process, or spawned processes of this machine.

Each pool's ``run(job, shards, record)`` yields one ``ShardResult`` per shard as shards finish.
A process pool writes the job (model, dataset, statistics) to a file once per pass; each
process reads it once and runs many shards. A process that dies breaks the pool: a new pool
runs the unfinished shards again, up to ``RETRIES`` times.
"""
from __future__ import annotations

import pickle
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from seethrough.errors import SeethroughError
from seethrough.tallying.engine import RETRIES, ShardRun, shard_error
from seethrough.tallying.shard_job import Shard, ShardJob, ShardResult

__all__ = ["InProcessPool", "ProcessPool"]


class InProcessPool:
    """Runs every shard here, in order."""

    def run(self, job: ShardJob, shards: Sequence[Shard], record: ShardRun) -> Iterator[ShardResult]:
        for shard in shards:
            try:
                result = job.run(shard)
            except Exception as error:
                raise shard_error(job, shard, error) from error
            result.worker = "this process"
            yield result

    def close(self) -> None:
        pass


_JOBS: dict[str, ShardJob] = {}  # in a worker process: the job of the current pass, by file


def _run_in_worker(job_file: str, shard: Shard) -> ShardResult:
    if job_file not in _JOBS:
        _JOBS.clear()
        _JOBS[job_file] = pickle.loads(Path(job_file).read_bytes())
    return _JOBS[job_file].run(shard)


class ProcessPool:
    """``workers`` spawned processes of this machine, kept across passes."""

    def __init__(self, workers: int, threads: int = 1):
        self.workers, self.threads = workers, threads
        self.folder = tempfile.TemporaryDirectory(prefix="seethrough-jobs-")
        self.executor: ProcessPoolExecutor | None = None
        self.passes = 0

    def _executor(self) -> ProcessPoolExecutor:
        if self.executor is None:
            import multiprocessing

            self.executor = ProcessPoolExecutor(self.workers,
                                                mp_context=multiprocessing.get_context("spawn"))
        return self.executor

    def run(self, job: ShardJob, shards: Sequence[Shard], record: ShardRun) -> Iterator[ShardResult]:
        self.passes += 1
        job_file = Path(self.folder.name) / f"job-{self.passes}.pkl"
        job_file.write_bytes(pickle.dumps(job))
        todo, breaks = {s.index: s for s in shards}, 0
        try:
            while todo:
                futures = {self._executor().submit(_run_in_worker, str(job_file), s): s
                           for s in todo.values()}
                try:
                    while futures:
                        done, _ = wait(futures, return_when=FIRST_COMPLETED)
                        for future in done:
                            shard = futures.pop(future)
                            try:
                                result = future.result()
                            except BrokenProcessPool:
                                raise
                            except Exception as error:
                                raise shard_error(job, shard, error) from error
                            del todo[shard.index]
                            yield result
                except BrokenProcessPool:
                    breaks += 1
                    record.retried += 1
                    self.executor.shutdown(wait=False, cancel_futures=True)
                    self.executor = None
                    if breaks > RETRIES:
                        raise SeethroughError(
                            f"worker processes died {breaks} times (shards {sorted(todo)} left): "
                            "out of memory? try fewer workers or a smaller batch_size (and a script that "
                            "starts workers needs `if __name__ == '__main__':`)") from None
        finally:
            job_file.unlink(missing_ok=True)

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)
            self.executor = None
        self.folder.cleanup()

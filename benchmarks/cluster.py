"""Cluster benchmark: one dissection pass on 1 against 2 workers, on this machine's processes
and on Ray; parallel efficiency, cost per image and bytes each shard sends back.

The pass is Network Dissection's first pass (per-unit quantile sketches and top images of
``layer3`` and ``layer4``) of a ResNet-18 (random weights: the cost is the same) over
ConceptWorld images at 224 px, the model's forward dominating. The images are generated once
into memory before timing, so the pass measures the model and the statistics, not the data.
Every variant runs each shard on one torch thread; the engines are started and warmed (model
loaded in each worker) before timing, and the rows are the best of interleaved rounds
(``common.interleaved_best``). Parallel efficiency = T(1 worker) / (2 x T(2 workers)) of the
same engine. The one-process rows are the plain loop (no shards) on 1 and 2 threads.
Startup (worker processes importing torch, Ray starting) is timed once, apart.

    python benchmarks/cluster.py [--images 256] [--rounds 3] [--quick]
"""
from __future__ import annotations

import argparse
import datetime
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import interleaved_best, markdown_table

from seethrough.allocator import keep_freed_memory
from seethrough.atomic import write_text_atomic

HERE = Path(__file__).parent
LAYERS = ["layer3", "layer4"]
BATCH = 16
SHARD_BATCHES = 2


class Images(torch.utils.data.Dataset):
    """ConceptWorld images and labels, generated once, as a concept dataset."""

    def __init__(self, count: int, size: int):
        from seethrough.data import ConceptWorld

        world = ConceptWorld("val", length=count, size=size)
        self.categories = world.categories
        self.samples = [world[i] for i in range(count)]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        return self.samples[index]


def thresholds_pass(model, data, engine) -> None:
    from functools import partial

    from seethrough.dissection.labels import Vocabulary, collate
    from seethrough.dissection.run import unit_maps
    from seethrough.dissection.stats import LayerQuantiles, LayerTopImages
    from seethrough.tallying import tally

    stats = {**{f"sketch/{n}": LayerQuantiles(n, 4096) for n in LAYERS},
             **{f"top/{n}": LayerTopImages(n, 8) for n in LAYERS}}
    vocabulary = Vocabulary(data.categories)
    tally(model, LAYERS, data, stats, batch_size=BATCH, collate=partial(collate, vocabulary=vocabulary),
          activations=unit_maps, engine=engine, progress=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="64 images, 1 round")
    args = parser.parse_args()
    if args.quick:
        args.images, args.rounds = 64, 1
    keep_freed_memory()
    import torchvision

    from seethrough.tallying import Engine

    model = torchvision.models.resnet18().eval()
    data = Images(args.images, 224)
    images = torch.stack([s["image"] for s in data.samples])

    def forward(threads: int) -> None:
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        with torch.no_grad():
            for start in range(0, len(images), BATCH):
                model(images[start : start + BATCH])
        torch.set_num_threads(previous)

    import ray

    # every engine stays up for the interleaved rounds, one running at a time: Ray gets room
    # for all of their actors (1 + 2 of one CPU each)
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False)
    startup = {}
    engines = {}
    for kind in ("local", "ray"):
        for workers in (1, 2):
            if kind == "local" and workers == 1:
                engine = Engine("local", shard_batches=SHARD_BATCHES)  # in this process
            else:
                engine = Engine(kind, workers=workers, shard_batches=SHARD_BATCHES)
            started = time.perf_counter()
            thresholds_pass(model, data, engine)  # starts and warms the workers
            startup[(kind, workers)] = time.perf_counter() - started
            print(f"started {kind} x {workers}: {startup[(kind, workers)]:.1f} s", file=sys.stderr)
            engines[(kind, workers)] = engine

    def plain(threads: int):
        def run():
            previous = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                thresholds_pass(model, data, "local")
            finally:
                torch.set_num_threads(previous)
        return run

    functions = {"forward, 1 thread": lambda: forward(1), "forward, 2 threads": lambda: forward(2),
                 "one process, 1 thread": plain(1), "one process, 2 threads": plain(2)}
    for (kind, workers), engine in engines.items():
        functions[f"{kind}, {workers} worker{'s' * (workers > 1)}"] = (
            lambda engine=engine: thresholds_pass(model, data, engine))
    best = interleaved_best(functions, rounds=args.rounds)
    bytes_per_shard = {key: engine.history[-1].bytes_per_shard for key, engine in engines.items()}
    for engine in engines.values():
        engine.close()
    ray.shutdown()

    forward_one = best["forward, 1 thread"]
    rows = []
    for name, seconds in best.items():
        row = {"variant": name, "seconds": f"{seconds:.2f}",
               "ms / image": f"{1000 * seconds / args.images:.1f}",
               "x forward (1 thread)": f"{seconds / forward_one:.2f}"}
        for (kind, workers) in engines:
            if name.startswith(f"{kind}, {workers} worker"):
                row["bytes / shard"] = f"{bytes_per_shard[(kind, workers)] / 2**20:.2f} MiB"
                row["startup s"] = f"{startup[(kind, workers)] - seconds:.1f}"
                if workers == 2:
                    one = best[f"{kind}, 1 worker"]
                    row["parallel efficiency"] = f"{one / (2 * seconds):.2f}"
        rows.append(row)
    columns = ["variant", "seconds", "ms / image", "x forward (1 thread)", "parallel efficiency",
               "bytes / shard", "startup s"]
    shards = -(-args.images // BATCH) // SHARD_BATCHES
    title = (f"# Cluster benchmark ({datetime.date.today()})\n\n"
             f"Network Dissection's first pass (quantile sketches of 4096 bins and top-8 images of "
             f"{', '.join(LAYERS)}: {256 + 512} units) of a ResNet-18 over {args.images} "
             f"ConceptWorld images at 224 px, batches of {BATCH}, {shards} shards of "
             f"{SHARD_BATCHES} batches; one torch thread per worker; best of {args.rounds} "
             f"interleaved rounds; {platform.processor() or platform.machine()}, "
             f"{torch.get_num_threads()} threads, torch {torch.__version__}. 'startup s': the "
             f"first (cold) pass minus a warm one: worker processes starting, importing torch "
             f"and loading the model (and Ray starting).\n\n")
    table = title + markdown_table(rows, columns) + "\n"
    print(table)
    name = f"cluster{'-quick' if args.quick else ''}-{datetime.date.today()}.md"
    write_text_atomic(HERE / "results" / name, table)


if __name__ == "__main__":
    main()

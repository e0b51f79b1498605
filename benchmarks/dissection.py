"""Benchmark: Network Dissection against the model's plain forward pass over the same data.

Prints markdown tables: images per second of the forward pass alone, of the whole dissection
(pass 1: activations + quantile sketch, kept in the cache; pass 2: IoU counts from the cache),
their ratio, and peak memory (growth of the peak RSS of a fresh process while it dissects) as
the dataset grows. The images are generated before timing, so ConceptWorld's drawing is not counted.
The forward pass alone runs on the images as given; ``dissect`` feeds the model channels-last
images (``seethrough.layout``), which is part of why it can cost less than 1x: the column
"channels-last forward / forward" shows how much of the ratio the layout alone buys. Times are
the best of 7 interleaved rounds (each round runs every variant once), so that a slow spell of
the machine hits all variants alike.

    python benchmarks/dissection.py [--quick]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from seethrough.allocator import keep_freed_memory

MODELS = {
    # name: (layers, image size)
    "conceptnet": (None, 64),
    "mobilenet_v2": (["features.3", "features.6", "features.10", "features.13", "features.16"], 112),
}


class Frozen(torch.utils.data.Dataset):
    def __init__(self, dataset):
        self.samples = [dataset[i] for i in range(len(dataset))]
        self.categories = dataset.categories

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        return self.samples[i]


def load(name):
    from seethrough.errors import SeethroughError
    from seethrough.models import load_model

    try:
        return load_model(name)
    except (ImportError, SeethroughError) as error:  # conceptnet weights may not be there
        print(f"(skipping {name}: {error})", file=sys.stderr)
        return None


def interleaved_best(functions: dict, repeat: int = 7) -> dict:
    """Best wall time of each function over ``repeat`` rounds that run every function once in
    turn, so that a slow spell of the machine hits all of them alike (ratios are what count)."""
    best = dict.fromkeys(functions, float("inf"))
    for _ in range(repeat):
        for key, fn in functions.items():
            start = time.perf_counter()
            fn()
            best[key] = min(best[key], time.perf_counter() - start)
    return best


def speed(name, images, batch_size=50, repeat=7):
    from seethrough.data import ConceptWorld
    from seethrough.dissection import dissect
    from seethrough.dissection.report import default_layers

    model = load(name)
    if model is None:
        return None
    layers, size = MODELS[name]
    layers = layers or default_layers(model)[-3:]
    data = Frozen(ConceptWorld("val", length=images, size=size))
    batches = [torch.stack([data[i]["image"] for i in range(s, min(images, s + batch_size))])
               for s in range(0, images, batch_size)]

    def forward(inputs=batches):
        with torch.no_grad():
            for x in inputs:
                model(x)

    channels_last = [x.contiguous(memory_format=torch.channels_last) for x in batches]
    run = lambda **o: dissect(model, layers, data, batch_size=batch_size, progress=False, **o)
    thresholds = {k: v.thresholds for k, v in run().layers.items()}  # also warms up
    best = interleaved_best({
        "forward": forward, "forward_cl": lambda: forward(channels_last), "total": run, "fp16": lambda: run(cache_dtype=torch.float16),
        "second": lambda: run(thresholds=thresholds, cache=False)}, repeat)
    forward_time = best["forward"]
    return {"model": name, "layers": len(layers), "images": images, "size": size,
            "forward img/s": images / forward_time, "dissect img/s": images / best["total"],
            "channels-last forward / forward": best["forward_cl"] / forward_time,
            "total / forward": best["total"] / forward_time,
            "fp16 cache / forward": best["fp16"] / forward_time,
            "IoU pass alone / forward": best["second"] / forward_time}


def peak_memory(name, images):
    """Growth of peak RSS (MiB) while ``dissect`` runs on ``images`` generated on the fly, in a
    fresh process (set-up not counted: model loading, ConceptWorld's texture tables)."""
    code = (
        "import sys, torch\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from common import peak_memory\n"
        "torch.set_num_threads(2)\n"
        "from seethrough.data import ConceptWorld\n"
        "from seethrough.dissection import dissect\n"
        "from seethrough.dissection.report import default_layers\n"
        "from seethrough.models import load_model\n"
        f"layers, size = {MODELS[name]!r}\n"
        f"model = load_model({name!r})\n"
        "layers = layers or default_layers(model)[-3:]\n"
        f"data = ConceptWorld('val', length={images}, size=size)\n"
        "data[0]\n"
        "grown = peak_memory(lambda: dissect(model, layers, data, batch_size=50, progress=False))\n"
        "print(grown / 2**20)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True,
                         text=True)
    if out.returncode:
        return float("nan")
    return float(out.stdout.strip().splitlines()[-1])


def markdown(rows):
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        lines.append("| " + " | ".join(f"{v:.2f}" if isinstance(v, float) else str(v)
                                       for v in row.values()) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer images")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    torch.set_num_threads(2)
    keep_freed_memory()
    n = 100 if args.quick else 400
    rows = [r for r in (speed(name, n) for name in MODELS) if r]
    print("## Dissection speed (2 CPU threads)\n")
    print(markdown(rows))
    sizes = (100, 1500) if args.quick else (100, 1500, 4500)
    memory = []
    for name in MODELS:
        if load(name) is None:
            continue
        row = {"model": name}
        for size in sizes:
            row[f"peak MiB @ {size} images"] = peak_memory(name, size)
        memory.append(row)
    print("\n## Peak memory as the dataset grows\n")
    print("dissect keeps activations in memory up to cache_memory (256 MiB), then on disk, so the "
          "peak grows until the cache reaches that budget and is flat after.\n")
    print(markdown(memory))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"speed": rows, "memory": memory}, f, indent=1)


if __name__ == "__main__":
    main()

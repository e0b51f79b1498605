"""Benchmark: Network Dissection against the model's plain forward pass over the same data.

Prints markdown tables: images per second of the forward pass alone, of the whole dissection
(pass 1: activations + quantile sketch, kept in the cache; pass 2: IoU counts from the cache),
their ratios, and peak memory (growth of the peak RSS of a fresh process while it dissects) as
the dataset grows. The images are generated before timing, so ConceptWorld's drawing is not counted.

Each ratio is given against two floors, the model's forward pass alone over the same batches:
``x plain fwd`` on the images as given, and ``x channels-last fwd`` on the same images
channels-last, the fastest floor of the model. ``dissect`` feeds the model channels-last images
(``seethrough.layout``), so a ratio below 1 against the plain floor can hide overhead that the
channels-last column shows. Times are the best of ``--rounds`` (default 7) interleaved rounds
(each round runs every variant once, ``common.interleaved_best``), so that a slow spell of the
machine hits all variants alike.

    python benchmarks/dissection.py [--quick] [--rounds 7] [--images N] [--memory-sizes 100,1500]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import interleaved_best, markdown_table

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


#: the floors: the model's forward pass alone on the batches as given and channels-last
FLOORS = ("plain", "channels-last")


def speed(name, images, batch_size=50, rounds=7):
    from seethrough.core.layer_table import layers_by_resolution
    from seethrough.data import ConceptWorld
    from seethrough.dissection import dissect

    model = load(name)
    if model is None:
        return None
    layers, size = MODELS[name]
    layers = layers or layers_by_resolution(model)[-3:]  # as ``seethrough dissect`` picks
    data = Frozen(ConceptWorld("val", length=images, size=size))
    batches = [torch.stack([data[i]["image"] for i in range(s, min(images, s + batch_size))])
               for s in range(0, images, batch_size)]

    def forward(inputs=batches):
        with torch.no_grad():
            for x in inputs:
                model(x)

    channels_last = [x.contiguous(memory_format=torch.channels_last) for x in batches]

    def run(**options):
        return dissect(model, layers, data, batch_size=batch_size, progress=False, **options)

    thresholds = {k: v.thresholds for k, v in run().layers.items()}  # also warms up
    forward()  # warm-up (oneDNN picks kernels per shape and layout)
    forward(channels_last)
    best = interleaved_best({
        "plain": forward, "channels-last": lambda: forward(channels_last),
        "dissect": run, "fp16 cache": lambda: run(cache_dtype=torch.float16),
        "IoU pass alone": lambda: run(thresholds=thresholds, cache=False)}, rounds)
    row = {"model": name, "layers": len(layers), "images": images, "size": size,
           "plain fwd img/s": images / best["plain"],
           "channels-last fwd img/s": images / best["channels-last"],
           "dissect img/s": images / best["dissect"]}
    for variant in ("dissect", "fp16 cache", "IoU pass alone"):
        for floor in FLOORS:
            label = f"x {floor} fwd" if variant == "dissect" else f"{variant} x {floor} fwd"
            row[label] = best[variant] / best[floor]
    return row


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
        "from seethrough.core.layer_table import layers_by_resolution\n"
        "from seethrough.models import load_model\n"
        f"layers, size = {MODELS[name]!r}\n"
        f"model = load_model({name!r})\n"
        "layers = layers or layers_by_resolution(model)[-3:]\n"
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
    return markdown_table(rows, list(rows[0]) if rows else ["model"])


def sizes(text: str) -> tuple[int, ...]:
    return tuple(int(n) for n in text.split(",") if n.strip())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer images")
    parser.add_argument("--rounds", type=int, default=7,
                        help="interleaved rounds; each variant's best round counts")
    parser.add_argument("--images", type=int,
                        help="images timed per model (default 400, --quick 100)")
    parser.add_argument("--memory-sizes", type=sizes,
                        help="comma-separated dataset sizes for the peak-memory table "
                             "(default 100,1500,4500, --quick 100,1500; '' skips it)")
    parser.add_argument("--models", default=",".join(MODELS),
                        help=f"comma-separated subset of {', '.join(MODELS)}")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    models = [name.strip() for name in args.models.split(",") if name.strip()]
    if unknown := [name for name in models if name not in MODELS]:
        parser.error(f"unknown model {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    torch.set_num_threads(2)
    keep_freed_memory()
    n = args.images or (100 if args.quick else 400)
    rows = [r for r in (speed(name, n, rounds=args.rounds) for name in models) if r]
    print(f"## Dissection speed (2 CPU threads, best of {args.rounds} interleaved rounds)\n")
    print(markdown(rows))
    memory_sizes = args.memory_sizes
    if memory_sizes is None:
        memory_sizes = (100, 1500) if args.quick else (100, 1500, 4500)
    memory = []
    for name in models if memory_sizes else ():
        if load(name) is None:
            continue
        row = {"model": name}
        for size in memory_sizes:
            row[f"peak MiB @ {size} images"] = peak_memory(name, size)
        memory.append(row)
    if memory:
        print("\n## Peak memory as the dataset grows\n")
        print("dissect keeps activations in memory up to cache_memory (256 MiB), then on disk, so "
              "the peak grows until the cache reaches that budget and is flat after.\n")
        print(markdown(memory))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"speed": rows, "memory": memory}, f, indent=1)


if __name__ == "__main__":
    main()

"""Representations benchmark: features, exact kNN, PCA and UMAP over a dataset, against the
model's own forward pass; peak memory of ``features`` as the dataset grows.

ConceptNet on 10,000 ConceptWorld images (its last layer, mean-pooled; target: the whole
pipeline under 60 s on 2 cores) and MobileNetV2 on 2,000 photo crops at 224 px. The images are
generated once into memory before timing, so generation is not counted. ``features`` and the
forward pass are timed as the best of interleaved rounds (``common.interleaved_best``); kNN
(every image against all, k = 5, cosine) is timed beside scikit-learn's brute-force
``NearestNeighbors`` (the same exact answer); PCA once; UMAP twice: its first call in the process
(which pays numba's one-time compilation, and is the one counted in the total) and again.

    python benchmarks/represent.py [--quick] [--rounds 3] [--memory-sizes 500,2000,8000]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import interleaved_best, markdown_table, peak_memory_in_fresh_process

from seethrough.allocator import keep_freed_memory

#: model -> (images, layer)
MODELS = {"conceptnet": (10_000, "features.block5"), "mobilenet_v2": (2_000, "net.features.18")}


def load_images(name: str, count: int) -> torch.Tensor:
    if name == "conceptnet":
        from seethrough.data import ConceptWorld
        from seethrough.models.train import generate

        images, _ = generate(ConceptWorld("val", length=count), progress=False)
        return images.float() / 255
    from seethrough.data.photos import photo_crops

    images, _, _ = photo_crops(-(-count // 7), size=224)
    return images[:count]


def forward(model, images: torch.Tensor, batch_size: int = 64):
    def run():
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                model(images[start:start + batch_size])
    return run


def speed(name: str, count: int, rounds: int) -> dict:
    from sklearn.neighbors import NearestNeighbors

    from seethrough.models import load_model
    from seethrough.represent import embed, features, neighbors

    model = load_model(name)
    layer = MODELS[name][1]
    images = load_images(name, count)
    best = interleaved_best({
        "forward": forward(model, images),
        "features": lambda: features(model, layer, images, batch_size=64, progress=False),
    }, rounds=rounds)
    feats = features(model, layer, images, batch_size=64, progress=False)
    everyone = torch.arange(len(feats))
    knn = interleaved_best({
        "knn": lambda: neighbors(feats, everyone, k=5, metric="cosine"),
        "sklearn": lambda: NearestNeighbors(n_neighbors=6, metric="cosine",
                                            algorithm="brute").fit(feats).kneighbors(feats),
    }, rounds=rounds)
    start = time.perf_counter()
    embed(feats, "pca")
    pca = time.perf_counter() - start
    start = time.perf_counter()
    embed(feats, "umap")
    first_umap = time.perf_counter() - start
    start = time.perf_counter()
    embed(feats, "umap")
    umap = time.perf_counter() - start
    total = best["features"] + knn["knn"] + pca + first_umap
    return {"model": name, "images": count, "layer": layer, "forward s": best["forward"],
            "features s": best["features"], "features x fwd": best["features"] / best["forward"],
            "kNN s": knn["knn"], "sklearn kNN s": knn["sklearn"],
            "kNN x sklearn": knn["knn"] / knn["sklearn"], "PCA s": pca,
            "UMAP first call s": first_umap, "UMAP s": umap, "total s": total,
            "total x fwd": total / best["forward"]}


def peak_memory(count: int) -> float:
    """Growth of peak RSS (MiB) while ``features`` pools ConceptNet's last layer over
    ``count`` ConceptWorld images generated on the fly, in a fresh process."""
    return peak_memory_in_fresh_process(
        "from seethrough.data import ConceptWorld\n"
        "from seethrough.models import load_model\n"
        "from seethrough.represent import features\n"
        "model = load_model('conceptnet')\n"
        f"data = ConceptWorld('val', length={count})\n"
        "data[0]",
        "features(model, 'features.block5', data, batch_size=64, progress=False)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the images")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--memory-sizes", default="500,2000,8000",
                        help="comma-separated dataset sizes for the memory table ('' skips)")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    torch.set_num_threads(2)
    keep_freed_memory()
    rows = [speed(name, count // 10 if args.quick else count, args.rounds)
            for name, (count, _) in MODELS.items()]
    columns = list(rows[0])
    print(f"## Representations speed (2 CPU threads, best of {args.rounds} interleaved rounds)\n")
    print(markdown_table(rows, columns))
    sizes = [int(n) for n in args.memory_sizes.split(",") if n.strip()]
    memory = [{"images": n, "peak MiB": peak_memory(n)} for n in sizes]
    if memory:
        print("\n## Peak memory of features (ConceptNet, mean-pooled block5)\n")
        print(markdown_table(memory, ["images", "peak MiB"]))
    if args.json:
        Path(args.json).write_text(json.dumps({"speed": rows, "memory": memory}, indent=1))


if __name__ == "__main__":
    main()

"""Occlusion benchmark: incremental inference (each window recomputes only what it reaches in
each layer, ``seethrough.attribution.incremental``) against full recompute (seethrough's
``incremental=False``) and Captum's ``Occlusion`` (full recompute), on the same model, image,
target, window, stride and baseline.

resnet18 and MobileNetV2 with ImageNet-size inputs (224 px), 16-px windows at stride 8 (27 x 27
= 729 positions), grey baseline 0.5, one image, batches of 32 positions for every library. The
models: MobileNetV2 with its real ImageNet weights (``seethrough.load_model``), resnet18 with
random weights (its cost does not depend on them). Each variant is timed as the best of
interleaved rounds (``common.interleaved_best``) beside the model's own forward pass on one
image; the table gives the speed-ups and the largest difference between the maps.

    python benchmarks/occlusion.py [--quick] [--rounds 3] [--json out.json]

``--quick``: 112 px and 1 round, to check that it runs.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).parent))
from common import interleaved_best, markdown_table

import seethrough
from seethrough.allocator import keep_freed_memory
from seethrough.data.photos import photo_crops

WINDOW, STRIDE, BATCH = 16, 8, 32


def build(name: str) -> torch.nn.Module:
    if name == "mobilenet_v2":
        return seethrough.load_model("mobilenet_v2")
    torch.manual_seed(0)
    return torchvision.models.resnet18().eval()


def run(name: str, size: int, rounds: int) -> dict:
    model = build(name)
    image = photo_crops(1, size=size)[0][:1].contiguous()
    with torch.no_grad():
        target = int(model(image).argmax(1))

    def ours(incremental: bool):
        return seethrough.attribute(model, image, target, method="occlusion", window=WINDOW,
                                    stride=STRIDE, baseline=0.5, incremental=incremental,
                                    batch_size=BATCH)

    functions = {"forward": lambda: model(image),
                 "incremental": lambda: ours(True), "full": lambda: ours(False)}
    try:
        import captum.attr

        functions["captum"] = lambda: captum.attr.Occlusion(model).attribute(
            image, sliding_window_shapes=(3, WINDOW, WINDOW), strides=(3, STRIDE, STRIDE),
            baselines=0.5, target=target, perturbations_per_eval=BATCH)
    except ImportError:
        pass
    with torch.no_grad():
        fast, full = ours(True), ours(False)
        best = interleaved_best(functions, rounds)
    positions = fast.raw.numel()
    row = {"model": name, "size": size, "positions": positions,
           "forward ms": best["forward"] * 1000,
           "incremental s": best["incremental"], "full s": best["full"],
           "x faster than full": best["full"] / best["incremental"],
           "incremental x forwards": best["incremental"] / (best["forward"] * positions),
           "max |difference| / max |map|": float((fast.maps - full.maps).abs().max()
                                                 / full.maps.abs().max()),
           "ran incrementally": fast.options["incremental"]}
    if "captum" in best:
        row["captum s"] = best["captum"]
        row["x faster than captum"] = best["captum"] / best["incremental"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="112 px, 1 round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    torch.set_num_threads(2)
    keep_freed_memory()
    size, rounds = (112, 1) if args.quick else (224, args.rounds)
    rows = [run(name, size, rounds) for name in ("resnet18", "mobilenet_v2")]
    print(f"## Occlusion by incremental inference (2 CPU threads, best of {rounds} interleaved "
          f"rounds; window {WINDOW}, stride {STRIDE})\n")
    print(markdown_table(rows, list(dict.fromkeys(k for row in rows for k in row))))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

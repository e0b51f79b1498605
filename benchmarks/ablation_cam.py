"""Ablation-CAM benchmark: seethrough's (the layers before the cut run once, then only the layers
after it for each batch of ablated channels) against pytorch-grad-cam's ``AblationCAM`` (the whole
network for each batch), on the same model, images, targets and layer.

resnet18 (``layer4``, 512 channels) and MobileNetV2 (``features.18``, 1280 channels), random
weights (MobileNetV2's BatchNorm statistics set on random images, so its maps are not float
noise), 224 px, 1 image (``--images 2`` for two), both with batches of 32 ablated channels
(pytorch-grad-cam's default). Each is timed as the best of interleaved rounds
(``common.interleaved_best``) beside the model's own forward pass on the same images; the table
gives the speed-up and the Pearson correlation of the two maps (min-max normalised, as in the
peer-agreement tests).

    python benchmarks/ablation_cam.py [--quick] [--rounds 3] [--images 1] [--json out.json]

``--quick``: 112 px and 1 round, to check that it runs.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # pytorch-grad-cam's per-batch progress bars

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).parent))
from common import interleaved_best, markdown_table

import seethrough
from seethrough.allocator import keep_freed_memory
from seethrough.trace import Trace

#: model -> layer
MODELS = {"resnet18": "layer4", "mobilenet_v2": "features.18"}
BATCH = 32


def build(name: str, size: int) -> torch.nn.Module:
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)()
    if name == "mobilenet_v2":  # at init its logits are ~1e-10: set BatchNorm statistics
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.momentum = None
        with torch.no_grad():
            model.train()(torch.rand(16, 3, size, size))
    return model.eval()


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Smallest per-image Pearson correlation of two map batches, each map min-max normalised."""
    a, b = a.reshape(len(a), -1).double(), b.reshape(len(b), -1).double()
    a = (a - a.amin(1, keepdim=True)) / (a.amax(1, keepdim=True) - a.amin(1, keepdim=True)).clamp(min=1e-12)
    b = (b - b.amin(1, keepdim=True)) / (b.amax(1, keepdim=True) - b.amin(1, keepdim=True)).clamp(min=1e-12)
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return float(((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp(min=1e-12)).min())


def cell(name: str, size: int, count: int, rounds: int) -> dict:
    import pytorch_grad_cam as pgc
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model, layer = build(name, size), MODELS[name]
    module = dict(model.named_modules())[layer]
    images = torch.rand(count, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        targets = model(images).argmax(1)
    maps = {}

    def ours():
        maps["ours"] = seethrough.attribute(model, images, targets, method="ablationcam",
                                            layer=layer, batch_size=BATCH)

    def theirs():
        with pgc.AblationCAM(model=model, target_layers=[module], batch_size=BATCH) as cam:
            maps["theirs"] = torch.from_numpy(cam(
                input_tensor=images, targets=[ClassifierOutputTarget(int(t)) for t in targets]))

    def forward():
        with torch.no_grad():
            model(images)

    best = interleaved_best({"forward": forward, "seethrough": ours, "pytorch-grad-cam": theirs},
                            rounds=rounds)
    channels = module.out_channels if hasattr(module, "out_channels") else None
    if channels is None:
        with torch.no_grad(), Trace(model, layer) as trace:
            model(images[:1])
        channels = trace[layer].output.shape[1]
    return {
        "model": name, "layer": layer, "channels": channels, "px": size, "images": count,
        "engine": maps["ours"].options["engine"],
        "forward ms": best["forward"] * 1e3,
        "seethrough s": best["seethrough"], "pytorch-grad-cam s": best["pytorch-grad-cam"],
        "speed-up": best["pytorch-grad-cam"] / best["seethrough"],
        "seethrough x fwd": best["seethrough"] / best["forward"],
        "peer passes": count * math.ceil(channels / BATCH),
        "correlation": correlation(maps["ours"].maps, maps["theirs"]),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="112 px, 1 round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", type=int, default=1)
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    torch.set_num_threads(2)
    keep_freed_memory()
    size, rounds = (112, 1) if args.quick else (224, args.rounds)
    rows = [cell(name, size, args.images, rounds) for name in MODELS]
    print(f"## Ablation-CAM: seethrough vs pytorch-grad-cam (2 CPU threads, best of {rounds} "
          f"interleaved rounds, batches of {BATCH} ablated channels)\n")
    print(markdown_table(rows, list(rows[0])))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

"""Feed-forward stylizers against optimising the same perceptual loss on the pixels.

Run: ``python benchmarks/stylize.py [--threads 2] [--sizes 128 224] [--steps 300] [--rounds 7]
[--opt-rounds 2] [--stylizers stained_glass eight_styles]``

Content: scikit-image's ``coffee`` and ``camera`` photos, held out from the stylizers' training
data (``astronaut``, ``cat``, ``rocket``, ConceptWorld), as one batch of two at each size. Loss:
each stylizer's own ``PerceptualLoss`` (MobileNetV2 from ``load_model("mobilenet_v2")``, the
layers and weights on its card), style Gram targets from the style image at the training size.
Baseline: the same loss optimised on the pixels with Adam (``--lr``, ``--steps``), starting
from the content images and clamped to [0, 1] after each step. Targets: (a) the stylizer's style
loss within 1.5x of the baseline's; (b) stylizing at least 500x faster than the baseline. Times
are best of ``--rounds`` calls (stylizer) and of ``--opt-rounds`` full runs (baseline),
interleaved (``common.interleaved_best``). A conditional stylizer is measured on each style.
"""
from __future__ import annotations

import argparse
import platform
import sys
from datetime import date
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from common import interleaved_best, markdown_table

from seethrough.allocator import keep_freed_memory
from seethrough.atomic import write_text_atomic
from seethrough.core.scope import run_scope
from seethrough.data.photos import center_crop_resize, sample_photos, to_tensor
from seethrough.featureviz.stylizers import PerceptualLoss, load_stylizer, style_images, stylize
from seethrough.featureviz.stylizers.training import LOSS_SETTINGS
from seethrough.models import load_model

RESULTS = Path(__file__).parent / "results"


def held_out(size: int) -> torch.Tensor:
    from skimage import data

    coffee, _ = sample_photos(["coffee"], size=size)
    camera = center_crop_resize(to_tensor(data.camera()), size)
    return torch.cat([coffee, camera[None]])


def optimise(loss: PerceptualLoss, content: torch.Tensor, grams: dict, steps: int,
             lr: float) -> torch.Tensor:
    """Adam on the pixels from the content images, clamped to [0, 1]."""
    pixels = content.clone().requires_grad_()
    optimizer = torch.optim.Adam([pixels], lr=lr)
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss(pixels, content, grams)["total"].sum().backward()
        optimizer.step()
        with torch.no_grad():
            pixels.clamp_(0, 1)
    return pixels.detach()


def measure(name: str, style: int, style_name: str, size: int, args, extractor) -> dict:
    stylizer = load_stylizer(name)
    settings = stylizer.settings
    loss = PerceptualLoss(extractor, **{key: settings[key] for key in LOSS_SETTINGS})
    image = style_images([style_name], size=256)[0]
    image = F.interpolate(image, size=settings["size"], mode="bilinear", antialias=True,
                          align_corners=False)
    content = held_out(size)
    grams = loss.style_grams(image)
    outputs = {}

    def run_stylizer():
        outputs["stylizer"] = stylize(stylizer, content, style)

    def run_optimisation():
        outputs["optimisation"] = optimise(loss, content, grams, args.steps, args.lr)

    best = interleaved_best({"stylizer": run_stylizer}, rounds=args.rounds, warmup=1)
    best.update(interleaved_best({"optimisation": run_optimisation}, rounds=args.opt_rounds))
    with torch.no_grad():
        terms = {key: loss(value, content, grams) for key, value in outputs.items()}
        start = loss(content, content, grams)
    return {"stylizer": name, "style": style_name, "size": size,
            "start style": float(start["style"].mean()),
            "stylizer style": float(terms["stylizer"]["style"].mean()),
            "optimisation style": float(terms["optimisation"]["style"].mean()),
            "style ratio": float(terms["stylizer"]["style"].mean()
                                 / terms["optimisation"]["style"].mean()),
            "stylizer content": float(terms["stylizer"]["content"].mean()),
            "optimisation content": float(terms["optimisation"]["content"].mean()),
            "stylizer s": best["stylizer"], "optimisation s": best["optimisation"],
            "speed ratio": best["optimisation"] / best["stylizer"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 224])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--opt-rounds", type=int, default=2)
    parser.add_argument("--stylizers", nargs="+", default=["stained_glass"])
    parser.add_argument("--out", type=Path,
                        default=RESULTS / f"stylize-{date.today().isoformat()}.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    extractor = load_model("mobilenet_v2")
    rows = []
    with run_scope(extractor, mode="eval"):
        for name in args.stylizers:
            for index, style_name in enumerate(load_stylizer(name).styles):
                for size in args.sizes:
                    rows.append(measure(name, index, style_name, size, args, extractor))
                    print(rows[-1], flush=True)
    columns = ["stylizer", "style", "size", "start style", "stylizer style", "optimisation style",
               "style ratio", "stylizer content", "optimisation content", "stylizer s",
               "optimisation s", "speed ratio"]
    for row in rows:
        row["stylizer s"] = f"{row['stylizer s']:.4f}"
        row["optimisation s"] = f"{row['optimisation s']:.1f}"
        row["speed ratio"] = f"{row['speed ratio']:.0f}"
    text = (f"# benchmarks/stylize.py {' '.join(sys.argv[1:])}, {date.today().isoformat()}\n\n"
            f"{platform.machine()}, {args.threads} threads, torch {torch.__version__}, "
            f"Python {platform.python_version()}\n\n"
            f"## Feed-forward stylizer vs Adam on the pixels ({args.steps} steps, lr {args.lr}), "
            f"held-out coffee + camera\n\n"
            "Losses are per-image means of the stylizer's own perceptual loss; times are for the "
            "batch of two, best of the rounds; targets: style ratio <= 1.5, speed ratio >= 500.\n\n"
            + markdown_table(rows, columns) + "\n")
    write_text_atomic(args.out, text)
    print(text)


if __name__ == "__main__":
    main()

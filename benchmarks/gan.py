"""The GAN family's costs as ratios of the generator's own forward (and backward) pass.

Run: ``python benchmarks/gan.py [--threads 2] [--samples 1000] [--rounds 5]``

On the shipped ``conceptworld_gan`` (and segmenter): (a) generation of ``--samples`` images in
batches of 250, against one forward pass of the same latents; (b) GAN Dissection of one layer
(``layer2``) over ``--samples`` generated images (``dissect`` on a ``GeneratedWorld``: generation,
the segmenter's labels and both tally passes), against the generator's forward over them; (c) one
inversion of 8 images (300 Adam steps on pixels plus ConceptNet features), against one
forward + backward of the generator on 8 latents, and per step. Best of ``--rounds``
interleaved rounds (``common.interleaved_best``).
"""
from __future__ import annotations

import argparse
import platform
import sys
from datetime import date
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import interleaved_best, markdown_table

from seethrough.allocator import keep_freed_memory
from seethrough.atomic import write_text_atomic
from seethrough.dissection import dissect
from seethrough.gan.inversion import invert
from seethrough.gan.quality import generate_images, sample_latents
from seethrough.gan.world import GeneratedWorld
from seethrough.models import load_model

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--out", type=Path, default=RESULTS / f"gan-{date.today().isoformat()}.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    generator = load_model("conceptworld_gan")
    segmenter = load_model("conceptworld_segmenter")
    classifier = load_model("conceptnet")
    latents = sample_latents(args.samples, generator.latent_dim, seed=0)
    eight = sample_latents(8, generator.latent_dim, seed=1)
    targets = generate_images(generator, sample_latents(8, generator.latent_dim, seed=2))

    def forward_all():
        with torch.no_grad():
            generator(latents)

    def forward_backward_eight():
        z = eight.clone().requires_grad_()
        generator(z).sum().backward()

    def dissect_layer():
        world = GeneratedWorld(generator, segmenter, length=args.samples, seed=3)
        dissect(generator, ["layer2"], world, progress=False)

    timed = interleaved_best({
        "forward": forward_all,
        "generation": lambda: generate_images(generator, latents),
        "dissection": dissect_layer,
        "forward+backward (8)": forward_backward_eight,
    }, rounds=args.rounds, warmup=1)
    timed.update(interleaved_best({"inversion": lambda: invert(
        generator, targets, steps=args.steps, classifier=classifier)}, rounds=2))
    rows = [
        {"task": f"generation of {args.samples} images (batches of 250)",
         "seconds": f"{timed['generation']:.3f}",
         "baseline": f"forward of {args.samples}: {timed['forward']:.3f} s",
         "ratio": f"{timed['generation'] / timed['forward']:.2f}"},
        {"task": f"GAN Dissection of layer2 over {args.samples} samples",
         "seconds": f"{timed['dissection']:.2f}",
         "baseline": f"forward of {args.samples}: {timed['forward']:.3f} s",
         "ratio": f"{timed['dissection'] / timed['forward']:.1f}"},
        {"task": f"inversion of 8 images, {args.steps} steps",
         "seconds": f"{timed['inversion']:.2f}",
         "baseline": f"forward+backward of 8: {timed['forward+backward (8)'] * 1000:.2f} ms",
         "ratio": f"{timed['inversion'] / timed['forward+backward (8)']:.0f} "
                  f"({timed['inversion'] / timed['forward+backward (8)'] / args.steps:.2f} per step)"},
    ]
    text = (f"# benchmarks/gan.py {' '.join(sys.argv[1:])}, {date.today().isoformat()}\n\n"
            f"{platform.machine()}, {args.threads} threads, torch {torch.__version__}, "
            f"Python {platform.python_version()}\n\n"
            "The shipped conceptworld_gan; best of the rounds. The ratio divides each task by the "
            "generator's own pass named beside it. Dissection includes generating the images and "
            "labelling them with the segmenter; inversion's per-step cost includes ConceptNet's "
            "feature term.\n\n"
            + markdown_table(rows, ["task", "seconds", "baseline", "ratio"]) + "\n")
    write_text_atomic(args.out, text)
    print(text)


if __name__ == "__main__":
    main()

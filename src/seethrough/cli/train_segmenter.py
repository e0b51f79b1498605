"""`seethrough train-segmenter`: reproduce the bundled ConceptWorld segmenter from a seed."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from seethrough.gan.segmenter_training import DEFAULTS

    parser = sub.add_parser(
        "train-segmenter",
        help="train the ConceptWorld segmenter (reproduces the shipped weights)",
        description="Train the ConceptWorld segmenter (shape, colour and texture per pixel, "
        "scene per image) from a seed and write OUT.safetensors and OUT.json (the card, with "
        "per-concept validation IoU). The defaults reproduce the shipped "
        "`conceptworld_segmenter` bit for bit (same thread count).",
    )
    parser.add_argument("--seed", type=int, default=0, help="initialisation and batch order")
    parser.add_argument("--out", default="segmenter-trained/conceptworld_segmenter",
                        help="path without suffix for the weights and card (default: %(default)s)")
    for key, value in DEFAULTS.items():
        parser.add_argument(f"--{key.replace('_', '-')}", type=type(value), default=value,
                            help=f"default: {value}")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from seethrough.atomic import ensure_writable
    from seethrough.gan.segmenter_training import DEFAULTS, train_segmenter

    options = {key: getattr(args, key) for key in DEFAULTS}
    ensure_writable(Path(args.out).parent)
    _, card = train_segmenter(seed=args.seed, out=args.out, **options)
    mean = card["mean_iou"]
    print(f"mean IoU: shape {mean['shape']:.3f}, colour {mean['colour']:.3f}, texture "
          f"{mean['texture']:.3f}; scene accuracy {card['scene_accuracy']:.2%} in "
          f"{card['train_seconds']:.0f} s; wrote {args.out}.safetensors and {args.out}.json")
    return 0

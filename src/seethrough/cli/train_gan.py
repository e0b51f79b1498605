"""`seethrough train-gan`: reproduce the shipped ConceptWorld GAN (or its encoder) from a seed.

Example:
    $ seethrough train-gan --seed 0 --out gan/conceptworld_gan
    $ seethrough train-gan --encoder --generator gan/conceptworld_gan --out gan/encoder
"""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from seethrough.gan.training import DEFAULTS

    parser = sub.add_parser(
        "train-gan",
        help="train the ConceptWorld GAN (reproduces the shipped weights), or its encoder",
        description="Train a DCGAN generator on ConceptWorld from a seed and write "
        "OUT.safetensors and OUT.json (the card, with a Fréchet distance on ConceptNet features "
        "and ConceptNet's class shares on generated images). The defaults reproduce the shipped "
        "conceptworld_gan bit for bit on the same thread count; an interrupted run resumes from "
        "OUT.checkpoint.pt (saved every 250 steps). With --encoder, train an encoder "
        "from images to latents for --generator instead (the shipped one's defaults).",
    )
    parser.add_argument("--seed", type=int, default=0, help="initialisation, batches and latents")
    parser.add_argument("--out", default="gan-trained/conceptworld_gan",
                        help="path without suffix for the weights and card (default: %(default)s)")
    for key, value in DEFAULTS.items():
        if isinstance(value, bool):
            parser.add_argument(f"--{key.replace('_', '-')}", action=argparse.BooleanOptionalAction,
                                default=value, help=f"default: {value}")
        else:
            parser.add_argument(f"--{key.replace('_', '-')}", type=type(value), default=value,
                                help=f"default: {value}")
    parser.add_argument("--measure-samples", type=int, default=2000,
                        help="generated and real images for the card's Fréchet distance "
                        "(default 2000)")
    parser.add_argument("--encoder", action="store_true",
                        help="train an encoder for --generator instead of a generator")
    parser.add_argument("--generator", default="conceptworld_gan",
                        help="--encoder: the generator (default: the shipped one, or a path)")
    parser.add_argument("--encoder-steps", type=int, default=3000, help="--encoder: steps")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from seethrough.atomic import ensure_writable
    from seethrough.gan.training import DEFAULTS, train_encoder_for, train_gan

    ensure_writable(Path(args.out).parent)
    if args.encoder:
        _, card = train_encoder_for(args.generator, out=args.out, seed=args.seed,
                                    steps=args.encoder_steps)
        print(f"encoder trained in {card['train_seconds']:.0f} s; wrote {args.out}.safetensors "
              f"and {args.out}.json")
        return 0
    if args.measure_samples < 2:
        from seethrough.errors import InputError

        raise InputError("--measure-samples must be at least 2 (a covariance needs two images)")
    _, card = train_gan(seed=args.seed, out=args.out, checkpoint=f"{args.out}.checkpoint.pt",
                        measure_samples=args.measure_samples,
                        **{key: getattr(args, key) for key in DEFAULTS})
    quality = card["quality"]
    print(f"Fréchet distance {quality['frechet_distance']:.1f} (noise "
          f"{quality['frechet_distance_noise']:.1f}, real vs real "
          f"{quality['frechet_distance_real_halves']:.1f}) in {card['train_seconds']:.0f} s; "
          f"wrote {args.out}.safetensors and {args.out}.json")
    return 0

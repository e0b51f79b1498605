"""`seethrough train`: reproduce the bundled ConceptNet (or the cheater) from a seed."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from seethrough.models.train import DEFAULTS

    parser = sub.add_parser(
        "train",
        help="train ConceptNet on ConceptWorld (reproduces the shipped weights)",
        description="Train ConceptNet on ConceptWorld from a seed and write OUT.safetensors and "
        "OUT.json (the model card). The defaults reproduce the shipped `conceptnet`; "
        "`--bias 1 --epochs 2 --n-train 6000` the shipped `conceptnet_cheater`.",
    )
    parser.add_argument("--seed", type=int, default=0, help="initialisation and batch order")
    parser.add_argument("--bias", type=float, default=0.0,
                        help="rate of the shortcut cue in the training world (0 = honest)")
    parser.add_argument("--shuffle-labels", action="store_true",
                        help="train on randomly permuted labels (a memorizer, for comparisons)")
    parser.add_argument("--out", default="conceptnet-trained/conceptnet",
                        help="path without suffix for the weights and card (default: %(default)s)")
    for key, value in DEFAULTS.items():
        parser.add_argument(f"--{key.replace('_', '-')}", type=type(value), default=value,
                            help=f"default: {value}")
    parser.add_argument("--stop-after", type=int, metavar="K",
                        help="stop after K epochs of the same run (its first K history entries)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from seethrough.atomic import ensure_writable
    from seethrough.errors import InputError
    from seethrough.models.train import DEFAULTS, train_conceptnet

    if not 0.0 <= args.bias <= 1.0:
        raise InputError(f"--bias must be in [0, 1], not {args.bias}")
    options = {key: getattr(args, key) for key in DEFAULTS}
    if min(options["n_train"], options["n_val"], options["epochs"]) < 1:
        raise InputError("--n-train, --n-val and --epochs must be at least 1")
    if args.stop_after is not None and args.stop_after < 1:
        raise InputError("--stop-after must be at least 1")
    ensure_writable(Path(args.out).parent)
    card = train_conceptnet(seed=args.seed, bias=args.bias, shuffle_labels=args.shuffle_labels,
                            out=args.out, stop_after=args.stop_after, **options)
    print(f"validation accuracy {card['val_accuracy']:.2%}"
          + (f", without the cue {card['val_unbiased_accuracy']:.2%}" if args.bias else "")
          + f" in {card['train_seconds']:.0f} s; wrote {args.out}.safetensors and {args.out}.json")
    return 0

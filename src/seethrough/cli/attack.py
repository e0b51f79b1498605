"""`seethrough attack MODEL [IMAGES ...] --method pgd --eps 8/255 --out DIR`: adversarial examples.

Example:
    $ seethrough attack conceptnet --conceptworld 16 --method pgd --eps 8/255 --out adv
    $ seethrough attack mobilenet_v2 photos/ --method fgsm --target least_likely --out adv
    $ seethrough attack conceptnet --conceptworld 64 --transfer conceptnet_cheater --out adv
"""
from __future__ import annotations

import argparse
from fractions import Fraction

METHODS = ("fgsm", "bim", "pgd", "mifgsm", "deepfool", "cw_l2", "fooling")


def budget(text: str) -> float:
    """A number or a fraction such as ``8/255``."""
    try:
        return float(Fraction(text))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"not a number or fraction: {text!r}") from None


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "attack",
        help="adversarial examples: fgsm, bim, pgd, mifgsm, deepfool, cw_l2, fooling",
        description="Attack MODEL on image files and folders (or --conceptworld N generated "
        "images) and write the adversarial images (PNG), a table per image (prediction, "
        "confidence, success, L-inf and L2 norms, steps), the saved result and a figure to "
        "--out; --transfer shows the adversarial images to other models.",
    )
    parser.add_argument("model", help="model name, e.g. conceptnet, mobilenet_v2, torchvision:ARCH")
    parser.add_argument("images", nargs="*", help="image files and folders (searched recursively)")
    parser.add_argument("--weights", help="local state-dict file for torchvision:ARCH")
    parser.add_argument("--conceptworld", type=int, help="attack N ConceptWorld images instead")
    parser.add_argument("--method", choices=METHODS, default="pgd")
    parser.add_argument("--eps", type=budget, help="perturbation budget, e.g. 8/255 (default: "
                        "the method's own)")
    parser.add_argument("--steps", type=int, help="iterations (default: the method's own)")
    parser.add_argument("--target", help="a class index, or least_likely (default: untargeted)")
    parser.add_argument("--transfer", nargs="+", default=[], metavar="MODEL",
                        help="also show the adversarial images to these models")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="output folder")
    parser.set_defaults(run=run)


def _data(args, model):
    from seethrough.errors import InputError

    size = model.input_size[-1] if hasattr(model, "input_size") else 224
    if args.conceptworld:
        if args.images:
            raise InputError("give image files or --conceptworld N, not both")
        from seethrough.data import ConceptWorld

        batch = ConceptWorld("val", length=args.conceptworld, size=size).batch()
        return batch["image"], batch["label"], [f"conceptworld-{i}" for i in range(len(batch["label"]))]
    if not args.images:
        raise InputError("give image files or folders, or --conceptworld N")
    from seethrough.data.images import load_images

    photos = load_images(args.images, size)
    return photos.images, None, [name.replace("/", "_") for name in photos.names]


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from seethrough.adversarial import attack
    from seethrough.atomic import ensure_writable, write_text_atomic
    from seethrough.errors import InputError
    from seethrough.models import load_model
    from seethrough.results import save_image_atomic

    if args.batch_size < 1 or (args.steps is not None and args.steps < 1):
        raise InputError("--batch-size and --steps must be positive")
    out = ensure_writable(args.out)
    model = load_model(args.model, weights=args.weights)
    others = {name: load_model(name) for name in args.transfer}
    images, labels, names = _data(args, model)
    target = args.target
    if target is not None and target != "least_likely":
        try:
            target = int(target)
        except ValueError:
            raise InputError(f"--target must be a class index or least_likely, not "
                             f"{args.target!r}") from None
    options = {key: value for key, value in (("eps", args.eps), ("steps", args.steps))
               if value is not None}
    result = attack(model, images, target, method=args.method, labels=labels,
                    batch_size=args.batch_size, seed=args.seed, **options)
    result.save(out / "result")
    frame = result.to_frame()
    frame.insert(0, "file", names)
    write_text_atomic(out / "attack.csv", frame.to_csv(index=False))
    for image, name in zip(result.images, names):
        save_image_atomic(image, out / "images" / f"{Path(name).stem}.png")
    if others:
        from seethrough.adversarial.transfer import transfer_matrix

        table = transfer_matrix({args.model: model, **others}, images,
                                labels if labels is not None else result.labels,
                                [args.method], batch_size=args.batch_size, seed=args.seed,
                                **options)
        write_text_atomic(out / "transfer.csv", table.to_csv(index=False))
        print(table[table.source == args.model].to_string(index=False))
    print(f"{args.method}: {result.success_rate:.0%} of {len(images)} images fooled; wrote {out}")
    return 0

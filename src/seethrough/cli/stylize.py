"""`seethrough stylize IMAGES --out OUT`: feed-forward style transfer, or train a stylizer.

Example:
    $ seethrough stylize cat.jpg --stylizer eight_styles --style waves --out styled
    $ seethrough stylize photos/ --style stained_glass:0.5 waves:0.5 --out mixed
    $ seethrough stylize --train my_style.png --steps 2000 --out my_stylizer
"""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "stylize",
        help="stylize images in one forward pass (shipped or your stylizer), or train one",
        description="Paint IMAGES (files or folders) in a style with a feed-forward stylizer "
        "(Johnson et al. 2016; the shipped stained_glass and eight_styles, or a folder written by "
        "--train). --style names a style, or mixes several as NAME:WEIGHT (conditional instance "
        "norm, Dumoulin et al. 2017). With --train STYLE_IMAGE, train a stylizer for that style "
        "on MobileNetV2's perceptual loss instead and save it (weights and card) in --out.",
    )
    parser.add_argument("images", nargs="*", help="images to stylize: files and folders")
    parser.add_argument("--stylizer", default="eight_styles",
                        help="stained_glass, eight_styles (default) or a saved stylizer's path")
    parser.add_argument("--style", nargs="+", default=None, metavar="NAME[:WEIGHT]",
                        help="the style (default: the first), or several NAME:WEIGHT to mix")
    parser.add_argument("--size", type=int, default=256,
                        help="images are centre-cropped square and resized to this side (default 256)")
    parser.add_argument("--train", metavar="STYLE_IMAGE", help="train a stylizer for this style")
    parser.add_argument("--steps", type=int, default=2000, help="--train: steps (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="--train: seed (default 0)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.set_defaults(run=run)


def _style(stylizer, given: list[str] | None):
    from seethrough.errors import InputError

    if not given:
        return 0
    if len(given) == 1 and ":" not in given[0]:
        return given[0]
    weights = [0.0] * len(stylizer.styles)
    for item in given:
        name, _, weight = item.partition(":")
        if name not in stylizer.styles:
            raise InputError(f"no style {name!r} in this stylizer; it has {', '.join(stylizer.styles)}")
        try:
            weights[stylizer.styles.index(name)] = float(weight or 1.0)
        except ValueError:
            raise InputError(f"--style {item}: the weight after ':' must be a number") from None
    return weights


def _train(args) -> int:
    from pathlib import Path

    from seethrough.data.images import load_images
    from seethrough.errors import InputError
    from seethrough.featureviz.stylizers import save_stylizer, train_stylizer

    if args.images:
        raise InputError("--train takes no images to stylize; run stylize again with the saved one")
    styles = load_images([args.train], 256)
    if len(styles) != 1:
        raise InputError(f"--train takes one style image; {args.train} holds {len(styles)}")
    name = Path(styles.names[0]).stem
    stylizer = train_stylizer(styles.images, styles=[name], steps=args.steps, seed=args.seed,
                              progress=True)
    path = save_stylizer(stylizer, Path(args.out) / f"stylizer_{name}",
                         {"command": f"seethrough stylize --train {args.train} --steps {args.steps} "
                                     f"--seed {args.seed}"})
    print(path)
    return 0


def run(args: argparse.Namespace) -> int:
    import sys

    from seethrough.atomic import ensure_writable
    from seethrough.cli.visualize import _output_names
    from seethrough.data.images import find_images, load_images
    from seethrough.errors import InputError
    from seethrough.featureviz.figures import save_png
    from seethrough.featureviz.stylizers import load_stylizer, stylize

    out = ensure_writable(args.out)
    if args.train:
        find_images([args.train])
        return _train(args)
    if not args.images:
        raise InputError("give images to stylize (files or folders), or --train STYLE_IMAGE")
    find_images(args.images)
    stylizer = load_stylizer(args.stylizer)
    style = _style(stylizer, args.style)
    photos = load_images(args.images, args.size)
    for image, name in zip(photos.images, _output_names("styled", photos.names)):
        print(save_png(stylize(stylizer, image[None], style)[0], out / f"{name}.png"))
    if photos.skipped:
        print(f"seethrough stylize: {photos.describe()}", file=sys.stderr)
    return 0

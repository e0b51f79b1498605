"""`seethrough visualize MODEL`: render what channels or classes respond to, or synthesize images.

Example:
    $ seethrough visualize mobilenet_v2 --layer features.10 --channels 0 1 2 --out viz
    $ seethrough visualize mobilenet_v2 --class 130 --steps 256 --out flamingo
    $ seethrough visualize mobilenet_v2 --mode deepdream --layer features.10 --image cat.jpg --out dream
"""
from __future__ import annotations

import argparse

MODES = ("features", "deepdream", "invert", "texture", "style")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "visualize",
        help="feature visualization (channels, classes) and DeepDream / inversion / texture / style",
        description="Optimize images that maximize channels of a layer (--layer L --channels ...) or "
        "a class logit (--class N), one image per channel or class; or, with --mode, dream, invert, "
        "synthesize a texture or transfer a style from --image / --style-image. Writes PNGs to --out.",
    )
    parser.add_argument("model", help="model name, e.g. mobilenet_v2, conceptnet or torchvision:resnet18")
    parser.add_argument("--weights", help="local state-dict file for torchvision:ARCH")
    parser.add_argument("--mode", choices=MODES, default="features",
                        help="features (default): channels or classes; or a synthesis method")
    parser.add_argument("--layer", help="layer name (see `seethrough layers MODEL`)")
    parser.add_argument("--channels", type=int, nargs="+", help="channels of --layer, one image each")
    parser.add_argument("--class", dest="classes", type=int, nargs="+", help="class indices, one image each")
    parser.add_argument("--image", help="input image for deepdream / invert / texture / style (content)")
    parser.add_argument("--style-image", help="style image for --mode style")
    parser.add_argument("--steps", type=int, default=256, help="optimization steps (default 256)")
    parser.add_argument("--size", type=int, help="image size (default: the model's input size)")
    parser.add_argument("--transforms", default="standard",
                        help="standard (Lucid), distill, jitter or none (default standard)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="output directory for the PNGs")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from seethrough.errors import InputError
    from seethrough.featureviz.figures import save_png
    from seethrough.models import load_model

    if args.steps < 1:
        raise InputError("--steps must be at least 1")
    model = load_model(args.model, weights=args.weights)
    size = args.size or model.input_size[-1]
    out = Path(args.out)
    if args.mode == "features":
        images, names = _features(model, args, size)
    else:
        images, names = _synthesis(model, args, size)
    for image, name in zip(images, names):
        print(save_png(image, out / f"{name}.png"))
    return 0


def _features(model, args, size):
    from seethrough.errors import InputError
    from seethrough.featureviz import objectives as obj
    from seethrough.featureviz.render import visualize
    from seethrough.trace import resolve_layer

    if args.classes and (args.layer or args.channels):
        raise InputError("give either --class N ... or --layer L --channels C ..., not both")
    if args.classes:
        objective, names = obj.class_logit(args.classes), [f"class_{c}" for c in args.classes]
    elif args.layer and args.channels:
        resolve_layer(model, args.layer)
        objective = obj.channel(args.layer, args.channels)
        names = [f"{args.layer}_channel_{c}" for c in args.channels]
    else:
        raise InputError("say what to visualize: --layer L --channels C [C ...], or --class N [N ...]")
    result = visualize(model, objective, steps=args.steps, size=size, seed=args.seed,
                       transforms=args.transforms, progress=True)
    return result.images, names


def _synthesis(model, args, size):
    from seethrough.data.photos import load_image
    from seethrough.errors import InputError
    from seethrough.featureviz import synthesis

    if not args.image:
        raise InputError(f"--mode {args.mode} needs --image PATH")
    image = load_image(args.image, size)[None]
    if args.mode == "deepdream":
        if not args.layer:
            raise InputError("--mode deepdream needs --layer L")
        return synthesis.deepdream(model, image, layer=args.layer, seed=args.seed, progress=True), ["deepdream"]
    if args.mode == "invert":
        if not args.layer:
            raise InputError("--mode invert needs --layer L")
        result = synthesis.invert(model, image, args.layer, steps=args.steps, seed=args.seed, progress=True)
        return result.images, [f"inversion_{args.layer}"]
    if args.mode == "texture":
        result = synthesis.synthesize_texture(model, image, steps=args.steps, seed=args.seed, progress=True)
        return result.images, ["texture"]
    if not args.style_image:
        raise InputError("--mode style needs --style-image PATH (and --image PATH for the content)")
    style = load_image(args.style_image, size)[None]
    result = synthesis.transfer_style(model, image, style, steps=args.steps, seed=args.seed, progress=True)
    return result.images, ["style"]

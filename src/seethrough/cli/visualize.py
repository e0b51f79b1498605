"""`seethrough visualize MODEL`: render what channels or classes respond to, or synthesize images.

Example:
    $ seethrough visualize mobilenet_v2 --layer features.10 --channels 0 1 2 --out viz
    $ seethrough visualize mobilenet_v2 --class 130 --steps 256 --out flamingo
    $ seethrough visualize mobilenet_v2 --mode deepdream --layer features.10 --image cat.jpg --out dream
    $ seethrough visualize mobilenet_v2 --mode invert --layer features.10 photos/ --out inverted
    $ seethrough visualize conceptnet --mode facets --class 0 world/ --out circle_facets
    $ seethrough visualize conceptnet --mode texture-sampling brick.png --size 64 --out grown
"""
from __future__ import annotations

import argparse

MODES = ("features", "deepdream", "invert", "texture", "style", "facets", "texture-sampling")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "visualize",
        help="feature visualization (channels, classes, facets) and DeepDream / inversion / "
        "texture / style",
        description="Optimize images that maximize channels of a layer (--layer L --channels ...) or "
        "a class logit (--class N), one image per channel or class; or, with --mode, dream, invert, "
        "synthesize a texture or transfer a style from input images (files or folders, given as "
        "arguments or with --image) and --style-image; --mode facets renders one image per kind "
        "of input image a unit fires for (Nguyen et al. 2016); --mode texture-sampling grows a "
        "texture from each image without a network (Efros & Leung 1999; a 64 px sample, at most "
        "96 px out). Writes PNGs to --out.",
    )
    parser.add_argument("model", help="model name, e.g. mobilenet_v2, conceptnet or torchvision:resnet18")
    parser.add_argument("images", nargs="*", help="input images for deepdream / invert / texture / "
                        "style: files and folders (searched recursively); one output per image")
    parser.add_argument("--weights", help="local state-dict file for torchvision:ARCH")
    parser.add_argument("--mode", choices=MODES, default="features",
                        help="features (default): channels or classes; or a synthesis method")
    parser.add_argument("--layer", help="layer name (see `seethrough layers MODEL`)")
    parser.add_argument("--channels", type=int, nargs="+", help="channels of --layer, one image each")
    parser.add_argument("--class", dest="classes", type=int, nargs="+", help="class indices, one image each")
    parser.add_argument("--image", action="append", default=[],
                        help="input image or folder for deepdream / invert / texture / style (the "
                        "content); may be repeated, adds to the image arguments")
    parser.add_argument("--style-image", help="style image (a file, or a folder holding one image) "
                        "for --mode style")
    parser.add_argument("--preset", choices=("paper", "fast"), default="paper",
                        help="invert / texture / style: the paper's method (default: Gatys' losses "
                        "and L-BFGS, Mahendran & Vedaldi's regularizers) or the fast Adam settings")
    parser.add_argument("--style-weight", type=float,
                        help="--mode style: the style loss weight (paper preset: 1e3, the paper's "
                        "alpha/beta = 1e-3; about 1e6 carries the style on ImageNet CNNs)")
    parser.add_argument("--facets", type=int, default=4, help="facets for --mode facets (default 4)")
    parser.add_argument("--steps", type=int, default=256, help="optimization steps (default 256)")
    parser.add_argument("--size", type=int, help="image size (default: the model's input size)")
    parser.add_argument("--transforms", default="standard",
                        help="standard (Lucid), distill, jitter or none (default standard)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="output directory for the PNGs")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from seethrough.atomic import ensure_writable
    from seethrough.data.images import find_images
    from seethrough.errors import InputError
    from seethrough.featureviz.figures import save_png
    from seethrough.models import load_model

    if args.steps < 1:
        raise InputError("--steps must be at least 1")
    inputs = [*args.images, *args.image]
    if args.mode == "features" and inputs:
        raise InputError(f"--mode features takes no input images ({inputs[0]}); give --mode "
                         "deepdream, invert, texture or style to use them")
    if args.mode != "features" and not inputs:
        raise InputError(f"--mode {args.mode} needs input images: files or folders, as "
                         "arguments or with --image PATH")
    find_images(inputs + ([args.style_image] if args.style_image else []))  # missing paths: now
    out = ensure_writable(args.out)
    model = load_model(args.model, weights=args.weights)
    size = args.size or model.input_size[-1]
    photos = None
    if args.mode == "features":
        images, names = _features(model, args, size)
    else:
        images, names, photos = _synthesis(model, args, size, inputs)
    for image, name in zip(images, names):
        print(save_png(image, out / f"{name}.png"))
    if photos is not None and photos.skipped:
        print(f"seethrough visualize: {photos.describe()}", file=sys.stderr)
    return 0


def _output_names(base: str, names: list[str]) -> list[str]:
    """``base`` for one input image, else ``base_<file name without suffix>`` per image (with
    the folders in it when two files share a name)."""
    from pathlib import PurePosixPath

    if len(names) == 1:
        return [base]
    paths = [PurePosixPath(name.replace("\\", "/")) for name in names]
    stems = [path.stem for path in paths]
    if len(set(stems)) < len(stems):
        stems = ["_".join(part for part in path.with_suffix("").parts if part not in ("/", "..", "."))
                 for path in paths]
    return [f"{base}_{stem}" for stem in stems]


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


def _synthesis(model, args, size, inputs):
    import torch
    import torch.nn.functional as F

    from seethrough.data.images import load_images
    from seethrough.errors import InputError
    from seethrough.featureviz import synthesis

    if args.mode == "facets":
        return _facets(model, args, size, inputs)
    if args.mode in ("deepdream", "invert") and not args.layer:
        raise InputError(f"--mode {args.mode} needs --layer L")
    if args.mode == "style" and not args.style_image:
        raise InputError("--mode style needs --style-image PATH (and input images for the content)")
    photos = load_images(inputs, size)
    image = photos.images

    def named(base):
        return _output_names(base, photos.names)

    if args.mode == "deepdream":
        dreams = synthesis.deepdream(model, image, layer=args.layer, seed=args.seed, progress=True)
        return dreams, named("deepdream"), photos
    if args.mode == "invert":
        result = synthesis.invert(model, image, args.layer, steps=args.steps, seed=args.seed,
                                  preset=args.preset, progress=True)
        return result.images, named(f"inversion_{args.layer}"), photos
    if args.mode == "texture-sampling":
        from seethrough.featureviz.synthesis.nonparametric import synthesize_texture_nonparametric

        # pixel by pixel against every window of the sample: a 64 px sample, at most 96 px out
        samples = F.interpolate(image, size=min(size, 64), mode="bilinear", antialias=True,
                                align_corners=False).clamp(0, 1)
        window = min(11, samples.shape[-1] // 2 * 2 - 1)
        grown = [synthesize_texture_nonparametric(one, size=min(size, 96), window=window,
                                                  seed=args.seed, progress=True) for one in samples]
        return torch.cat(grown), named("texture_sampled"), photos
    if args.mode == "texture":
        textures = [synthesis.synthesize_texture(model, one[None], steps=args.steps, seed=args.seed,
                                                 preset=args.preset, progress=True).images
                    for one in image]
        return torch.cat(textures), named("texture"), photos
    styles = load_images([args.style_image], size)
    if len(styles) != 1:
        raise InputError(f"--style-image takes one image; {args.style_image} holds {len(styles)}")
    result = synthesis.transfer_style(model, image, styles.images, steps=args.steps, seed=args.seed,
                                      preset=args.preset, style_weight=args.style_weight,
                                      progress=True)
    return result.images, named("style"), photos


def _facets(model, args, size, inputs):
    from seethrough.data.images import load_images
    from seethrough.errors import InputError
    from seethrough.featureviz import objectives as obj
    from seethrough.featureviz.multifaceted import multifaceted
    from seethrough.trace import resolve_layer

    if args.classes and len(args.classes) == 1 and not args.layer:
        objective, base = obj.class_logit(args.classes[0]), f"class_{args.classes[0]}"
    elif args.layer and args.channels and len(args.channels) == 1 and not args.classes:
        resolve_layer(model, args.layer)
        objective, base = obj.channel(args.layer, args.channels[0]), f"{args.layer}_channel_{args.channels[0]}"
    else:
        raise InputError("--mode facets renders one unit: --class N, or --layer L --channels C")
    photos = load_images(inputs, size)
    if len(photos) < 2 * args.facets:
        raise InputError(f"--mode facets needs at least {2 * args.facets} images for {args.facets} "
                         f"facets, got {len(photos)}")
    result = multifaceted(model, objective, photos.images, facets=args.facets, seed=args.seed,
                          steps=min(args.steps, 96), per_facet=min(15, len(photos) // args.facets),
                          progress=True)
    return result.images, [f"{base}_facet_{i}" for i in range(args.facets)], photos

"""`seethrough attribute MODEL [IMAGES...]`: every attribution method side by side, with scores."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "attribute",
        help="attribution maps of several methods side by side, with their scores",
        description="Explain MODEL's decision on image files (or on ConceptWorld images, which "
        "have ground-truth object masks) with several attribution methods. Writes OUT/"
        "attribution.png (one row per image, one column per method) and OUT/scores.csv (per "
        "method: deletion and insertion AUC, and with --conceptworld the pointing game, energy "
        "pointing game and mask IoU against the true object, plus seconds per image).",
        epilog="example: seethrough attribute conceptnet --conceptworld 8 --methods gradcam,"
        "integrated_gradients --out attr-out",
    )
    parser.add_argument("model", help="model name: conceptnet, mobilenet_v2, torchvision:ARCH, ...")
    parser.add_argument("images", nargs="*", help="image files and folders (searched recursively; "
                        "resized and centre-cropped to the model's input size; unreadable files "
                        "are skipped with a warning)")
    parser.add_argument("--conceptworld", type=int, metavar="N",
                        help="use the first N ConceptWorld validation images instead of files")
    parser.add_argument("--bias", type=float, default=0.0,
                        help="ConceptWorld shortcut-cue bias in [0, 1] (default: %(default)s)")
    parser.add_argument("--methods", default="fast",
                        help="comma-separated method names, 'all', or 'fast' (all but meaningful_"
                        "and extremal_perturbation; default)")
    parser.add_argument("--layer", help="layer for CAM-style methods (default: the last conv block)")
    parser.add_argument("--target", default="predicted",
                        help="'predicted' (default), 'label' (ConceptWorld's true class), one "
                        "class index, or one per image, comma-separated")
    parser.add_argument("--weights", help="local state-dict file for torchvision:ARCH")
    parser.add_argument("--batch-size", type=int, default=32, help="default: %(default)s")
    parser.add_argument("--quick", action="store_true",
                        help="fewer steps / samples / masks for the expensive methods")
    parser.add_argument("--steps", type=int, default=32,
                        help="points on the deletion / insertion curves (default: %(default)s; "
                        "RISE used one step per row of pixels: --steps 224 at 224 px)")
    parser.add_argument("--no-scores", action="store_true", help="only the grid, no scores")
    parser.add_argument("--out", default="attribution-out", help="output folder (default: %(default)s)")
    parser.set_defaults(run=run)


def _target(spec: str, labels, count: int):
    from seethrough.errors import InputError

    if spec == "predicted":
        return "predicted"
    if spec == "label":
        if labels is None:
            raise InputError("--target label needs --conceptworld (image files have no labels)")
        return labels
    try:
        values = [int(v) for v in spec.split(",")]
    except ValueError:
        raise InputError(f"--target must be 'predicted', 'label' or class indices, not {spec!r}") from None
    if len(values) not in (1, count):
        raise InputError(f"--target has {len(values)} classes for {count} images: give 1 or {count}")
    return values[0] if len(values) == 1 else values


def run(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from seethrough.atomic import ensure_writable, save_figure_atomic, write_text_atomic
    from seethrough.attribution.compare import method_names, report_options, run_methods
    from seethrough.attribution.figures import methods_figure
    from seethrough.errors import InputError
    from seethrough.evaluation.ranking import score_methods
    from seethrough.models import load_model

    methods = method_names(args.methods)
    if bool(args.images) == (args.conceptworld is not None):
        raise InputError("give image files or --conceptworld N (one of the two)")
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be positive, not {args.batch_size}")
    if args.steps < 1:
        raise InputError(f"--steps must be positive, not {args.steps}")
    if args.images:
        from seethrough.data.images import find_images

        find_images(args.images)  # a missing path fails now, not after the model has loaded
    out = ensure_writable(args.out)
    model = load_model(args.model, weights=args.weights)
    from seethrough.trace import resolve_layer

    if args.layer is not None:
        resolve_layer(model, args.layer)  # fail fast with close names
    size = model.input_size[-1]
    masks = labels = photos = None
    if args.conceptworld is not None:
        from seethrough.data import ConceptWorld

        if args.conceptworld < 1:
            raise InputError(f"--conceptworld needs a positive number of images, not {args.conceptworld}")
        if not 0.0 <= args.bias <= 1.0:
            raise InputError(f"--bias must be in [0, 1], not {args.bias}")
        world = ConceptWorld("val", length=args.conceptworld, size=max(size, 32), bias=args.bias)
        samples = world.batch()
        images, masks = samples["image"], samples["object_mask"]
        labels = samples["label"].tolist()
        titles = [world.class_names[label] for label in labels]
    else:
        from seethrough.data.images import load_images

        photos = load_images(args.images, size)
        images = photos.images
        # a file named explicitly: its file name; one found in a folder: its path in the folder
        titles = [path.name if Path(name) == path else name
                  for name, path in zip(photos.names, photos.paths)]
    target = _target(args.target, labels, len(images))
    results = run_methods(model, images, methods, target=target, layer=args.layer,
                          options=report_options(args.quick, image_size=size),
                          batch_size=args.batch_size)
    classes = getattr(model, "class_names", None) or []
    explained = next(iter(results.values()))[0].target
    if explained is not None:
        titles = [f"{t} -> {classes[int(c)] if classes else int(c)}" for t, c in zip(titles, explained)]
    save_figure_atomic(methods_figure(images, results, masks=masks, row_titles=titles),
                       out / "attribution.png", dpi=110)
    print(f"grid written to {(out / 'attribution.png').resolve()}")
    if not args.no_scores:
        pixels = images.shape[-1] * images.shape[-2]
        frame = score_methods(model, images, results, masks=masks, batch_size=args.batch_size,
                              step=-(-pixels // args.steps), progress=False)
        write_text_atomic(out / "scores.csv", frame.to_csv(index=False))
        print(frame.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        print(f"scores written to {(out / 'scores.csv').resolve()}")
    if photos is not None and photos.skipped:
        print(f"seethrough attribute: {photos.describe()}", file=sys.stderr)
    return 0

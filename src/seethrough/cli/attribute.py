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
    parser.add_argument("--channels", metavar="LAYER",
                        help="also score LAYER's channels (gradient x activation): OUT/channels.csv"
                        " (per channel: mean score, rank, how often in an image's top 5) and "
                        "OUT/channels.png (each image's top channels, where their share comes from)")
    parser.add_argument("--segment", nargs="?", const="", metavar="METHOD",
                        help="also cut each image's object out with GrabCut from METHOD's map "
                        "(default: the first of --methods): OUT/segments.png and OUT/segments.csv "
                        "(with --conceptworld: IoU with the true object, and a centred box's)")
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

    for layer in (args.layer, args.channels):
        if layer is not None:
            resolve_layer(model, layer)  # fail fast with close names
    if args.segment and args.segment not in methods:
        raise InputError(f"--segment {args.segment}: that method is not in --methods "
                         f"({', '.join(methods)}); add it, or give one of those")
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
    if args.channels is not None:
        _channels(model, images, args.channels, explained, titles, out, args.batch_size)
    if args.segment is not None:
        name = args.segment or methods[0]
        _segments(images, results[name][0], name, masks, titles, out)
    if photos is not None and photos.skipped:
        print(f"seethrough attribute: {photos.describe()}", file=sys.stderr)
    return 0


def _channels(model, images, layer: str, explained, titles, out, batch_size: int) -> None:
    """OUT/channels.csv and OUT/channels.png: which of ``layer``'s channels carry the decision."""
    from seethrough.atomic import save_figure_atomic, write_text_atomic
    from seethrough.attribution.channels import channel_attribution
    from seethrough.attribution.figures import channels_figure

    target = "predicted" if explained is None else explained
    scores = channel_attribution(model, images, layer, target, batch_size=batch_size,
                                 keep_maps=True)
    frame = scores.to_frame()
    write_text_atomic(out / "channels.csv", frame.to_csv(index=False))
    if scores.maps is not None:
        save_figure_atomic(channels_figure(images, scores, row_titles=titles),
                           out / "channels.png", dpi=110)
    print(f"{scores.layer}: top channels by mean score "
          + ", ".join(f"{c} ({v:.3g})" for c, v in zip(frame.channel[:5], frame.mean_score[:5])))
    print(f"channel scores written to {(out / 'channels.csv').resolve()}")


def _segments(images, result, method: str, masks, titles, out) -> None:
    """OUT/segments.png and OUT/segments.csv: GrabCut from ``method``'s maps."""
    import pandas as pd

    from seethrough.atomic import save_figure_atomic, write_text_atomic
    from seethrough.attribution.figures import segments_figure
    from seethrough.attribution.segment import centre_box, grabcut

    segments = grabcut(images, result)
    frame = pd.DataFrame({"image": titles, "method": method,
                          "segment_area": segments.flatten(1).float().mean(1).tolist()})
    if masks is not None:
        from seethrough.evaluation import iou

        box = centre_box(*segments.shape)
        frame["iou"] = iou(segments, masks).tolist()
        frame["centre_box_iou"] = iou(box, masks).tolist()
        print(f"GrabCut from {method}: mean IoU with the true object {frame.iou.mean():.3f} "
              f"(a centred box: {frame.centre_box_iou.mean():.3f})")
    write_text_atomic(out / "segments.csv", frame.to_csv(index=False))
    save_figure_atomic(segments_figure(images, result, segments, masks=masks, row_titles=titles),
                       out / "segments.png", dpi=110)
    print(f"segments written to {(out / 'segments.png').resolve()}")

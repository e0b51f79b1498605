"""`seethrough batch-attribute MODEL IMAGES... --method M --out DIR`: maps of a whole dataset.

One attribution method over every image (files read lazily, or ``--conceptworld N``), written
per batch to ``DIR/maps-<first index>.safetensors`` keyed by image index, with ``images.csv``
(index, file) and ``maps.json`` (method, options, seed); ``--engine ray`` runs the shards on a
Ray cluster and writes the same files. A rerun with the same arguments resumes.

Example:
    $ seethrough batch-attribute conceptnet --conceptworld 1000 --method smoothgrad --out maps
    $ seethrough batch-attribute mobilenet_v2 photos/ --method gradcam --engine ray \\
        --address auto --workers 8 --out maps
"""
from __future__ import annotations

import argparse

from seethrough.cli.engine_args import add_engine_arguments, engine_from


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "batch-attribute", help="attribution maps of a whole dataset, on many workers",
        description="Attribute every image of a dataset with one method and write the maps to "
        "files keyed by image index (safetensors), resumable, on this machine or a Ray cluster "
        "(--engine ray). Methods with randomness seed each image from (--seed, index), so the "
        "maps do not depend on how the dataset is split.")
    parser.add_argument("model", help="model name: conceptnet, mobilenet_v2, torchvision:ARCH, ...")
    parser.add_argument("images", nargs="*", help="image files and folders (read lazily)")
    parser.add_argument("--conceptworld", type=int, metavar="N", help="N ConceptWorld images instead")
    parser.add_argument("--weights", help="local state-dict file for torchvision:ARCH")
    parser.add_argument("--method", default="saliency", help="an attribution method (saliency)")
    parser.add_argument("--target", default="predicted",
                        help="'predicted' (default), 'label' (with --conceptworld) or a class index")
    parser.add_argument("--seed", type=int, default=0, help="base of the per-image seeds (0)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", required=True, help="output folder")
    add_engine_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from seethrough.atomic import ensure_writable, write_text_atomic
    from seethrough.attribution import METHODS
    from seethrough.attribution.dataset import attribute_dataset
    from seethrough.errors import InputError
    from seethrough.models import load_model

    if args.method not in METHODS:
        raise InputError(f"unknown --method {args.method!r} (known: {', '.join(METHODS)})")
    if bool(args.images) == (args.conceptworld is not None):
        raise InputError("give image files or --conceptworld N (one of the two)")
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be positive, not {args.batch_size}")
    target = args.target
    if target not in ("predicted", "label"):
        try:
            target = int(target)
        except ValueError:
            raise InputError(f"--target must be 'predicted', 'label' or a class index, "
                             f"not {target!r}") from None
    out = ensure_writable(args.out)
    model = load_model(args.model, weights=args.weights).eval()
    size = int(getattr(model, "input_size", (3, 224, 224))[-1])
    if args.conceptworld is not None:
        from seethrough.data import ConceptWorld

        if args.conceptworld < 1:
            raise InputError(f"--conceptworld needs a positive number, not {args.conceptworld}")
        dataset = ConceptWorld("val", length=args.conceptworld, size=size)
        names = [f"conceptworld-val-{i}" for i in range(len(dataset))]
    else:
        if target == "label":
            raise InputError("--target label needs --conceptworld (image files have no labels)")
        from seethrough.data.images import ImageFiles

        dataset = ImageFiles(args.images, size)
        names = dataset.names
    write_text_atomic(out / "images.csv", pd.DataFrame({"index": range(len(names)),
                                                        "image": names}).to_csv(index=False))
    with engine_from(args) as engine:
        maps = attribute_dataset(model, dataset, out, method=args.method, target=target,
                                 seed=args.seed, batch_size=args.batch_size, engine=engine)
    print(f"wrote {len(maps)} maps ({args.method}) to {out}")
    return 0

"""`seethrough represent MODEL [IMAGES ...] --layer L --out DIR`: how a layer arranges images.

Example:
    $ seethrough represent conceptnet --conceptworld 2000 --layer features.block5 --out rep
    $ seethrough represent mobilenet_v2 photos/ --layer features.13 --map pca umap --out rep
"""
from __future__ import annotations

import argparse

from seethrough.cli.engine_args import add_engine_arguments, engine_from

MAPS = ("pca", "tsne", "umap")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "represent",
        help="representations: features, maps, nearest neighbours, intrinsic dimension, top patches",
        description="Features of --layer for every image (files and folders, or --conceptworld N "
        "generated images), their maps (PCA, t-SNE, UMAP) with thumbnail atlases, nearest "
        "neighbours in feature and pixel space, the intrinsic dimension over the layers, the "
        "top patches of the layer's units on their true receptive fields, one image's "
        "activation grid and the strongest unit's kernel. Writes CSV, PNG and safetensors "
        "files to --out.",
    )
    parser.add_argument("model", help="model name, e.g. conceptnet, mobilenet_v2, torchvision:ARCH")
    parser.add_argument("images", nargs="*", help="image files and folders (searched recursively)")
    parser.add_argument("--weights", help="local state-dict file for torchvision:ARCH")
    parser.add_argument("--conceptworld", type=int, help="use N ConceptWorld images instead")
    parser.add_argument("--layer", help="layer name (default: the deepest spatial stage)")
    parser.add_argument("--pool", choices=("mean", "max", "none"), default="mean",
                        help="how positions are reduced to one vector (default mean)")
    parser.add_argument("--map", nargs="+", choices=MAPS, default=["pca", "umap"],
                        help="map methods (default: pca umap)")
    parser.add_argument("--k", type=int, default=5, help="nearest neighbours per query (5)")
    parser.add_argument("--queries", type=int, default=6, help="query images (6)")
    parser.add_argument("--patches", type=int, default=8, help="top patches per unit (8)")
    parser.add_argument("--no-dimension", action="store_true",
                        help="skip the intrinsic-dimension profile over the layers")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="output folder")
    add_engine_arguments(parser)
    parser.set_defaults(run=run)


def _data(args, model):
    """(dataset for tally, images tensor, class per image or None, names)."""
    from seethrough.errors import InputError

    size = model.input_size[-1] if hasattr(model, "input_size") else 224
    if args.conceptworld:
        if args.images:
            raise InputError("give image files or --conceptworld N, not both")
        from seethrough.data import ConceptWorld

        world = ConceptWorld("val", length=args.conceptworld, size=size)
        batch = world.batch()
        names = [world.class_names[int(c)] for c in batch["label"]]
        return world, batch["image"], batch["label"], names
    if not args.images:
        raise InputError("give image files or folders, or --conceptworld N")
    from seethrough.data.images import load_images

    photos = load_images(args.images, size)
    return photos.images, photos.images, None, photos.names


def run(args: argparse.Namespace) -> int:
    import pandas as pd
    import torch
    import torch.nn.functional as F
    from safetensors.torch import save_file

    from seethrough.atomic import (
        atomic_path,
        ensure_writable,
        save_figure_atomic,
        write_text_atomic,
    )
    from seethrough.core.layer_table import layers_by_resolution
    from seethrough.errors import InputError
    from seethrough.models import load_model
    from seethrough.represent import (
        activation_grid,
        embed,
        features,
        figures,
        input_layer,
        neighbors,
        profile,
        top_patches,
        unit_kernel,
    )
    from seethrough.represent.choose import consistent_units, predicted_classes, profile_layers
    from seethrough.represent.extract import dataset_features

    if min(args.k, args.queries, args.patches, args.batch_size) < 1:
        raise InputError("--k, --queries, --patches and --batch-size must be positive")
    out = ensure_writable(args.out)
    model = load_model(args.model, weights=args.weights)
    dataset, images, classes, names = _data(args, model)
    if args.k >= len(images):
        raise InputError(f"--k {args.k} needs more than {args.k} images; {len(images)} given")
    shape = tuple(images.shape[1:])
    layer = args.layer or layers_by_resolution(model, shape)[-1]
    engine = engine_from(args)
    feats = features(model, layer, dataset, pool=args.pool, batch_size=args.batch_size,
                     engine=engine)
    if classes is None:
        classes = predicted_classes(model, images)
    with atomic_path(out / "features.safetensors") as temporary:
        save_file({"features": feats.contiguous(), "classes": classes.contiguous()}, str(temporary))
    class_names = getattr(model, "class_names", None)

    def thumbnail(index: int) -> torch.Tensor:
        return images[index]

    for method in args.map:
        points = embed(feats, method=method, seed=args.seed)
        frame = pd.DataFrame({"image": names, "class": classes.numpy(),
                              "x": points[:, 0], "y": points[:, 1]})
        write_text_atomic(out / f"map-{method}.csv", frame.to_csv(index=False))
        save_figure_atomic(figures.map_figure(points, thumbnail, classes=classes.numpy(),
                                              class_names=class_names,
                                              title=f"{layer} ({method})"),
                           out / f"map-{method}.png")
    queries = torch.linspace(0, len(feats) - 1, min(args.queries, len(feats))).round().long()
    queries = queries.unique()
    found = neighbors(feats, queries, k=args.k, metric="cosine")
    pixels = neighbors(F.interpolate(images, size=32, mode="area").flatten(1), queries,
                       k=args.k, metric="l2")
    rows = [{"query": names[int(q)], "rank": r + 1, "neighbor": names[int(found.indices[i, r])],
             "distance": float(found.distances[i, r]),
             "pixel_neighbor": names[int(pixels.indices[i, r])]}
            for i, q in enumerate(queries) for r in range(args.k)]
    write_text_atomic(out / "neighbors.csv", pd.DataFrame(rows).to_csv(index=False))
    save_figure_atomic(figures.neighbors_figure(thumbnail, queries.tolist(), found.indices,
                                                pixels.indices, names), out / "neighbors.png")
    if not args.no_dimension:
        pools = profile_layers(model, shape, 6)
        table = profile(dataset_features(model, pools, dataset, batch_size=args.batch_size,
                                         engine=engine)[0])
        write_text_atomic(out / "dimension.csv", table.to_csv())
        save_figure_atomic(figures.dimension_figure({args.model: table}), out / "dimension.png")
        print(table.to_string(float_format=lambda v: f"{v:.2f}"))
    engine.close()  # its workers are no longer needed (on an error, process exit stops them)
    save_figure_atomic(figures.activation_grid_figure(activation_grid(model, layer, images[0]),
                                                      title=layer, image=images[0]),
                       out / "activations.png")
    try:
        patches = top_patches(model, layer, dataset, k=args.patches, batch_size=args.batch_size)
    except InputError as error:
        print(f"no top patches: {error}")
        print(f"wrote {out}")
        return 0
    patches.save(out / "patches")
    save_figure_atomic(patches.plot(units=16), out / "patches.png")
    unit = int(patches.units[consistent_units(patches.values, 1)[0]])
    kernel = unit_kernel(model, layer, unit, count=6)
    source = input_layer(model, layer, shape)
    inputs = (top_patches(model, source, dataset, k=4, units=kernel.inputs, size=40).crops
              if source else None)
    save_figure_atomic(figures.kernel_figure(kernel.slices, kernel.inputs, inputs,
                                             title=f"{kernel.conv}, unit {unit}"),
                       out / "kernel.png")
    print(f"features {tuple(feats.shape)} of {layer}; wrote {out}")
    return 0

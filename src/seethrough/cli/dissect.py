"""`seethrough dissect MODEL --layers ... [--experiment ...] --out DIR`: Network Dissection."""
from __future__ import annotations

import argparse

from seethrough.cli.engine_args import add_engine_arguments, engine_from

EXPERIMENTS = ("none", "noise", "rotation", "shuffle", "axis", "pca")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "dissect",
        help="Network Dissection: which concept each unit detects, and experiments that test it",
        description="Dissect the layers of MODEL on ConceptWorld (or a Broden-format folder): "
        "per unit the best concept and its IoU (Bau et al. 2017). Writes units.csv, "
        "detectors.csv, the saved result (dissection/, read back with Dissection.load) and "
        "figures to --out; --experiment adds one experiment.",
    )
    parser.add_argument("model", help="model name, e.g. conceptnet, mobilenet_v2, torchvision:ARCH")
    parser.add_argument("--layers", nargs="+", help="layer names (default: one per resolution)")
    parser.add_argument("--weights", help="local state-dict file for torchvision:ARCH")
    parser.add_argument("--broden", help="a Broden-format folder instead of ConceptWorld")
    parser.add_argument("--images", type=int, default=500, help="ConceptWorld images (500)")
    parser.add_argument("--size", type=int, help="ConceptWorld image size (default: the model's)")
    parser.add_argument("--quantile", type=float, default=0.005, help="top quantile (0.005)")
    parser.add_argument("--iou-threshold", type=float, default=0.04, help="detector IoU (0.04)")
    parser.add_argument("--upsample", choices=("bilinear", "receptive_field"), default="bilinear")
    parser.add_argument("--union", choices=("paper", "netdissect_lite"), default="paper")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--checkpoint", help="save progress here and resume from it")
    parser.add_argument("--experiment", choices=EXPERIMENTS, default="none",
                        help="noise | rotation | shuffle (unique detectors of perturbed images), "
                        "axis (random rotations of the last layer), pca (first loading of the "
                        "best concept of the last layer)")
    parser.add_argument("--draws", type=int, default=3, help="random rotations for --experiment axis")
    parser.add_argument("--out", required=True, help="output folder")
    add_engine_arguments(parser)
    parser.set_defaults(run=run)


def _dataset(args, model):
    if args.broden:
        from seethrough.data import BrodenDataset

        return BrodenDataset(args.broden)
    from seethrough.data import ConceptWorld

    size = args.size or getattr(model, "input_size", (3, 64, 64))[-1]
    return ConceptWorld("val", length=args.images, size=size)


def run(args: argparse.Namespace) -> int:
    from seethrough.atomic import ensure_writable, write_text_atomic
    from seethrough.core.layer_table import layers_by_resolution
    from seethrough.dissection import dissect, experiments, figures
    from seethrough.errors import InputError
    from seethrough.models import load_model

    if args.batch_size < 1 or args.images < 1:
        raise InputError("--batch-size and --images must be positive")
    out = ensure_writable(args.out)
    model = load_model(args.model, weights=args.weights)
    data = _dataset(args, model)
    image_shape = tuple(data[0]["image"].shape)
    layers = args.layers or layers_by_resolution(model, image_shape)[-3:]
    options = {"quantile": args.quantile, "iou_threshold": args.iou_threshold,
               "upsample": args.upsample, "union": args.union, "batch_size": args.batch_size}
    with engine_from(args) as engine:
        result = dissect(model, layers, data, checkpoint=args.checkpoint, engine=engine, **options)
    result.save(out / "dissection")
    write_text_atomic(out / "units.csv", result.to_frame().to_csv(index=False))
    counts = result.unique_detectors()
    write_text_atomic(out / "detectors.csv", counts.to_csv(index=False))
    _save(figures.detectors_figure(result), out / "detectors.png")
    print(figures.counts_table(result).to_string(index=False))
    last = list(result.layers)[-1]
    if args.experiment in ("noise", "rotation", "shuffle"):
        frame = experiments.robustness(model, layers, data, kind=args.experiment, **options)
        write_text_atomic(out / f"{args.experiment}.csv", frame.to_csv(index=False))
        _save(figures.robustness_figure(frame), out / f"{args.experiment}.png")
        print(frame.groupby(["level", "layer"]).unique_detectors.sum().to_string())
    elif args.experiment == "axis":
        options.pop("upsample")
        frame = experiments.axis_alignment(model, last, data, draws=args.draws, **options)
        write_text_atomic(out / "axis.csv", frame.to_csv(index=False))
        _save(figures.axis_figure(frame), out / "axis.png")
        print(figures.summary(frame, "fraction").to_string(index=False))
    elif args.experiment == "pca":
        frame = result.to_frame()
        top = frame[frame.layer == last].sort_values("iou", ascending=False).iloc[0]
        pca = experiments.concept_pca(model, last, data, top.concept, category=top.category,
                                      batch_size=args.batch_size)
        _save(figures.pca_figure(pca), out / "pca.png")
        print(f"{top.concept}: best unit by IoU {top.unit}; first PCA loading's top unit "
              f"{pca.top_unit} holds {pca.top_share:.0%} (~{pca.effective_units:.1f} units share it)")
    print(f"wrote {out}")
    return 0


def _save(figure, path) -> None:
    from seethrough.atomic import save_figure_atomic

    save_figure_atomic(figure, path)

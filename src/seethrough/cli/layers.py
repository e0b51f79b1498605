"""`seethrough layers MODEL`: the layer table of a model."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "layers",
        help="list a model's layers with type, output shape and parameters",
        description="List every named module of MODEL (conceptnet, mobilenet_v2, "
        "efficientnet_lite0, torchvision:ARCH) with its type, output shape and parameter count.",
    )
    parser.add_argument("model", help="model name, e.g. conceptnet or torchvision:resnet18")
    parser.add_argument("--weights", help="local state-dict file for torchvision:ARCH")
    parser.add_argument("--size", type=int, help="input height and width (default: the model's)")
    parser.add_argument("--csv", help="also write the table to this CSV file")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from seethrough.core.layer_table import layers
    from seethrough.models import load_model

    if args.csv:
        from pathlib import Path

        from seethrough.atomic import ensure_writable

        ensure_writable(Path(args.csv).parent, option="--csv")
    model = load_model(args.model, weights=args.weights)
    shape = None
    if args.size:
        shape = (model.input_size[0], args.size, args.size)
    table = layers(model, shape)
    print(table)
    if args.csv:
        from seethrough.atomic import write_text_atomic

        write_text_atomic(args.csv, table.to_frame().to_csv(index=False))
    return 0

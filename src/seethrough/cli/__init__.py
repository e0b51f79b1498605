"""The `seethrough` command line: one subcommand per module in this package.

Each subcommand module defines ``register(subparsers)`` which adds its parser and sets
``run=<function(args) -> int>``. Errors of the project's own types print one line and exit 2.

Example:
    $ seethrough layers torchvision:resnet18
"""
from __future__ import annotations

import argparse
import importlib
import sys

#: subcommand modules, in the order `--help` lists them
COMMANDS = ["demo", "layers", "train", "attribute", "visualize", "dissect"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="seethrough",
        description="Look inside vision networks: attribution, feature visualization, dissection.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"seethrough.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from seethrough.allocator import keep_freed_memory
    from seethrough.errors import SeethroughError

    args = build_parser().parse_args(argv)
    keep_freed_memory()
    try:
        return int(args.run(args) or 0)
    except SeethroughError as error:
        print(f"seethrough {args.command}: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head`
        return 0
    except KeyboardInterrupt:
        print(f"seethrough {args.command}: interrupted", file=sys.stderr)
        return 130

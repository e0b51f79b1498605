"""The CLI options of every dataset pass: ``--engine local|ray [--address A] [--workers N]``.

Example:
    >>> import argparse
    >>> parser = argparse.ArgumentParser()
    >>> add_engine_arguments(parser)
    >>> engine_from(parser.parse_args(["--workers", "2"]))
    Engine(kind='local', workers=2, address=None, shard_batches=None, threads=1)
"""
from __future__ import annotations

import argparse


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--engine``, ``--address``, ``--workers`` and ``--shard-batches``."""
    group = parser.add_argument_group("where the dataset passes run")
    group.add_argument("--engine", choices=("local", "ray"), default="local",
                       help="local: this machine's processes; ray: a Ray cluster (default: local)")
    group.add_argument("--address", help="with --engine ray: 'auto' (the running cluster) or "
                       "HOST:PORT; default: start Ray on this machine")
    group.add_argument("--workers", type=int, default=1,
                       help="worker processes or Ray actors (default: 1)")
    group.add_argument("--shard-batches", type=int,
                       help="batches per shard (default: from the batch count, at most 8); results depend "
                       "on it, never on --workers")


def engine_from(args: argparse.Namespace):
    """The ``Engine`` the options name."""
    from seethrough.tallying import Engine

    return Engine(args.engine, args.workers, args.address, args.shard_batches)

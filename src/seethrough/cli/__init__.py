"""The `seethrough` command line: one subcommand per module in this package.

Each subcommand module defines ``register(subparsers)`` which adds its parser and sets
``run=<function(args) -> int>``. Errors of the project's own types print one line and exit 2.
Every subcommand takes its options and positional arguments in any order (``IntermixedParser``).

Example:
    $ seethrough layers torchvision:resnet18
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
import warnings
from collections.abc import Iterator

#: subcommand modules (a module `a_b` registers the command `a-b`), in the order `--help` lists them
COMMANDS = ["demo", "report", "layers", "train", "attribute", "visualize", "dissect", "represent",
            "attack", "findings", "circuits", "batch_attribute", "stylize",
            "train_segmenter", "train_gan", "gan", "games"]


class IntermixedParser(argparse.ArgumentParser):
    """An ArgumentParser whose options and positionals may come in any order.

    ``seethrough attribute MODEL --weights w.pth photos/*`` works as well as with the images
    first: a parser without subcommands parses with ``parse_known_intermixed_args``. A list
    option whose values are typed or have choices (``--channels 0 1 2``) ends at the first
    word that is not one of its values, so a positional argument may follow it.
    """

    _intermixing = False

    def parse_known_args(self, args=None, namespace=None):
        if self._intermixing or any(action.nargs in (argparse.PARSER, argparse.REMAINDER)
                                    for action in self._get_positional_actions()):
            return super().parse_known_args(args, namespace)
        args = self._end_typed_lists(sys.argv[1:] if args is None else list(args))
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False

    def _end_typed_lists(self, args: list[str]) -> list[str]:
        """Move each typed list option with its values to the end (before ``--``), so that it
        cannot swallow the positional arguments that follow it."""
        lists = {option: action for action in self._actions for option in action.option_strings
                 if action.nargs in ("+", "*") and (action.type is not None or action.choices)}
        if not lists or not self._get_positional_actions():  # nothing to swallow
            return args
        stop = args.index("--") if "--" in args else len(args)
        kept, moved, index = [], [], 0
        while index < stop:
            action = lists.get(args[index])
            if action is None:
                kept.append(args[index])
                index += 1
                continue
            end = index + 1
            while end < stop and _is_value(action, args[end]):
                end += 1
            moved.extend(args[index:end])
            index = end
        return kept + moved + args[stop:]


def _is_value(action: argparse.Action, word: str) -> bool:
    """Whether ``word`` is a valid value of the list option ``action``."""
    try:
        value = action.type(word) if callable(action.type) else word
    except (TypeError, ValueError, argparse.ArgumentTypeError):
        return False
    return action.choices is None or value in action.choices


def build_parser() -> argparse.ArgumentParser:
    parser = IntermixedParser(
        prog="seethrough",
        description="Look inside vision networks: attribution, feature visualization, dissection.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"seethrough.cli.{name}").register(sub)
    return parser


@contextlib.contextmanager
def _one_line_warnings(command: str) -> Iterator[None]:
    """Show each SkippedInputWarning as one line, 'seethrough CMD: warning: skipped x.jpg: ...'."""
    from seethrough.errors import SkippedInputWarning

    with warnings.catch_warnings():
        warnings.simplefilter("always", SkippedInputWarning)
        shown = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if not issubclass(category, SkippedInputWarning):
                return shown(message, category, filename, lineno, file, line)
            print(f"seethrough {command}: warning: {message}", file=sys.stderr)

        warnings.showwarning = show
        yield


def main(argv: list[str] | None = None) -> int:
    from seethrough.allocator import keep_freed_memory
    from seethrough.errors import SeethroughError

    args = build_parser().parse_args(argv)
    keep_freed_memory()
    try:
        with _one_line_warnings(args.command):
            return int(args.run(args) or 0)
    except SeethroughError as error:
        print(f"seethrough {args.command}: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head`
        return 0
    except KeyboardInterrupt:
        print(f"seethrough {args.command}: interrupted", file=sys.stderr)
        return 130

"""The project's own exception types: each message says what went wrong and how to fix it.

Example:
    >>> from seethrough.errors import SeethroughError
    >>> issubclass(LayerNotFoundError, SeethroughError)
    True
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class SeethroughError(Exception):
    """Base class: the CLI prints these as one line and exits non-zero."""


class InputError(SeethroughError, ValueError):
    """A bad argument or tensor (wrong shape, NaN, bad target, unreadable image)."""


class LayerNotFoundError(InputError, KeyError):
    """A layer name that the model does not have; the message lists the closest names."""

    def __init__(self, name: str, known: Iterable[str]):
        known = [k for k in known if k]
        close = difflib.get_close_matches(name, known, n=5, cutoff=0.4)
        if not close:
            close = [k for k in known if name.split(".")[-1] in k][:5] or known[:5]
        self.name = name
        self.close = close
        super().__init__(
            f"no layer named {name!r} in this model; closest names: {', '.join(close)} "
            f"(list all with `seethrough layers MODEL` or seethrough.layers(model))"
        )

    def __str__(self) -> str:  # KeyError would quote the message otherwise
        return self.args[0]


class WeightsError(SeethroughError):
    """A weights file that is missing, unreadable, or does not fit the architecture."""


class ModelNotFoundError(InputError):
    """A model name that is neither bundled nor a torchvision architecture."""


class SkippedInputWarning(UserWarning):
    """An input file that could not be used and was left out (the message names it and why)."""

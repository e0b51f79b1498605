"""One registry shape for methods, metrics, models, sections and experiments.

``register`` raises on a name that is taken (a silent overwrite hides a clash between two
plugins), ``get`` of an unknown name lists the closest known ones, ``names`` lists them all in
the order they were registered.

Example:
    >>> shapes = Registry("shape")
    >>> @shapes.register("square")
    ... def square(side): return side * side
    >>> shapes.get("square")(3), shapes.names()
    (9, ['square'])
    >>> shapes.get("sqare")
    Traceback (most recent call last):
    ...
    seethrough.errors.InputError: unknown shape 'sqare'; did you mean square? (known: square)
"""
from __future__ import annotations

import difflib
from collections.abc import Iterator
from typing import Generic, TypeVar

from seethrough.errors import InputError

Entry = TypeVar("Entry")


class Registry(Generic[Entry]):
    """Named entries of one kind (``kind`` names them in error messages), optionally given at once."""

    def __init__(self, kind: str, entries: dict[str, Entry] | None = None):
        self.kind = kind
        self._entries: dict[str, Entry] = {}
        for name, entry in (entries or {}).items():
            self._add(name, entry)

    def register(self, name: str, entry: Entry | None = None):
        """Add ``entry`` under ``name``; without ``entry``, a decorator that adds what it wraps."""
        if entry is not None:
            self._add(name, entry)
            return entry

        def decorate(value: Entry) -> Entry:
            self._add(name, value)
            return value

        return decorate

    def _add(self, name: str, entry: Entry) -> None:
        if not isinstance(name, str) or not name:
            raise InputError(f"a {self.kind} name is a non-empty string, not {name!r}")
        if name in self._entries:
            raise InputError(f"a {self.kind} named {name!r} is already registered: choose another "
                             "name (or unregister the old one first)")
        self._entries[name] = entry

    def unregister(self, name: str) -> Entry:
        """Remove and return an entry (for tests and for replacing a plugin on purpose)."""
        self.get(name)
        return self._entries.pop(name)

    def get(self, name: str) -> Entry:
        """The entry called ``name``; an unknown name raises with the closest known names."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            pass
        close = difflib.get_close_matches(str(name), list(self._entries), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise InputError(f"unknown {self.kind} {name!r}{hint} (known: {', '.join(self._entries)})")

    def names(self) -> list[str]:
        return list(self._entries)

    def items(self):
        return self._entries.items()

    def __getitem__(self, name: str) -> Entry:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"


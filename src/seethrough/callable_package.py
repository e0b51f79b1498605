"""Packages whose main function has the package's name: ``seethrough.dissect(...)``.

Importing any submodule (``seethrough.dissect.run``) makes Python set the attribute
``seethrough.dissect`` to the package, hiding the function of the same name that
``seethrough`` exports. Making the package callable keeps ``seethrough.dissect(...)`` working
whatever was imported before.

Example:
    >>> import seethrough.dissect.run, seethrough
    >>> callable(seethrough.dissect)
    True
"""
from __future__ import annotations

import sys
import types


def make_callable(package: str, function: str) -> None:
    """Let ``package(...)`` call ``package.function(...)``; call at the end of its ``__init__``."""

    class CallablePackage(types.ModuleType):
        def __call__(self, *args, **kwargs):
            return getattr(self, function)(*args, **kwargs)

    CallablePackage.__call__.__doc__ = f"Same as ``{package}.{function}(...)``."
    sys.modules[package].__class__ = CallablePackage

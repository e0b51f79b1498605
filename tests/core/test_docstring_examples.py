"""Every example in a docstring of the package runs and prints what it says."""
from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import seethrough

MODULES = sorted(
    name for _, name, _ in pkgutil.walk_packages(seethrough.__path__, "seethrough.")
    if not name.endswith("__main__")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    failed, _ = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
                                verbose=False, report=True)
    assert failed == 0, f"{failed} docstring example(s) of {name} failed (see the output above)"

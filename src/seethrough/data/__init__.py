"""Datasets with known concepts: ConceptWorld (generated) and Broden-format folders.

Imports are lazy so that ``import seethrough.data`` stays cheap.

Example:
    >>> from seethrough.data import ConceptWorld
    >>> len(ConceptWorld("val", length=5))
    5
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "ConceptWorld": "seethrough.data.conceptworld",
    "BrodenDataset": "seethrough.data.broden",
    "write_broden": "seethrough.data.broden",
    "sample_grid": "seethrough.data.pictures",
}
__all__ = ["BrodenDataset", "ConceptWorld", "sample_grid", "write_broden"]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""The GAN family's results: dataclasses whose fields are the whole result, so that saving and
loading need no code of their own (tensor fields go to the tensors file, the rest to settings).

Example:
    >>> import tempfile
    >>> from dataclasses import dataclass
    >>> import pandas as pd
    >>> @dataclass
    ... class Pair(FieldResult):
    ...     name: str
    ...     values: torch.Tensor
    ...     def to_frame(self): return pd.DataFrame({"value": self.values.tolist()})
    ...     def plot(self): return bar_figure(["a", "b"], self.values.tolist(), ylabel="v")
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     Pair.load(Pair("x", torch.tensor([1.0, 2.0])).save(folder)).values.tolist()
    [1.0, 2.0]
"""
from __future__ import annotations

from dataclasses import fields

import torch

from seethrough.results import Result, bar_figure


class FieldResult(Result):
    """``Result`` for a dataclass: tensors by field name, every other field in settings."""

    def _settings(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)
                if not isinstance(getattr(self, f.name), torch.Tensor)}

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)
                if isinstance(getattr(self, f.name), torch.Tensor)}

    @classmethod
    def _from_saved(cls, settings: dict, tensors: dict[str, torch.Tensor]):
        return cls(**settings, **tensors)


__all__ = ["FieldResult", "bar_figure"]

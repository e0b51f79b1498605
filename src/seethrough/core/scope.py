"""The run scope of every method: the model is put back exactly as it was afterwards.

``run_scope(model)`` preserves the model (hooks, child modules, ``training``, ``requires_grad``,
and in training mode the buffers that forward passes update, such as BatchNorm statistics),
freezes the parameters while it runs (methods differentiate inputs or activations, never
weights, and the user's ``.grad`` stays untouched) and sets the mode when asked, and restores
all of it on exit, also after an exception.

Example:
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)).train()
    >>> with run_scope(net, mode="eval"):
    ...     net.training, net[0].weight.requires_grad
    (False, False)
    >>> net.training, net[0].weight.requires_grad
    (True, True)
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from seethrough.errors import InputError
from seethrough.preserve import preserve

MODES = (None, "eval", "train")


@contextmanager
def _buffers_kept(model: nn.Module) -> Iterator[None]:
    """In training mode forward passes update buffers (BatchNorm statistics): put them back."""
    if not any(module.training for module in model.modules()):
        yield
        return
    saved = [(buffer, buffer.detach().clone()) for buffer in model.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in saved:
                buffer.copy_(value)


@contextmanager
def run_scope(model: nn.Module, *, mode: str | None = None, freeze: bool = True) -> Iterator[nn.Module]:
    """Run a method on ``model``; everything it changes is restored on exit (see module doc).

    Args:
        mode: ``"eval"`` or ``"train"`` for the block; ``None`` leaves the mode the user chose.
        freeze: ``requires_grad=False`` on every parameter for the block.
    """
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch.nn.Module, not {type(model).__name__}")
    if mode not in MODES:
        raise InputError(f"mode must be 'eval', 'train' or None, not {mode!r}")
    with preserve(model):
        if mode is not None:
            model.train(mode == "train")
        with _buffers_kept(model):
            if freeze:
                for parameter in model.parameters():
                    parameter.requires_grad_(False)
            yield model

"""Where a model lives: the one device lookup of the project; and how many CPU threads torch
uses inside a block (training that must be bit-for-bit reproducible fixes it: CPU kernels split
their sums by thread).

Example:
    >>> from torch import nn
    >>> model_device(nn.Linear(2, 2)).type
    'cpu'
    >>> before = torch.get_num_threads()
    >>> with torch_threads(1):
    ...     torch.get_num_threads()
    1
    >>> torch.get_num_threads() == before
    True
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the block on ``count`` torch threads; the previous count is restored on exit."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter, else its first buffer, else the CPU."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")

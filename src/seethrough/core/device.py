"""Where a model lives: the one device lookup of the project.

Example:
    >>> from torch import nn
    >>> model_device(nn.Linear(2, 2)).type
    'cpu'
"""
from __future__ import annotations

import torch
from torch import nn


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter, else its first buffer, else the CPU."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")

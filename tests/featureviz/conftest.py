"""Small models for the feature-visualization tests."""
from __future__ import annotations

import pytest
import torch
from torch import nn


def tiny_net(seed: int = 0, classes: int = 5) -> nn.Sequential:
    """conv-relu-conv-relu-pool-linear with random weights: fast enough for many small runs."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, classes),
    ).eval()


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every feature-visualization test on one thread (``one_thread`` in tests/conftest.py)."""
    yield


@pytest.fixture
def net() -> nn.Sequential:
    return tiny_net()

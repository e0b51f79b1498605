"""Small models for the feature-visualization tests."""
from __future__ import annotations

import pytest
import torch
import torchvision
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


def smooth_image(seed: int = 0, size: int = 32) -> torch.Tensor:
    """A (1, 3, size, size) image of smooth random colour blobs (a 6 x 6 grid upsampled)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 6, 6, generator=g)
    return torch.nn.functional.interpolate(coarse, size=size, mode="bilinear", align_corners=False)


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    """A random resnet18 with 10 classes, for the synthesis tests."""
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).eval()


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every feature-visualization test on one thread (``one_thread`` in tests/conftest.py)."""
    yield


@pytest.fixture
def net() -> nn.Sequential:
    return tiny_net()

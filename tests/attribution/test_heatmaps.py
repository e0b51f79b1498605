"""Heatmap overlays and the method grid figure."""
from __future__ import annotations

import numpy as np
import torch
from matplotlib.figure import Figure

from seethrough.attribution import Attribution
from seethrough.viz.heatmaps import attribution_grid, overlay


def test_overlay_shape_range_and_emphasis():
    image = torch.full((3, 16, 16), 0.5)
    heat = torch.zeros(1, 16, 16)
    heat[0, :4, :4] = 1.0
    picture = overlay(image, heat)
    assert picture.shape == (16, 16, 3) and picture.min() >= 0 and picture.max() <= 1
    # where the map is zero the image shows through; where it is strong the colour changes it
    assert np.allclose(picture[10, 10], 0.5)
    assert not np.allclose(picture[1, 1], 0.5)


def test_overlay_signed_maps_use_two_colours():
    image = np.full((8, 8, 3), 0.5)
    signed = np.zeros((8, 8))
    signed[0, 0], signed[7, 7] = 1.0, -1.0
    picture = overlay(image, signed, alpha=1.0)
    assert picture[0, 0, 0] > picture[0, 0, 2]  # positive: red
    assert picture[7, 7, 2] > picture[7, 7, 0]  # negative: blue


def test_attribution_grid_takes_tensors_and_results():
    images = torch.rand(2, 3, 16, 16)
    maps = {"saliency": torch.rand(2, 1, 16, 16),
            "gradcam": Attribution(torch.rand(2, 1, 16, 16), method="gradcam")}
    figure = attribution_grid(images, maps, titles=["a", "b"])
    assert isinstance(figure, Figure) and len(figure.axes) == 2 * 3

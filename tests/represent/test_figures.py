"""The pictures of representations: the thumbnail atlas holds the image nearest each cell's
centre, and a 20,000-image map stays a bounded grid."""
import numpy as np
import torch

from seethrough.represent import figures


def test_atlas_of_20000_points_is_a_bounded_grid_of_the_nearest_images():
    rng = np.random.default_rng(0)
    points = rng.normal(size=(20_000, 2))
    read = []

    def thumbnail(index):
        read.append(index)
        return torch.full((3, 8, 8), (index % 255) / 255)

    picture, chosen = figures.atlas(points, thumbnail, classes=rng.integers(0, 8, 20_000),
                                    side=12)
    cells = chosen.shape[0]
    assert cells == 40 and picture.shape == (40 * 12, 40 * 12, 3)
    assert sorted(read) == sorted(chosen[chosen >= 0].tolist())  # only the shown images are read
    low, span = points.min(0), points.max(0) - points.min(0)
    scaled = (points - low) / span * cells
    cell = np.minimum(scaled.astype(int), cells - 1)
    for row, column in [(20, 20), (10, 25), (30, 12)]:
        x, y = column, cells - 1 - row
        inside = np.flatnonzero((cell[:, 0] == x) & (cell[:, 1] == y))
        if len(inside):
            distance = np.linalg.norm(scaled[inside] - (np.array([x, y]) + 0.5), axis=1)
            assert chosen[row, column] == inside[np.argmin(distance)]
        else:
            assert chosen[row, column] == -1
    again, _ = figures.atlas(points, thumbnail, classes=rng.integers(0, 8, 20_000), side=12)
    assert again.shape == picture.shape


def test_map_figure_draws_a_scatter_and_an_atlas():
    points = np.random.default_rng(1).normal(size=(50, 2))
    figure = figures.map_figure(points, lambda i: torch.rand(3, 8, 8),
                                classes=np.arange(50) % 3, class_names=["a", "b", "c"])
    assert len(figure.axes) == 2 and figure.legends

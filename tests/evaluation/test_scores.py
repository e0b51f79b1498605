"""Scores for maps: deletion/insertion, pointing games, IoU, model randomization."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from seethrough.core.ranks import rankdata
from seethrough.errors import InputError
from seethrough.evaluation import (
    area_under_curve,
    deletion,
    deletion_curve,
    energy_pointing_game,
    evaluate,
    insertion,
    iou,
    mask_iou,
    model_randomization,
    pointing_game,
    spearman,
)
from seethrough.evaluation.localization import default_tolerance

SIZE = 16


class PixelEvidence(nn.Module):
    """Two classes; the logit of class 0 is a weighted sum of pixels (weights known)."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(weight)

    def forward(self, x):
        evidence = (x * self.weight).flatten(1).sum(1) - 0.5 * self.weight.sum()
        return torch.stack([evidence, -evidence], dim=1)


@pytest.fixture
def synthetic():
    torch.manual_seed(0)
    weight = torch.zeros(1, 3, SIZE, SIZE)
    weight[..., 4:10, 3:9] = torch.rand(1, 3, 6, 6) + 0.5  # evidence only in a square
    model = PixelEvidence(weight * 0.05).eval()
    images = torch.rand(4, 3, SIZE, SIZE) * 0.2  # dark, with a bright object where the evidence is
    images[..., 3:11, 2:10] += 0.8
    perfect = (images * weight).sum(1, keepdim=True)  # each pixel's contribution
    random = torch.rand(4, 1, SIZE, SIZE)
    return model, images, perfect, random


def test_deletion_perfect_map_beats_random(synthetic):
    model, images, perfect, random = synthetic
    good = deletion(model, images, perfect, target=0, progress=False)
    bad = deletion(model, images, random, target=0, progress=False)
    worst = deletion(model, images, -perfect, target=0, progress=False)
    assert good.shape == (4,)
    assert (good < bad).all() and (bad < worst).all()


def test_insertion_perfect_map_beats_random(synthetic):
    model, images, perfect, random = synthetic
    good = insertion(model, images, perfect, target=0, progress=False)
    bad = insertion(model, images, random, target=0, progress=False)
    assert (good > bad).all()


def test_curve_ends_and_batching(synthetic):
    model, images, perfect, _ = synthetic
    curves = deletion_curve(model, images, perfect, target=0, step=8, batch_size=5, progress=False)
    assert curves.shape == (4, SIZE * SIZE // 8 + 1)
    with torch.no_grad():
        start = model(images).softmax(1)[:, 0]
        end = model(torch.zeros_like(images)).softmax(1)[:, 0]
    torch.testing.assert_close(curves[:, 0], start)
    torch.testing.assert_close(curves[:, -1], end)
    one_batch = deletion_curve(model, images, perfect, target=0, step=8, batch_size=1000,
                               progress=False)
    torch.testing.assert_close(curves, one_batch)
    # a step that does not divide the pixel count still ends with every pixel changed
    ragged = deletion_curve(model, images, perfect, target=0, step=100, progress=False)
    assert ragged.shape == (4, 4)
    torch.testing.assert_close(ragged[:, -1], end)


def test_area_under_curve_is_trapezoid():
    curves = torch.tensor([[1.0, 0.5, 0.0], [1.0, 1.0, 1.0]])
    torch.testing.assert_close(area_under_curve(curves), torch.tensor([0.5, 1.0]))


def test_pointing_game_hit_and_miss():
    masks = torch.zeros(3, 32, 32, dtype=torch.bool)
    masks[:, 10:20, 10:20] = True
    maps = torch.zeros(3, 1, 32, 32)
    maps[0, 0, 15, 15] = 1.0  # inside
    maps[1, 0, 15, 23] = 1.0  # 4 px right of the mask
    maps[2, 0, 15, 28] = 1.0  # 9 px away
    assert pointing_game(maps, masks, tolerance=0).tolist() == [1.0, 0.0, 0.0]
    assert pointing_game(maps, masks, tolerance=4).tolist() == [1.0, 1.0, 0.0]
    assert pointing_game(maps, masks, tolerance=3).tolist() == [1.0, 0.0, 0.0]
    assert default_tolerance(224) == 15 and default_tolerance(64) == 4


def test_pointing_game_empty_mask_is_nan():
    result = pointing_game(torch.rand(1, 8, 8), torch.zeros(1, 8, 8, dtype=torch.bool))
    assert torch.isnan(result).all()


def test_energy_pointing_game():
    masks = torch.zeros(2, 16, 16, dtype=torch.bool)
    masks[:, 4:8, 4:8] = True
    inside = torch.zeros(2, 16, 16)
    inside[:, 5:7, 5:7] = 3.0
    inside[:, 0, 0] = -10.0  # negative values carry no energy
    torch.testing.assert_close(energy_pointing_game(inside, masks), torch.ones(2))
    half = inside.clone()
    half[:, 12:14, 12:14] = 3.0
    torch.testing.assert_close(energy_pointing_game(half, masks), torch.full((2,), 0.5))
    # bounding box: a ring-shaped mask, energy in its hole counts only with box=True
    ring = torch.zeros(1, 16, 16, dtype=torch.bool)
    ring[0, 2:10, 2:10] = True
    ring[0, 4:8, 4:8] = False
    hole = torch.zeros(1, 16, 16)
    hole[0, 5, 5] = 1.0
    assert energy_pointing_game(hole, ring).item() == 0.0
    assert energy_pointing_game(hole, ring, box=True).item() == 1.0


def test_iou_exact():
    a = torch.zeros(1, 10, 10, dtype=torch.bool)
    b = torch.zeros(1, 10, 10, dtype=torch.bool)
    a[0, 0:4, 0:5] = True  # 20 px
    b[0, 2:6, 0:5] = True  # 20 px, overlap 10
    assert iou(a, b).item() == pytest.approx(10 / 30)
    maps = torch.zeros(1, 10, 10)
    maps[0, 0:4, 0:5] = torch.arange(20.0).view(4, 5) + 1
    assert mask_iou(maps, b, top=0.2).item() == pytest.approx(10 / 30)
    assert mask_iou(maps, b, top=0.1).item() == pytest.approx(10 / 20)  # top 10 = rows 2-3


def test_spearman_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    torch.manual_seed(1)
    a = torch.rand(3, 50).round(decimals=1)  # many ties
    b = a + 0.3 * torch.rand(3, 50)
    ours = spearman(a, b)
    for row in range(3):
        assert ours[row].item() == pytest.approx(stats.spearmanr(a[row], b[row]).statistic, abs=1e-6)
    torch.testing.assert_close(rankdata(torch.tensor([3.0, 1.0, 3.0, 2.0])),
                               torch.tensor([3.5, 1.0, 3.5, 2.0], dtype=torch.float64))


def _gradient_map(model, images, targets):
    images = images.clone().requires_grad_(True)
    output = model(images)
    output.gather(1, targets.view(-1, 1)).sum().backward()
    return images.grad.abs().amax(1, keepdim=True)


def test_model_randomization(unchanged):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(128, 5),
    ).eval()
    images = torch.rand(3, 3, 16, 16)
    rng_state = torch.get_rng_state()
    with unchanged(model):
        result = model_randomization(model, images, _gradient_map, progress=False)
    assert torch.equal(torch.get_rng_state(), rng_state)
    assert result.layers == ["6", "2", "0"]
    assert result.correlations.shape == (4, 3)
    torch.testing.assert_close(result.correlations[0], torch.ones(3))
    means = result.mean()
    assert means[-1] < 0.6 and means[-1] < means[0] - 0.3
    frame = result.to_frame()
    assert list(frame["randomized_down_to"]) == ["(none)", "6", "2", "0"]


def test_evaluate_table(synthetic):
    model, images, perfect, _ = synthetic
    masks = torch.zeros(4, SIZE, SIZE, dtype=torch.bool)
    masks[:, 4:10, 3:9] = True
    scores = evaluate(model, images, perfect, target=0, masks=masks, progress=False)
    frame = scores.to_frame()
    assert list(frame.columns) == ["image", "target", "deletion", "insertion", "pointing_game",
                                   "energy_pointing_game", "mask_iou"]
    assert len(frame) == 4
    mean = scores.mean()
    assert mean["pointing_game"] == 1.0 and mean["energy_pointing_game"] == pytest.approx(1.0)
    with pytest.raises(InputError, match="need masks"):
        evaluate(model, images, perfect, target=0, metrics=["pointing_game"])
    with pytest.raises(InputError, match="unknown metric"):
        evaluate(model, images, perfect, target=0, masks=masks, metrics=["accuracy"])


def test_bad_inputs_are_clear(synthetic):
    model, images, perfect, _ = synthetic
    with pytest.raises(InputError, match="one map per image"):
        deletion(model, images, perfect[:2], target=0)
    with pytest.raises(InputError, match="one channel"):
        deletion(model, images, images, target=0)
    with pytest.raises(InputError, match="substrate"):
        deletion(model, images, perfect, target=0, substrate="noise")
    with pytest.raises(InputError, match="class indices for 4 images"):
        deletion(model, images, perfect, target=[0, 1])
    with pytest.raises(InputError, match="masks must have shape"):
        pointing_game(perfect, torch.zeros(3, SIZE, SIZE, dtype=torch.bool))


def test_top_level_evaluate_is_callable_after_subpackage_import(synthetic):
    import seethrough
    import seethrough.evaluation.localization

    model, images, perfect, _ = synthetic
    scores = seethrough.evaluate(model, images, perfect, target=0, metrics=["deletion"],
                                 progress=False)
    assert scores.values["deletion"].shape == (4,)
    assert seethrough.evaluation.pointing_game is seethrough.evaluation.localization.pointing_game

"""Experiments: transforms keep images and labels together, rotations are rotations, and the
axis-alignment, robustness and PCA analyses measure what they claim."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from seethrough.dissection import dissect
from seethrough.dissection.experiments import (
    axis_alignment,
    concept_pca,
    noise_transform,
    random_rotation,
    robustness,
    rotation_power,
    rotation_transform,
    shuffle_transform,
)
from seethrough.dissection.labels import LabelBatch
from tests.dissection.test_reference import small_cnn
from tests.dissection.test_run import WORLD


def coded_batch():
    """Images whose red channel encodes the label map, so they can be checked to move together."""
    labels = torch.randint(1, 9, (2, 1, 16, 16))
    images = torch.stack([labels[:, 0].float() / 10, torch.zeros(2, 16, 16), torch.zeros(2, 16, 16)], 1)
    return images, LabelBatch(pixel=labels, image=torch.zeros(2, 1, dtype=torch.long))


def test_shuffle_moves_images_and_labels_together():
    images, labels = coded_batch()
    out, moved = shuffle_transform(4)(images, labels, torch.arange(2))
    assert torch.equal((out[:, 0] * 10).round().long(), moved.pixel[:, 0])
    assert not torch.equal(out, images)
    assert torch.equal(out.flatten().sort().values, images.flatten().sort().values)


def test_rotation_by_90_is_exact():
    images, labels = coded_batch()
    out, moved = rotation_transform(90)(images, labels, 0)
    assert torch.equal(moved.pixel, torch.rot90(labels.pixel, 1, (-2, -1)))
    assert torch.allclose(out, torch.rot90(images, 1, (-2, -1)), atol=1e-6)


def test_partial_rotations():
    q = random_rotation(6, torch.Generator().manual_seed(1))
    eye = torch.eye(6, dtype=torch.float64)
    assert torch.allclose(q @ q.T, eye, atol=1e-10) and torch.det(q) > 0
    half = rotation_power(q, 0.5)
    assert torch.allclose(half @ half, q, atol=1e-8)
    assert torch.allclose(half @ half.T, eye, atol=1e-8)
    assert torch.equal(rotation_power(q, 0), eye)


@pytest.fixture(scope="module")
def model():
    return small_cnn()


def test_permuting_units_changes_nothing(model):
    """A rotation that only permutes units keeps the detectors: the counts are of the basis."""
    base = dissect(model, ["7"], WORLD, batch_size=20, progress=False)
    order = torch.randperm(16, generator=torch.Generator().manual_seed(0))
    permuted = dissect(model, ["7"], WORLD, batch_size=20, progress=False,
                       basis={"7": torch.eye(16)[order]})
    assert torch.equal(permuted.layers["7"].thresholds, base.layers["7"].thresholds[order])
    assert torch.allclose(permuted.iou("7"), base.iou("7")[order])
    assert base.unique_detectors().equals(permuted.unique_detectors())


def test_axis_alignment_starts_at_the_units(model):
    frame = axis_alignment(model, "7", WORLD, fractions=(0, 1), draws=2, batch_size=20)
    base = dissect(model, ["7"], WORLD, batch_size=20, progress=False).unique_detectors()
    at_zero = frame[(frame.fraction == 0) & (frame.draw == 1)].set_index("category")
    for row in base.itertuples():
        assert at_zero.loc[row.category, "unique_detectors"] == row.unique_detectors
    assert set(frame.fraction) == {0, 1} and set(frame.draw) == {0, 1}


def test_robustness_levels(model):
    frame = robustness(model, ["7"], WORLD, kind="noise", levels=(100,), batch_size=20,
                       progress=False)
    assert set(frame.level) == {0, 100} and set(frame.layer) == {"7"}
    base = dissect(model, ["7"], WORLD, batch_size=20, progress=False).unique_detectors()
    assert frame[frame.level == 0].unique_detectors.tolist() == base.unique_detectors.tolist()


class Correlated(nn.Module):
    """Unit 0: a fixed random field over positions; units 1-3: the same green signal."""

    def forward(self, x):
        g = x[:, 1:2]
        field = torch.rand(x.shape[-2:], generator=torch.Generator().manual_seed(0))
        scramble = field.expand_as(g)
        return torch.cat([scramble, g, g * 1.01 + 0.01 * scramble, g * 0.99 - 0.01 * scramble], 1)


def test_concept_pca_counts_units_sharing_a_direction():
    model = nn.Sequential(Correlated())
    pca = concept_pca(model, "0", WORLD, "green", category="colour")
    assert pca.positions > 10
    assert 2.5 < pca.effective_units < 3.5  # the three correlated units share the loading
    assert pca.loading[0].abs() < 0.2 and pca.explained[0] > 0.7


def test_random_transforms_seed_each_image_from_its_index():
    """Noise and shuffles depend on the image's dataset index, not on the batch it came in."""
    images, labels = coded_batch()
    images = images.repeat(3, 1, 1, 1)
    labels = LabelBatch(pixel=labels.pixel.repeat(3, 1, 1, 1), image=labels.image.repeat(3, 1))
    for transform in (noise_transform(5, seed=2), shuffle_transform(4, seed=2)):
        whole = transform(images, labels, torch.arange(6))[0]
        parts = [transform(images[a:b], LabelBatch(pixel=labels.pixel[a:b], image=labels.image[a:b]),
                           torch.arange(a, b))[0] for a, b in ((0, 2), (2, 6))]
        assert torch.equal(whole, torch.cat(parts))
        assert not torch.equal(whole[0], whole[2])  # same picture, another index: other draw

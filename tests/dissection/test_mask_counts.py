"""Sparse mask counting equals counting the dense upsampled masks, in every geometry, with the
fused kernels and with the torch code; the quantile sketch bins the same way on both paths."""
from __future__ import annotations

import pytest
import torch

from seethrough.dissection import IoUCounter, unit_masks
from seethrough.dissection.labels import LabelBatch, Vocabulary
from seethrough.dissection.mask_counts import Bands, mask_counts
from seethrough.dissection.upsample import anchored_matrix, bilinear_matrix
from seethrough.errors import InputError

VOCABULARY = Vocabulary({"colour": ["none", "red", "green", "blue"], "shape": ["none", "disc", "bar"],
                         "scene": ["none", "sea", "sky"]})


def random_labels(n: int, size: tuple[int, int], generator: torch.Generator) -> LabelBatch:
    colour = torch.randint(0, 4, (n, 1, *size), generator=generator)
    shape = torch.randint(0, 3, (n, 1, *size), generator=generator)
    pixel = torch.cat([colour, torch.where(shape > 0, shape + 3, 0)], 1)
    image = torch.randint(6, 8, (n, 1), generator=generator)
    return LabelBatch(pixel=pixel, image=image)


@pytest.fixture(params=["fused", "torch"])
def path(request, monkeypatch):
    """Both implementations: the numba kernels and the torch code."""
    from seethrough.dissection import kernels

    monkeypatch.setattr(kernels, "ENABLED", request.param == "fused")
    # numba is a dependency: the fused path must really run, not fall back to torch
    assert kernels.enabled_for(torch.zeros(1)) == (request.param == "fused")
    return request.param


@pytest.mark.parametrize("grid, size, mode", [
    ((7, 7), (64, 64), "bilinear"),
    ((5, 3), (37, 50), "bilinear"),      # scale factors that are not integers, h != w
    ((1, 1), (16, 16), "bilinear"),      # a (N, K) output seen as 1 x 1 maps
    ((8, 8), (8, 8), "bilinear"),        # no upsampling at all
    ((6, 6), (48, 48), "anchored"),      # the original's receptive-field centres
])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_sparse_counts_equal_dense_masks(grid, size, mode, layout, path):
    generator = torch.Generator().manual_seed(0)
    n, units = 5, 9
    acts = torch.randn(n, units, *grid, generator=generator).relu().contiguous(memory_format=layout)
    thresholds = torch.quantile(acts.transpose(0, 1).reshape(units, -1), 0.9, dim=1).double()
    if mode == "bilinear":
        rows, cols = bilinear_matrix(grid[0], size[0]), bilinear_matrix(grid[1], size[1])
    else:
        rows = anchored_matrix(grid[0], size[0], offset=3.5, step=8, image=size[0])
        cols = anchored_matrix(grid[1], size[1], offset=3.5, step=8, image=size[1])
    labels = random_labels(n, size, generator)
    dense, sparse = IoUCounter(units, VOCABULARY), IoUCounter(units, VOCABULARY)
    dense.update(unit_masks(acts.double(), thresholds, rows, cols), labels)
    sparse.add(*mask_counts(acts, thresholds, Bands.from_matrix(rows), Bands.from_matrix(cols),
                            labels, len(VOCABULARY)), labels)
    assert dense.intersection.sum() > 0, "the masks must not be empty"
    torch.testing.assert_close(sparse.intersection, dense.intersection, rtol=0, atol=0)
    for rule in ("paper", "netdissect_lite"):
        torch.testing.assert_close(sparse.union(rule), dense.union(rule), rtol=0, atol=0)


def test_bands_refuse_a_non_linear_resize():
    with pytest.raises(InputError, match="linear interpolation"):
        Bands.from_matrix(torch.full((4, 3), 1 / 3))


def test_fused_and_torch_sketches_are_identical(monkeypatch):
    from seethrough.dissection import kernels
    from seethrough.dissection.quantile import QuantileSketch

    generator = torch.Generator().manual_seed(0)
    units = 19  # the kernel bins units in groups of 8: a partial group too
    batches = [torch.randn(6, units, 7, 7, generator=generator).relu() * scale for scale in (1, 3, 0.1)]
    batches[1] = batches[1].contiguous(memory_format=torch.channels_last)
    batches.append(torch.randn(4, units, 3, 3, generator=generator).double() - 2)  # float64, < 0
    sketches = {}
    for enabled in (True, False):
        monkeypatch.setattr(kernels, "ENABLED", enabled)
        assert kernels.enabled_for(batches[0]) == enabled  # numba is a dependency
        sketch = QuantileSketch(units, bins=64)
        for batch in batches:
            sketch.update(batch)
        sketches[enabled] = sketch.state_dict()
    for key, value in sketches[True].items():
        assert torch.equal(torch.as_tensor(value), torch.as_tensor(sketches[False][key])), key
    with pytest.raises(InputError, match="NaN"):
        monkeypatch.setattr(kernels, "ENABLED", True)
        QuantileSketch(2).update(torch.tensor([[1.0, float("nan")]]))


def test_label_counts_are_the_same_on_both_paths(path):
    labels = random_labels(4, (9, 11), torch.Generator().manual_seed(1))
    counts = labels.label_counts(len(VOCABULARY))
    expected = torch.stack([torch.bincount(p.flatten(), minlength=len(VOCABULARY)) for p in labels.pixel])
    expected[:, 0] = 0
    assert torch.equal(counts, expected.float())


def test_labels_that_are_not_concept_indices_are_refused(path):
    generator = torch.Generator().manual_seed(2)
    labels = random_labels(2, (8, 8), generator)
    labels.pixel[1, 0] = len(VOCABULARY) + 3  # out of bounds for the counts: must not be written
    acts = torch.ones(2, 3, 4, 4)  # every pixel is in every mask
    bands = Bands.from_matrix(bilinear_matrix(4, 8))
    with pytest.raises(InputError, match=rf"outside 0\.\.{len(VOCABULARY) - 1}"):
        mask_counts(acts, torch.zeros(3), bands, bands, labels, len(VOCABULARY))
    with pytest.raises(InputError, match=rf"outside 0\.\.{len(VOCABULARY) - 1}"):
        labels.label_counts(len(VOCABULARY))

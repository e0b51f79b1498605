"""Neuron groups (NMF, Olah et al. 2018) and activation atlases (Carter et al. 2019)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from seethrough.errors import InputError
from seethrough.featureviz import Atlas, NeuronGroups, activation_atlas, neuron_groups
from seethrough.featureviz.atlas import grid_cells
from seethrough.trace import capture


def blobs(size: int = 16) -> torch.Tensor:
    """Three non-negative spatial parts (Gaussian blobs in three corners), (3, size, size)."""
    y, x = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    centres = [(3, 3), (12, 4), (8, 12)]
    return torch.stack([torch.exp(-((y - cy) ** 2 + (x - cx) ** 2) / 8) for cy, cx in centres])


def mixture_net(channels: int = 12, seed: int = 1) -> tuple[nn.Sequential, torch.Tensor]:
    """A layer whose activation on an image is sum_k pattern_k (C,) x image channel k (H, W):
    fed the blobs as an image, a known non-negative mixture of 3 parts."""
    patterns = torch.rand(channels, 3, generator=torch.Generator().manual_seed(seed))
    net = nn.Sequential(nn.Conv2d(3, channels, 1, bias=False), nn.ReLU()).eval()
    with torch.no_grad():
        net[0].weight.copy_(patterns[:, :, None, None])
    return net, patterns


def correlations(found: torch.Tensor, truth: torch.Tensor) -> np.ndarray:
    """(len(found), len(truth)) Pearson correlations of flattened rows."""
    a, b = found.flatten(1).double().numpy(), truth.flatten(1).double().numpy()
    return np.corrcoef(np.concatenate([a, b]))[:len(a), len(a):]


# -- neuron groups -------------------------------------------------------------------------------
def test_nmf_recovers_known_parts():
    net, patterns = mixture_net()
    parts = blobs()
    groups = neuron_groups(net, parts, "1", n_groups=3)
    assert isinstance(groups, NeuronGroups)
    assert groups.spatial.shape == (3, 16, 16) and groups.directions.shape == (3, 12)
    spatial = correlations(groups.spatial, parts)
    # each true part matched by its own group
    assert sorted(spatial.argmax(0).tolist()) == [0, 1, 2]
    assert spatial.max(0).min() > 0.9
    channels = correlations(groups.directions, patterns.T)
    assert channels.max(0).min() > 0.9
    assert groups.error < 0.01 and groups.clipped == 0.0
    assert (groups.spatial >= 0).all() and (groups.directions >= 0).all()


def test_error_decreases_with_groups_and_is_seeded(net):
    image = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
    errors = [neuron_groups(net, image, "3", n_groups=k).error for k in (1, 2, 4, 8)]
    assert all(a > b for a, b in itertools.pairwise(errors)), errors
    assert 0 < errors[-1] < errors[0] < 1
    first, second = (neuron_groups(net, image, "3", n_groups=4, seed=3) for _ in range(2))
    assert torch.equal(first.spatial, second.spatial)
    assert torch.equal(first.directions, second.directions)
    assert first.error == second.error


def test_negative_layer_is_clipped_and_reported(net):
    image = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
    groups = neuron_groups(net, image, "2", n_groups=3)  # the conv before its ReLU
    assert 0 < groups.clipped < 1
    assert (groups.spatial >= 0).all()
    assert neuron_groups(net, image, "3", n_groups=3).clipped == 0.0  # after the ReLU


def test_conceptnet_groups_find_the_object():
    """One of 4 groups at block4 follows the main object's mask, far better than it follows the
    mask turned by 180 degrees."""
    import seethrough
    from seethrough.data import ConceptWorld

    model = seethrough.load_model("conceptnet")
    data = ConceptWorld("val", length=6)
    found, turned = [], []
    for i in range(len(data)):
        sample = data[i]
        groups = neuron_groups(model, sample["image"], "features.block4", n_groups=4)
        mask = sample["object_mask"].float()[None, None]
        mask = torch.nn.functional.adaptive_avg_pool2d(mask, groups.spatial.shape[-2:])[0]
        found.append(correlations(groups.spatial, mask).max())
        turned.append(correlations(groups.spatial, mask.flip(-1, -2)).max())
    assert np.mean(found) > 0.6 and np.mean(found) > np.mean(turned) + 0.2, (found, turned)


def test_neuron_groups_visualize_plot_save(net, tmp_path):
    before = {k: v.clone() for k, v in net.state_dict().items()}
    groups = neuron_groups(net, torch.rand(3, 16, 16), "3", n_groups=2)
    result = groups.visualize(net, steps=4, size=24)
    assert result.images.shape == (2, 3, 24, 24) and groups.renders.shape == (2, 3, 24, 24)
    assert len(result.history) == 4 and len(result.history[0]) == 2
    frame = groups.to_frame()
    assert list(frame["group"]) == [0, 1] and abs(frame["share"].sum() - 1) < 1e-5
    assert groups.plot().axes
    loaded = NeuronGroups.load(groups.save(tmp_path / "groups"))
    assert torch.equal(loaded.directions, groups.directions)
    assert torch.equal(loaded.renders, groups.renders) and loaded.error == groups.error
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    assert not net.training and not any(m._forward_hooks for m in net.modules())


# -- activation atlas ----------------------------------------------------------------------------
@pytest.fixture
def small_atlas(net) -> tuple[nn.Sequential, torch.Tensor, Atlas]:
    images = torch.rand(40, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(40) % 3
    atlas = activation_atlas(net, images, "3", grid=4, method="pca", min_count=1, per_image=2,
                             labels=labels, batch_size=16, progress=False)
    return net, images, atlas


def test_atlas_counts_and_cell_averages(small_atlas):
    net, images, atlas = small_atlas
    assert len(atlas.activations) == 80  # 2 positions of each of 40 images
    assert int(atlas.counts.sum()) == 80
    # each sample is the layer's activation at its image and position (computed here)
    acts = capture(net, images, "3")["3"].output.flatten(2)  # (40, 16, 64)
    expected = acts[atlas.images, :, atlas.positions]
    assert torch.allclose(atlas.activations, expected, atol=1e-6)
    # each image got 2 distinct positions
    pairs = {(int(i), int(p)) for i, p in zip(atlas.images, atlas.positions)}
    assert len(pairs) == 80
    # cells from the layout, recomputed here; averages are the means of their members
    col = np.minimum((atlas.layout[:, 0].numpy() * 4).astype(int), 3)
    row = 3 - np.minimum((atlas.layout[:, 1].numpy() * 4).astype(int), 3)
    cells = row * 4 + col
    assert (cells == atlas.sample_cells.numpy()).all()
    for k, cell in enumerate(atlas.cells.tolist()):
        members = expected[torch.from_numpy(cells == cell)]
        assert len(members) == int(atlas.counts[k])
        assert torch.allclose(atlas.averages[k], members.mean(0), atol=1e-5)
    frame = atlas.to_frame()
    assert list(frame.columns[:4]) == ["cell", "row", "col", "count"]
    assert frame["count"].sum() == 80 and set(frame["top_class"]) <= {0, 1, 2}


def test_atlas_min_count_and_seed(net):
    images = torch.rand(40, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    options = {"grid": 6, "method": "pca", "progress": False, "batch_size": 16}
    sparse = activation_atlas(net, images, "3", min_count=3, seed=5, **options)
    assert (sparse.counts >= 3).all()
    kept = torch.isin(sparse.sample_cells, sparse.cells)
    assert int(sparse.counts.sum()) == int(kept.sum()) < 40
    again = activation_atlas(net, images, "3", min_count=3, seed=5, **options)
    assert torch.equal(sparse.positions, again.positions)
    assert torch.equal(sparse.averages, again.averages)
    other = activation_atlas(net, images, "3", min_count=3, seed=6, **options)
    assert not torch.equal(sparse.positions, other.positions)
    # positions depend on the image and seed, not the batching
    rebatched = activation_atlas(net, images, "3", min_count=3, seed=5, grid=6, method="pca",
                                 progress=False, batch_size=7)
    assert torch.equal(sparse.positions, rebatched.positions)
    assert grid_cells(torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.99, 0.01]]), 2).tolist() == [2, 1, 3]


def test_atlas_visualize_plot_save(small_atlas, tmp_path):
    net, _, atlas = small_atlas
    before = {k: v.clone() for k, v in net.state_dict().items()}
    result = atlas.visualize(net, steps=4, cells=[0, 2, 1], batch_size=2, size=24)
    assert result.images.shape == (3, 3, 24, 24)
    assert len(result.history) == 4 and len(result.history[0]) == 3
    assert atlas.renders.shape == (len(atlas.cells), 3, 24, 24)
    assert atlas.rendered.tolist()[:3] == [True, True, True] and int(atlas.rendered.sum()) == 3
    assert torch.equal(atlas.renders[2], result.images[1])
    assert atlas.plot().axes
    loaded = Atlas.load(atlas.save(tmp_path / "atlas"))
    assert torch.equal(loaded.averages, atlas.averages) and torch.equal(loaded.renders, atlas.renders)
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    assert not any(m._forward_hooks for m in net.modules())


def test_conceptnet_atlas_separates_shapes():
    import seethrough
    from seethrough.data import ConceptWorld

    model = seethrough.load_model("conceptnet")
    data = ConceptWorld("val", length=200)
    atlas = activation_atlas(model, data, "features.block5", grid=8, method="pca", min_count=1,
                             progress=False)
    frame = atlas.to_frame()
    assert int(frame["count"].sum()) == 200 and (atlas.labels >= 0).all()
    assert frame["top_class"].nunique() >= 4
    assert "top_name" in frame and set(frame["top_name"]) <= set(model.class_names)
    # purity of the cells vs the same cells with the labels shuffled among the samples
    purity = atlas.purity()
    rng = np.random.default_rng(0)
    shuffled = []
    for _ in range(20):
        labels = atlas.labels[torch.from_numpy(rng.permutation(len(atlas.labels)))]
        top = sum(int(torch.bincount(labels[atlas.sample_cells == cell]).max())
                  for cell in atlas.cells.tolist())
        shuffled.append(top / len(labels))
    assert purity > max(shuffled) and purity > np.mean(shuffled) + 0.05, (purity, shuffled)


# -- errors --------------------------------------------------------------------------------------
@pytest.mark.parametrize("call, words", [
    (lambda net, x: neuron_groups(net, x[0], "3", n_groups=0), "n_groups"),
    (lambda net, x: neuron_groups(net, x[0], "3", n_groups=17), "n_groups"),
    (lambda net, x: neuron_groups(net, x[0], "7"), "no spatial dims"),
    (lambda net, x: activation_atlas(net, x, "3", method="tsne"), "unknown method"),
    (lambda net, x: activation_atlas(net, x, "3", grid=1), "grid"),
    (lambda net, x: activation_atlas(net, x, "3", method="pca", progress=False, labels=[0]),
     "labels"),
    (lambda net, x: activation_atlas(net, x, "7", method="pca", progress=False),
     "no spatial dims"),
])
def test_bad_arguments_raise_one_line(net, call, words):
    with pytest.raises(InputError) as error:
        call(net, torch.rand(6, 3, 16, 16))
    assert words in str(error.value) and "\n" not in str(error.value)

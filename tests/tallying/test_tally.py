"""tally: any dataset wrapper, exact shards, checkpoints, a cache that refuses another run; the
families on it (dissection, concept PCA, TCAV)."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader, Subset

from seethrough.data import ConceptWorld
from seethrough.dissection import dissect
from seethrough.dissection.labels import Vocabulary, collate
from seethrough.dissection.run import unit_maps
from seethrough.dissection.stats import LayerIoU, LayerQuantiles, LayerTopImages
from seethrough.errors import InputError
from seethrough.tallying import ActivationCache, merge_all, read_checkpoint, tally
from seethrough.tallying.stats import Moments
from tests.dissection.test_reference import small_cnn
from tests.dissection.test_run import WORLD, same


@pytest.fixture(scope="module")
def model():
    return small_cnn()


def test_subset_concat_and_loader_of_concept_datasets_are_dissected(model):
    """Regression: ``dissect(model, layers, Subset(world, ...))`` failed ("no `categories`")."""
    world = ConceptWorld("val", length=24, size=64)
    whole = dissect(model, ["7"], world, batch_size=8, progress=False)
    for wrapped in (Subset(world, range(24)), ConcatDataset([Subset(world, range(8)),
                                                             Subset(world, range(8, 24))]),
                    DataLoader(world, batch_size=5)):
        same(whole, dissect(model, ["7"], wrapped, batch_size=8, progress=False))
    with pytest.raises(InputError, match="no `categories`"):
        dissect(model, ["7"], [torch.rand(3, 64, 64)], progress=False)


def _dissection_stats(layer: str, vocabulary, thresholds=None):
    if thresholds is None:
        return {"sketch": LayerQuantiles(layer, 512), "top": LayerTopImages(layer, 5)}
    from seethrough.dissection.mask_counts import Bands
    from seethrough.dissection.upsample import bilinear_matrix

    def geometry(act, label):
        return tuple(Bands.from_matrix(bilinear_matrix(a, b)) for a, b in zip(act, label))

    return {"iou": LayerIoU(layer, vocabulary, thresholds, geometry)}


@pytest.mark.parametrize("count", [2, 3])
def test_shards_merge_exactly_into_the_single_run(model, count):
    vocabulary = Vocabulary(WORLD.categories)
    options = dict(batch_size=4, collate=lambda s: collate(s, vocabulary), activations=unit_maps,
                   progress=False)
    single = tally(model, ["7"], WORLD, _dissection_stats("7", vocabulary), **options)
    parts = [tally(model, ["7"], WORLD, _dissection_stats("7", vocabulary), shard=(i, count),
                   **options) for i in range(count)]
    merged = merge_all(parts)
    assert torch.equal(merged["sketch"].sketch.upper_quantile(0.01),
                       single["sketch"].sketch.upper_quantile(0.01))
    assert torch.equal(merged["top"].inner.indices, single["top"].inner.indices)
    thresholds = single["sketch"].sketch.upper_quantile(0.01)
    single = tally(model, ["7"], WORLD, _dissection_stats("7", vocabulary, thresholds), **options)
    parts = [tally(model, ["7"], WORLD, _dissection_stats("7", vocabulary, thresholds),
                   shard=(i, count), **options) for i in range(count)]
    merged = merge_all(parts)["iou"].inner
    assert torch.equal(merged.intersection, single["iou"].inner.intersection)
    assert torch.equal(merged.iou(), single["iou"].inner.iou())
    with pytest.raises(InputError, match="shard"):
        tally(model, ["7"], WORLD, _dissection_stats("7", vocabulary), shard=(2, 2), **options)


def test_moments_of_shards_equal_one_pass(model):
    options = dict(batch_size=6, activations=unit_maps, progress=False)
    one = tally(model, ["4"], WORLD, {"m": Moments("4")}, **options)["m"]
    parts = merge_all([tally(model, ["4"], WORLD, {"m": Moments("4")}, shard=(i, 3), **options)
                       for i in range(3)])["m"]
    torch.testing.assert_close(parts.mean, one.mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(parts.std, one.std, rtol=1e-10, atol=1e-12)


def test_checkpoint_resumes_and_refuses_another_run(model, tmp_path):
    path = tmp_path / "pass.ckpt"
    options = dict(batch_size=4, activations=unit_maps, progress=False, checkpoint_every=2)
    reference = tally(model, ["4"], WORLD, {"m": Moments("4")}, **options)["m"]

    class Broken(torch.utils.data.Dataset):
        calls = 0

        def __len__(self):
            return len(WORLD)

        def __getitem__(self, i):
            Broken.calls += 1
            if Broken.calls == 23:  # while loading batch 5
                raise KeyboardInterrupt
            return WORLD[i]

        def __repr__(self):
            return repr(WORLD)

    with pytest.raises(KeyboardInterrupt):
        tally(model, ["4"], Broken(), {"m": Moments("4")}, checkpoint=path, **options)
    saved = read_checkpoint(path)
    assert saved["next_batch"] == 5 and not saved["done"]
    resumed = tally(model, ["4"], Broken(), {"m": Moments("4")}, checkpoint=path, **options)["m"]
    assert Broken.calls - 22 == len(WORLD) - 20 + 1  # only the batches left were loaded again
    torch.testing.assert_close(resumed.mean, reference.mean, rtol=0, atol=0)
    with pytest.raises(InputError, match="belongs to another run"):
        tally(model, ["7"], WORLD, {"m": Moments("7")}, checkpoint=path, **options)


def test_a_cache_serves_several_passes_and_refuses_another_run(model):
    cache = ActivationCache(memory=1 << 16)  # small: batches spill to disk
    calls = []

    class Counting(torch.utils.data.Dataset):
        categories = WORLD.categories

        def __len__(self):
            return len(WORLD)

        def __getitem__(self, i):
            calls.append(i)
            return WORLD[i]

        def __repr__(self):
            return "Counting"

    data = Counting()
    first = dissect(model, ["7"], data, batch_size=8, cache=cache, progress=False)
    loaded = len(calls)
    again = dissect(model, ["7"], data, batch_size=8, cache=cache, quantile=0.01, progress=False)
    assert len(calls) == loaded == len(WORLD)  # the second dissection read the cache only
    assert not torch.equal(first.layers["7"].thresholds, again.layers["7"].thresholds)
    with pytest.raises(InputError, match="another run"):
        dissect(model, ["4"], data, batch_size=8, cache=cache, progress=False)
    cache.close()


class PlantedRed(nn.Module):
    """Eight units of smooth noise and, as unit 5, a red detector: relu(R - (G + B) / 2)."""

    def __init__(self):
        super().__init__()
        self.units = nn.Identity()

    def forward(self, x):
        noise = torch.rand(x.shape[0], 8, *x.shape[-2:], generator=torch.Generator().manual_seed(1))
        red = (x[:, 0] - (x[:, 1] + x[:, 2]) / 2).clamp(min=0)[:, None]
        return self.units(torch.cat([noise[:, :5], 3 * red, noise[:, 5:]], 1))


def test_concept_pca_follows_the_method_a_planted_unit_leads_the_loading():
    from seethrough.dissection.experiments import concept_pca

    world = ConceptWorld("val", length=32, size=32)
    pca = concept_pca(PlantedRed(), "units", world, "red", progress=False)
    assert pca.top_unit == 5 and pca.top_share > 0.5


def test_tcav_uses_the_layer_output_before_an_in_place_relu():
    """Regression: TCAV read the live activation, changed by the in-place ReLU after it."""
    from seethrough.concepts.tcav import ClassGradients
    from seethrough.tallying import Batch

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(4, 2)).eval()
    vocabulary = Vocabulary(WORLD.categories)
    samples = [WORLD[i] for i in range(6)]
    images, labels = collate(samples, vocabulary)
    statistic = ClassGradients(net, "0", [1], [1])
    statistic.update(Batch(0, torch.arange(6), {}, (labels, torch.zeros(6)), images))
    with torch.no_grad():
        own = net[0](images).flatten(1)
    torch.testing.assert_close(statistic.acts[0], own)
    assert (own < 0).any()

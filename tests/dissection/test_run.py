"""dissect(): shards merge, interrupted runs resume, the model is left as it was."""
from __future__ import annotations

import pytest
import torch

from seethrough.data import ConceptWorld
from seethrough.dissection import Dissection, QuantileSketch, dissect, layer_activations
from seethrough.errors import InputError, LayerNotFoundError
from tests.conftest import ARCHITECTURES, LAST_CONV
from tests.dissection.test_reference import small_cnn


class Frozen(torch.utils.data.Dataset):
    """A concept dataset generated once and kept in memory (fast tests)."""

    def __init__(self, dataset):
        self.samples = [dataset[i] for i in range(len(dataset))]
        self.categories, self.name = dataset.categories, repr(dataset)

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        return self.samples[i]

    def __repr__(self):
        return f"Frozen({self.name})"


WORLD = Frozen(ConceptWorld("val", length=40, size=64))


class Part(torch.utils.data.Dataset):
    """A shard of a concept dataset (keeps ``categories``)."""

    def __init__(self, dataset, indices, interrupt_at=None):
        self.dataset, self.indices = dataset, list(indices)
        self.categories = dataset.categories
        self.interrupt_at, self.calls = interrupt_at, 0

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        self.calls += 1
        if self.calls == self.interrupt_at:
            raise KeyboardInterrupt
        return self.dataset[self.indices[i]]

    def __repr__(self):
        return f"Part({self.dataset!r}, {self.indices[0]}..{self.indices[-1]})"


@pytest.fixture(scope="module")
def model():
    return small_cnn()


@pytest.fixture(scope="module")
def full(model):
    return dissect(model, ["4", "7"], WORLD, batch_size=8, progress=False)


def same(a: Dissection, b: Dissection):
    for name in a.layers:
        assert torch.equal(a.layers[name].thresholds, b.layers[name].thresholds)
        for key, value in a.layers[name].counter.state_dict().items():
            other = b.layers[name].counter.state_dict()[key]
            if isinstance(value, dict):
                assert all(torch.equal(value[r], other[r]) for r in value)
            elif isinstance(value, torch.Tensor):
                assert torch.equal(value, other)
        assert torch.equal(a.layers[name].top.indices, b.layers[name].top.indices)


def test_table_and_counts(full):
    frame = full.to_frame()
    assert list(frame.columns) == ["layer", "unit", "concept", "category", "iou", "threshold",
                                   "detector"]
    assert len(frame) == 16 + 16 and set(frame.layer) == {"4", "7"}
    assert ((frame.iou > 0.04) == frame.detector).all()
    counts = full.unique_detectors()
    assert set(counts.category) == {"colour", "shape", "texture", "scene"}
    detected = frame[frame.detector].groupby(["layer", "category"]).concept.nunique()
    for (layer, category), n in detected.items():
        row = counts[(counts.layer == layer) & (counts.category == category)]
        assert int(row.unique_detectors.iloc[0]) == n


def test_shards_merge_into_one_run(model, full):
    shards = [Part(WORLD, range(16)), Part(WORLD, range(16, 40))]
    # thresholds: sketches of the shards merge into the sketch of the whole
    sketches = []
    for shard in shards:
        sketch = QuantileSketch(16)
        images = torch.stack([shard[i]["image"] for i in range(len(shard))])
        a = layer_activations(model, ["7"], images)["7"]
        sketch.update(a.permute(0, 2, 3, 1).reshape(-1, 16))
        sketches.append(sketch)
    merged = sketches[0].merge(sketches[1])
    assert torch.equal(merged.upper_quantile(0.005), full.layers["7"].thresholds)
    # IoU counts with the global thresholds: shard counters merge into the whole
    thresholds = {n: layer.thresholds for n, layer in full.layers.items()}
    parts = [dissect(model, ["4", "7"], s, thresholds=thresholds, batch_size=8, progress=False)
             for s in shards]
    for name in full.layers:
        counter = parts[0].layers[name].counter.merge(parts[1].layers[name].counter)
        assert torch.allclose(counter.iou(), full.iou(name), rtol=0, atol=1e-12)
        assert torch.equal(counter.intersection, full.layers[name].counter.intersection)


@pytest.mark.parametrize("cache, interrupt_at", [(True, 20), (False, 20), (False, 55)])
def test_interrupt_and_resume(model, full, tmp_path, cache, interrupt_at):
    """Interrupt after some batches (in pass 1, or pass 2 when not cached); resume = same."""
    path = tmp_path / "run.ckpt"
    data = Part(WORLD, range(40), interrupt_at=interrupt_at)
    with pytest.raises(KeyboardInterrupt):
        dissect(model, ["4", "7"], data, batch_size=8, checkpoint=path, checkpoint_every=1,
                cache=cache, progress=False)
    saved = torch.load(path, weights_only=False)
    assert saved["next_batch"] >= 1 or saved["done"]  # work kept (pass 1 done: pass 2 under way)
    calls_before = data.calls
    resumed = dissect(model, ["4", "7"], data, batch_size=8, checkpoint=path, cache=cache,
                      progress=False)
    same(full, resumed)
    passes = 1 if cache else 2
    assert data.calls - calls_before < passes * 40  # done batches were not redone
    again = dissect(model, ["4", "7"], data, batch_size=8, checkpoint=path, cache=cache,
                    progress=False)
    same(full, again)


def test_checkpoint_of_another_run_is_refused(model, tmp_path):
    path = tmp_path / "run.ckpt"
    dissect(model, ["7"], Part(WORLD, range(8)), batch_size=8, checkpoint=path, progress=False)
    with pytest.raises(InputError, match="another run"):
        dissect(model, ["4"], Part(WORLD, range(8)), batch_size=8, checkpoint=path,
                progress=False)


def test_without_cache_and_with_half_precision_cache(model, full):
    direct = dissect(model, ["4", "7"], WORLD, batch_size=8, cache=False, progress=False)
    same(full, direct)
    half = dissect(model, ["7"], WORLD, batch_size=8, cache_dtype=torch.float16, progress=False)
    assert (half.iou("7") - full.iou("7")).abs().max() < 0.02


@pytest.mark.parametrize("cache_memory", [0, 2_000_000])  # all on disk; 2 of 5 batches in memory
def test_cache_spilled_to_disk_gives_the_same_result(model, full, cache_memory):
    spilled = dissect(model, ["4", "7"], WORLD, batch_size=8, cache_memory=cache_memory,
                      progress=False)
    same(full, spilled)


def test_save_and_load(full, tmp_path):
    loaded = Dissection.load(full.save(tmp_path / "d"))
    assert loaded.to_frame().equals(full.to_frame())


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v3_small"])
def test_architectures_receptive_field_mode(arch, unchanged):
    model = ARCHITECTURES[arch]().eval()
    data = Part(WORLD, range(8))
    with unchanged(model):
        result = dissect(model, [LAST_CONV[arch]], data, batch_size=8, upsample="receptive_field",
                         union="netdissect_lite", progress=False)
    frame = result.to_frame()
    assert len(frame) == result.layers[frame.layer[0]].units and frame.iou.between(0, 1).all()


def test_errors_are_clear(model, unchanged):
    with pytest.raises(LayerNotFoundError):
        dissect(model, ["nope"], WORLD, progress=False)
    with pytest.raises(InputError, match="union"):
        dissect(model, ["7"], WORLD, union="best", progress=False)
    with pytest.raises(InputError, match="categories"):
        dissect(model, ["7"], [{"image": torch.zeros(3, 8, 8)}], progress=False)
    broken = Part(WORLD, range(8), interrupt_at=3)
    with unchanged(model), pytest.raises(KeyboardInterrupt):
        dissect(model, ["7"], broken, batch_size=4, progress=False)


def test_labels_outside_a_category_are_refused(model):
    class Mislabelled(Frozen):
        def __getitem__(self, i):
            sample = dict(self.samples[i], masks=dict(self.samples[i]["masks"]))
            sample["masks"]["colour"] = sample["masks"]["colour"].clone().fill_(99)
            return sample

    with pytest.raises(InputError, match=r"'colour' labels must lie in 0\.\.\d+.*found 99\.\.99"):
        dissect(model, ["7"], Mislabelled(WORLD), batch_size=8, progress=False)


@pytest.mark.parametrize("where", ["loading", "updating"])
def test_interrupt_between_checkpoints_keeps_every_finished_batch(model, tmp_path, monkeypatch, where):
    """Interrupted while a batch loads, the checkpoint holds every finished batch; interrupted
    half-way through a batch's statistics, it holds the last consistent snapshot."""
    options = dict(batch_size=4, checkpoint_every=3, progress=False)
    reference = dissect(model, ["4", "7"], WORLD, **options)
    path = tmp_path / "run.ckpt"
    data = Part(WORLD, range(40), interrupt_at=31 if where == "loading" else None)  # batch 7
    if where == "updating":  # the 14th sketch update: the second layer of batch 7
        calls, update = [], QuantileSketch.update

        def interrupted(self, values):
            calls.append(1)
            if len(calls) == 14:
                raise KeyboardInterrupt
            update(self, values)

        monkeypatch.setattr(QuantileSketch, "update", interrupted)
    with pytest.raises(KeyboardInterrupt):
        dissect(model, ["4", "7"], data, checkpoint=path, **options)
    monkeypatch.undo()
    saved = torch.load(path, weights_only=False)
    # snapshots are taken after batches 3 and 6; batch 7 was loading, or batch 6 half-counted
    assert saved["next_batch"] == (7 if where == "loading" else 6)
    acts = layer_activations(model, ["4", "7"], WORLD[0]["image"][None])
    for name, a in acts.items():  # every layer holds exactly the batches before next_batch
        sketch = saved["stats"][f"sketch/{name}"]["state"]
        assert sketch["total"] == saved["next_batch"] * 4 * a[0, 0].numel()
    same(reference, dissect(model, ["4", "7"], data, checkpoint=path, **options))

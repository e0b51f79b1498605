"""Engines: the processes of this machine and a Ray cluster give exactly the single-process
sharded result, for any number of workers and completion order, through a killed worker, a
resumed driver and a failing image; only statistics travel back."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from seethrough.attribution.dataset import attribute_dataset
from seethrough.circuits.cka import cka_matrix
from seethrough.data import ConceptWorld
from seethrough.dissection import dissect
from seethrough.errors import InputError
from seethrough.models import load_model
from seethrough.represent import layer_features
from seethrough.tallying import Engine, tally
from seethrough.tallying.engine import plan_shards, run_sharded
from seethrough.tallying.shard_job import ShardJob
from seethrough.tallying.stats import Moments

ROOT = Path(__file__).resolve().parents[2]
WORLD = ConceptWorld("val", length=48, size=64)  # 6 batches of 8: 3 shards of 2 batches
LAYERS = ["features.block2", "features.block3"]
B3 = LAYERS[1]


@pytest.fixture(scope="module")
def net():
    return load_model("conceptnet").eval()


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster of 2 CPUs whose workers import this test package."""
    ray = pytest.importorskip("ray") if os.environ.get("CI") != "true" else __import__("ray")
    path = os.pathsep.join([str(ROOT), str(ROOT / "src")])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path}})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def reference(net):
    """The single-process sharded dissection every engine must equal."""
    return dissect(net, LAYERS, WORLD, batch_size=8, engine=Engine("local", shard_batches=2),
                   progress=False)


def identical(a, b) -> None:
    """Two dissections with bit-identical thresholds, IoU counts and top images."""
    for name in a.layers:
        x, y = a.layers[name], b.layers[name]
        assert torch.equal(x.thresholds, y.thresholds)
        for part in ("counter", "top"):
            left, right = getattr(x, part).state_dict(), getattr(y, part).state_dict()
            assert left.keys() == right.keys()
            for key, value in left.items():
                if isinstance(value, dict):
                    assert all(torch.equal(value[r], right[key][r]) for r in value), (part, key)
                elif isinstance(value, torch.Tensor):
                    assert torch.equal(value, right[key]), (part, key)
                else:
                    assert value == right[key], (part, key)


class DieOnce:
    """A statistic that kills its worker process the first time it sees batch ``at``."""

    def __init__(self, marker: str, at: int):
        self.marker, self.at, self.seen = marker, at, 0

    def update(self, batch):
        if batch.number == self.at and not os.path.exists(self.marker):
            Path(self.marker).touch()
            os._exit(3)
        self.seen += len(batch.indices)

    def merge(self, other):
        self.seen += other.seen
        return self

    def state_dict(self):
        return {"seen": self.seen}

    def load_state_dict(self, state):
        self.seen = state["seen"]


class FailOnce(DieOnce):
    """A statistic that raises (the driver stops) the first time it sees batch ``at``."""

    def update(self, batch):
        if batch.number == self.at and not os.path.exists(self.marker):
            Path(self.marker).touch()
            raise RuntimeError("interrupted")
        self.seen += len(batch.indices)


class Broken(torch.utils.data.Dataset):
    """ConceptWorld whose image 13 cannot be read."""

    categories = WORLD.categories

    def __len__(self):
        return len(WORLD)

    def __getitem__(self, index):
        if index == 13:
            raise OSError("truncated file")
        return WORLD[index]


def test_plain_loop_and_shards_agree_and_the_shard_plan_ignores_workers(net, reference):
    plain = dissect(net, LAYERS, WORLD, batch_size=8, progress=False)
    identical(plain, reference)  # this model and data: even the unsharded loop is bit-identical
    assert [s.batches for s in plan_shards(6, 4)] == [range(4), range(4, 6)]
    with pytest.raises(InputError, match="sharded engine"):
        tally(net, ["block2"], WORLD, {"m": Moments("block2")}, shard=(0, 2),
              engine=Engine("local", shard_batches=2), progress=False)
    with pytest.raises(InputError, match="engine must be one of"):
        Engine("cluster")


def test_any_completion_order_gives_the_same_bits(net):
    job = ShardJob(net, [B3], WORLD, {"m": Moments(B3)},
                   {"batch_size": 8, "progress": False})

    class Reversed:  # a pool that finishes the shards last-first
        def run(self, job, shards, record):
            yield from (job.run(s) for s in reversed(shards))

    engine = Engine("local", shard_batches=1)
    forward = run_sharded(engine, job, 6, None, "f", False, "t")["m"]
    engine._pool = Reversed()
    backward = run_sharded(engine, job, 6, None, "f", False, "t")["m"]
    assert torch.equal(forward.mean, backward.mean) and torch.equal(forward.squares, backward.squares)


def test_local_processes_equal_one_process_and_survive_a_killed_worker(net, reference, tmp_path):
    with Engine("local", workers=2, shard_batches=2) as engine:
        identical(dissect(net, LAYERS, WORLD, batch_size=8, engine=engine, progress=False),
                  reference)
        stats = tally(net, [B3], WORLD, {"m": Moments(B3),
                                               "die": DieOnce(str(tmp_path / "died"), 3)},
                      batch_size=8, engine=engine, progress=False)
        assert engine.history[-1].retried == 1 and (tmp_path / "died").exists()
    assert stats["die"].seen == len(WORLD)
    alone = tally(net, [B3], WORLD, {"m": Moments(B3)}, batch_size=8,
                  engine=Engine("local", shard_batches=2), progress=False)["m"]
    assert torch.equal(stats["m"].mean, alone.mean) and torch.equal(stats["m"].squares, alone.squares)


def test_ray_is_bit_identical_for_one_two_and_three_workers(net, reference, ray_cluster):
    for workers in (1, 2, 3):
        with Engine("ray", workers=workers, shard_batches=2) as engine:
            identical(dissect(net, LAYERS, WORLD, batch_size=8, engine=engine, progress=False),
                      reference)
            run = engine.history[-1]
            assert len({worker for _, worker, _, _ in run.shards}) == min(workers, 3)


def test_ray_survives_a_killed_actor_and_features_cka_attribution_match(net, ray_cluster,
                                                                         tmp_path):
    local = Engine("local", shard_batches=2)
    images = torch.stack([WORLD[i]["image"] for i in range(6)])
    options = {"method": "smoothgrad", "n_samples": 4, "seed": 7, "progress": False}
    with Engine("ray", workers=2, shard_batches=2) as engine:
        killed = tally(net, [B3], WORLD, {"m": Moments(B3),
                                          "die": DieOnce(str(tmp_path / "died"), 2)},
                       batch_size=8, engine=engine, progress=False)
        assert (tmp_path / "died").exists() and engine.history[-1].retried == 1
        features = layer_features(net, [B3], WORLD, batch_size=8, engine=engine,
                                  progress=False)[B3]
        cka = cka_matrix(net, None, WORLD, LAYERS, LAYERS, batch_size=8, engine=engine,
                         progress=False)
        on_ray = attribute_dataset(net, images, tmp_path / "ray", batch_size=1, engine=engine,
                                   **options)
        with pytest.raises(InputError, match=r"shard 0 \(images 0-15\).*image 13.*truncated file"):
            dissect(net, [B3], Broken(), batch_size=8, engine=engine, progress=False)
    alone = tally(net, [B3], WORLD, {"m": Moments(B3)}, batch_size=8, engine=local,
                  progress=False)["m"]
    assert killed["die"].seen == len(WORLD)
    assert torch.equal(killed["m"].mean, alone.mean) and torch.equal(killed["m"].squares, alone.squares)
    assert torch.equal(features, layer_features(net, [B3], WORLD, batch_size=8,
                                                engine=local, progress=False)[B3])
    assert torch.equal(cka.values, cka_matrix(net, None, WORLD, LAYERS, LAYERS, batch_size=8,
                                              engine=local, progress=False).values)
    # per-image seeds: the maps do not depend on the batches, the shards or the workers
    alone = attribute_dataset(net, images, tmp_path / "two", batch_size=2, **options)
    other_batches = attribute_dataset(net, images, tmp_path / "three", batch_size=3, **options)
    assert torch.equal(alone.all(), on_ray.all()) and torch.equal(alone.all(), other_batches.all())
    assert torch.equal(alone.targets(), on_ray.targets())
    assert torch.equal(on_ray[4], alone.all()[4]) and len(on_ray) == 6
    assert len(list((tmp_path / "ray").glob("maps-*.safetensors"))) == 6


def test_an_interrupted_driver_resumes_without_recomputing_finished_shards(net, tmp_path):
    engine = Engine("local", shard_batches=1)
    checkpoint = tmp_path / "run.pt"

    def run():
        return tally(net, [B3], WORLD, {"m": Moments(B3),
                                              "fail": FailOnce(str(tmp_path / "failed"), 4)},
                     batch_size=8, engine=engine, checkpoint=checkpoint, progress=False)

    with pytest.raises(InputError, match=r"shard 4 \(images 32-39\) failed: interrupted"):
        run()
    resumed = run()
    assert engine.history[-1].resumed == [0, 1, 2, 3]
    assert [index for index, *_ in engine.history[-1].shards] == [4, 5]
    whole = tally(net, [B3], WORLD, {"m": Moments(B3)}, batch_size=8,
                  engine=Engine("local", shard_batches=1), progress=False)["m"]
    assert resumed["fail"].seen == len(WORLD)
    assert torch.equal(resumed["m"].mean, whole.mean)


def test_other_shard_counts_give_the_same_dissection_and_the_same_bytes(net, reference):
    """Dissection's statistics merge exactly (integer counts, a sketch whose grid depends only on
    the values seen), so even another shard plan gives the same bits."""
    sizes = []
    for shard_batches in (1, 3):
        engine = Engine("local", shard_batches=shard_batches)
        identical(dissect(net, [B3], WORLD, batch_size=8, engine=engine, progress=False),
                  reference)
        sizes.append(engine.history[-1].bytes_per_shard)  # the IoU pass
    assert abs(sizes[0] - sizes[1]) <= 0.01 * sizes[0]


def test_batch_attribute_command_writes_maps_by_index_and_resumes(tmp_path, capsys):
    from seethrough.attribution.dataset import AttributionMaps
    from seethrough.cli import main

    args = ["batch-attribute", "conceptnet", "--conceptworld", "12", "--method", "gradcam",
            "--batch-size", "4", "--shard-batches", "1", "--out", str(tmp_path / "maps")]
    assert main(args) == 0
    assert "3 shards on 1 worker " in capsys.readouterr().err
    maps = AttributionMaps(tmp_path / "maps")
    images = torch.stack([ConceptWorld("val", length=12, size=64)[i]["image"] for i in range(12)])
    from seethrough.attribution import attribute

    direct = attribute(load_model("conceptnet").eval(), images, method="gradcam", batch_size=4)
    assert torch.allclose(maps.all(), direct.maps, atol=1e-6)
    assert main(args) == 0  # a rerun reads the finished shards
    assert "3 from checkpoints" in capsys.readouterr().err
    assert main(["dissect", "conceptnet", "--address", "auto", "--out", str(tmp_path / "d")]) == 2
    assert "address is for engine='ray'" in capsys.readouterr().err


def test_batch_attribute_reads_an_image_folder_lazily_and_names_a_bad_file(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from seethrough.attribution.dataset import AttributionMaps
    from seethrough.cli import main

    photos = tmp_path / "photos"
    photos.mkdir()
    for index in range(3):
        Image.fromarray(np.full((40, 50, 3), 60 * index, np.uint8)).save(photos / f"p{index}.png")
    args = ["batch-attribute", "conceptnet", str(photos), "--method", "saliency",
            "--batch-size", "2", "--out"]
    assert main([*args, str(tmp_path / "maps")]) == 0
    assert len(AttributionMaps(tmp_path / "maps")) == 3
    assert (tmp_path / "maps" / "images.csv").read_text().splitlines()[1:] == [
        "0,p0.png", "1,p1.png", "2,p2.png"]
    (photos / "p3.png").write_bytes(b"not a png")
    assert main([*args, str(tmp_path / "again")]) == 2
    error = capsys.readouterr().err
    assert "image 3 of the dataset failed to load" in error and "p3.png" in error

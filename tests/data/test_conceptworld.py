"""ConceptWorld: reproducible across processes, and every label map tells the truth."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from seethrough.data import ConceptWorld
from seethrough.data.conceptworld import COLOURS, CUE_COLOURS

N = 120


@pytest.fixture(scope="module")
def samples():
    world = ConceptWorld("val", length=N, seed=3, bias=0.5)
    return world, [world[i] for i in range(N)]


DIGEST = """
import hashlib, sys
from seethrough.data import ConceptWorld
world = ConceptWorld("test", length=50, seed=11, bias=0.7)
h = hashlib.sha256()
for i in (0, 7, 49):
    raw = world.generate(i)
    h.update(raw["image"].tobytes())
    for m in raw["masks"].values():
        h.update(m.tobytes())
    h.update(raw["object_mask"].tobytes() + raw["cue_mask"].tobytes())
    h.update(bytes([raw["label"], raw["scene"], raw["cue"]]))
print(h.hexdigest())
"""


def test_two_processes_generate_identical_bytes():
    digests = {
        subprocess.run([sys.executable, "-c", DIGEST], capture_output=True, text=True,
                       check=True, env={"PYTHONHASHSEED": str(seed), "PATH": ""}).stdout
        for seed in (1, 2)
    }
    assert len(digests) == 1 and len(next(iter(digests))) == 65


def test_index_seed_and_split_decide_the_sample():
    a, b = ConceptWorld("val", length=5), ConceptWorld("val", length=500)
    assert torch.equal(a[4]["image"], b[4]["image"])
    assert not torch.equal(a[4]["image"], ConceptWorld("train", length=5)[4]["image"])
    assert not torch.equal(a[4]["image"], ConceptWorld("val", length=5, seed=1)[4]["image"])
    assert torch.equal(a[-1]["image"], a[4]["image"])
    with pytest.raises(IndexError):
        a[5]


def test_sample_types_and_vocabularies(samples):
    world, all_samples = samples
    s = all_samples[0]
    assert s["image"].shape == (3, 64, 64) and s["image"].dtype == torch.float32
    assert 0 <= float(s["image"].min()) and float(s["image"].max()) <= 1
    assert torch.equal((s["image"] * 255).round() / 255, s["image"])  # uint8 is lossless
    cats = world.categories
    assert len(cats["colour"]) - 1 >= 10 and len(cats["shape"]) - 1 >= 8
    assert len(cats["texture"]) - 1 >= 8 and len(cats["scene"]) - 1 >= 4
    assert {"brick", "grass", "gravel"} <= set(cats["texture"])
    assert all(names[0] == "none" for names in cats.values())
    for name, mask in s["masks"].items():
        assert mask.dtype == torch.int64 and mask.shape == (64, 64)
        assert 0 <= int(mask.min()) and int(mask.max()) < len(cats[name])
    assert world.class_names == cats["shape"][1:]
    assert 1 <= s["scene"] < len(cats["scene"])
    seen = {k: set() for k in cats}
    for s in all_samples:
        for k, m in s["masks"].items():
            seen[k] |= set(m.unique().tolist())
        seen["scene"].add(s["scene"])
    assert seen["shape"] == set(range(len(cats["shape"])))
    assert seen["texture"] == set(range(len(cats["texture"])))
    assert seen["scene"] == set(range(1, len(cats["scene"])))


def test_colour_labels_are_true(samples):
    """For every colour in the batch, its pixels' mean RGB is nearest to its reference."""
    world, all_samples = samples
    reference = torch.tensor(list(COLOURS.values()))
    pixels = torch.cat([s["image"].reshape(3, -1).T for s in all_samples])
    labels = torch.cat([s["masks"]["colour"].reshape(-1) for s in all_samples])
    found = labels.unique().tolist()
    assert len(found) >= 10
    for code in found:
        if code == 0:
            continue
        mean = pixels[labels == code].mean(0)
        nearest = int(torch.cdist(mean[None], reference).argmin()) + 1
        assert nearest == code, (world.categories["colour"][code], mean.tolist())
        # and most single pixels are nearest to their own colour too
        single = torch.cdist(pixels[labels == code], reference).argmin(1) + 1
        assert float((single == code).float().mean()) > 0.99


def test_masks_agree_with_objects(samples):
    _, all_samples = samples
    for s in all_samples:
        shape, texture, colour = (s["masks"][k] for k in ("shape", "texture", "colour"))
        drawn = shape > 0
        assert torch.equal(drawn, texture > 0)  # every object pixel has a texture
        assert torch.equal(drawn | s["cue_mask"], colour > 0)  # and a colour, as does the cue
        assert torch.equal(s["object_mask"], shape == s["label"] + 1)
        assert int(s["object_mask"].sum()) > 0.04 * shape.numel()  # the main object is visible
        assert not (s["object_mask"] & s["cue_mask"]).any()


def test_main_object_is_the_largest(samples):
    _, all_samples = samples
    for s in all_samples:
        areas = torch.bincount(s["masks"]["shape"].flatten(), minlength=9)[1:]
        assert int(areas.argmax()) == s["label"] or areas[s["label"]] > 0.5 * areas.max()


@pytest.mark.parametrize("bias", [0.0, 0.3, 0.9, 1.0])
def test_bias_rate(bias):
    world = ConceptWorld("train", length=400, bias=bias, cue=True)
    matches = []
    for i in range(len(world)):
        raw = world.generate(i)
        assert raw["cue_mask"].sum() > 0
        cue_name = world.categories["colour"][raw["cue"]]
        matches.append(cue_name == CUE_COLOURS[raw["label"]])
    assert abs(np.mean(matches) - bias) < 0.07


def test_no_cue_without_bias():
    s = ConceptWorld("val", length=3)[2]
    assert not s["cue_mask"].any() and s["cue"] == 0


def test_bad_arguments():
    for kwargs in ({"split": "dev"}, {"bias": 1.5}, {"size": 8}):
        with pytest.raises(ValueError):
            ConceptWorld(**kwargs)


def test_other_sizes():
    s = ConceptWorld("val", length=2, size=96)[1]
    assert s["image"].shape == (3, 96, 96) and s["object_mask"].any()


def test_sample_grid_draws_every_row():
    from seethrough.data import sample_grid

    fig = sample_grid(ConceptWorld("val", length=4, bias=1.0), n=4)
    assert len(fig.axes) == 16
    assert fig.axes[0].get_title()

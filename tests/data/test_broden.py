"""Broden-format folders: the round trip is lossless and the layout is NetDissect's."""
from __future__ import annotations

import csv

import pytest
import torch

from seethrough.data import BrodenDataset, ConceptWorld, write_broden
from seethrough.errors import InputError


def test_round_trip_is_lossless(tmp_path):
    world = ConceptWorld("val", length=30, bias=0.5)
    write_broden(world, tmp_path)
    back = BrodenDataset(tmp_path)
    assert len(back) == 30 and back.categories == world.categories
    assert back.class_names == world.class_names
    for i in range(30):
        a, b = world[i], back[i]
        assert torch.equal(a["image"], b["image"])
        for k in a["masks"]:
            assert torch.equal(a["masks"][k], b["masks"][k]), k
        for k in ("object_mask", "cue_mask"):
            assert torch.equal(a[k], b[k]), k
        assert (a["label"], a["scene"], a["cue"]) == (b["label"], b["scene"], b["cue"])


def test_layout(tmp_path):
    write_broden(ConceptWorld("train", length=6), tmp_path, n=4)
    with open(tmp_path / "index.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4
    assert list(rows[0])[:12] == ["image", "split", "ih", "iw", "sh", "sw", "color", "object",
                                  "part", "material", "scene", "texture"]
    assert rows[0]["scene"].isdigit() and rows[0]["object"].endswith(".png")
    with open(tmp_path / "label.csv") as f:
        labels = list(csv.DictReader(f))
    assert labels[0]["name"] == "-" and [int(r["number"]) for r in labels] == list(range(len(labels)))
    for name in ("category.csv", "c_color.csv", "c_object.csv", "c_texture.csv", "c_scene.csv"):
        assert (tmp_path / name).is_file()
    assert not list(tmp_path.rglob("*.part"))
    assert len(BrodenDataset(tmp_path, split="val")) == 0


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="index.csv"):
        BrodenDataset(tmp_path)

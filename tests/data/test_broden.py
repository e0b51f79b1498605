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


def _csv(path, header, rows):
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])


def test_reads_a_real_style_broden_folder(tmp_path):
    """Layered object files, image-level texture, part/material columns, labels at half size."""
    import numpy as np
    from PIL import Image

    (tmp_path / "images" / "ade").mkdir(parents=True)
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(tmp_path / "images/ade/a.jpg")
    first, second, part = (np.zeros((4, 4, 3), np.uint8) for _ in range(3))
    first[:2, :, 0] = 3  # label 3 (wall) on the top half
    second[1:, 1:, 0] = 260 % 256
    second[1:, 1:, 1] = 260 // 256  # label 260 (person) over it, from the second layer
    part[3, 3, 0] = 5
    for name, rgb in (("o1", first), ("o2", second), ("p", part)):
        Image.fromarray(rgb).save(tmp_path / f"images/ade/{name}.png")
    _csv(tmp_path / "index.csv", ["image", "split", "ih", "iw", "sh", "sw", "color", "object",
                                  "part", "material", "scene", "texture"],
         [["ade/a.jpg", "train", 8, 8, 4, 4, "", "ade/o1.png;ade/o2.png", "ade/p.png", "",
           "7", "9"]])
    _csv(tmp_path / "label.csv", ["number", "name", "category", "frequency", "coverage", "syns"],
         [[0, "-", "-", 0, 0, ""], [3, "wall", "object(1)", 1, 0.5, ""],
          [5, "leg", "part(1)", 1, 0.1, ""], [7, "kitchen", "scene(1)", 1, 1, ""],
          [9, "striped", "texture(1)", 1, 1, ""], [260, "person", "object(1)", 1, 0.5, ""]])
    _csv(tmp_path / "category.csv", ["name", "first", "last", "count", "frequency"],
         [["object", 3, 260, 2, 2], ["part", 5, 5, 1, 1], ["scene", 7, 7, 1, 1],
          ["texture", 9, 9, 1, 1]])
    for category, rows in {"object": [[1, 3, "wall"], [2, 260, "person"]], "part": [[1, 5, "leg"]],
                           "scene": [[1, 7, "kitchen"]], "texture": [[1, 9, "striped"]]}.items():
        _csv(tmp_path / f"c_{category}.csv", ["code", "number", "name", "frequency", "coverage"],
             [[*r, 1, 0.5] for r in rows])
    data = BrodenDataset(tmp_path)
    s = data[0]
    assert data.categories["shape"] == ["none", "wall", "person"]
    assert data.categories["part"] == ["none", "leg"] and data.categories["colour"] == ["none"]
    assert s["image"].shape == (3, 8, 8) and s["label"] == -1
    expected = torch.tensor([[1, 1, 1, 1], [1, 2, 2, 2], [0, 2, 2, 2], [0, 2, 2, 2]])
    assert torch.equal(s["masks"]["shape"], expected)
    assert int(s["masks"]["part"][3, 3]) == 1 and int(s["masks"]["part"].sum()) == 1
    assert bool((s["masks"]["texture"] == 1).all()) and s["scene"] == 1
    assert not s["masks"]["colour"].any()

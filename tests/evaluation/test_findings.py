"""Fong's four findings as experiments: the readings on known sweeps, the scenes, and the
claims ConceptWorld makes certain, asserted on ConceptNet."""
from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from seethrough.data.scenes import object_scene, object_scenes
from seethrough.errors import InputError
from seethrough.evaluation.findings import (
    ExtremalSweep,
    InstanceCurves,
    compressed_schedule,
    cumulative_objects,
    extremal_sweep,
    instance_scenes,
    object_sizes,
    photo_mosaics,
    zoom_sweep,
    zoomed,
)
from seethrough.results import load_result


class Brightness(nn.Module):
    """Class 0's logit is 100 times the mean of the red channel; class 1's is its negative."""

    def forward(self, x):
        red = x[:, 0].mean((1, 2)) * 100
        return torch.stack([red, -red], 1)


def _sweep(preserved, original, objects=None) -> ExtremalSweep:
    count, areas = len(original), (0.1, 0.4, 0.8)
    masks = torch.zeros(count, len(areas), 4, 4)
    masks[:, 0, :2, :2] = 1  # area 0.1: the top-left quarter
    masks[:, 1, :2] = 1
    masks[:, 2] = 1
    return ExtremalSweep(areas, masks, torch.tensor(original), torch.tensor(preserved),
                         torch.zeros(count), torch.zeros(count, dtype=torch.long), objects)


def test_readings_of_a_known_sweep(tmp_path):
    objects = torch.zeros(3, 4, 4, dtype=torch.bool)
    objects[:, :2, :1] = True  # half of the top-left quarter, an eighth of the image
    sweep = _sweep([[5.0, 9.5, 10.0], [1.0, 2.0, 3.0], [12.0, 11.0, 10.0]], [10.0, 10.0, -1.0],
                   objects)
    area = sweep.sufficient_area()
    assert area[0] == pytest.approx(0.4) and area[1:].isnan().all()  # never / undefined (< 0)
    assert sweep.object_share()[0] == pytest.approx(2 / 8)  # the mask of 0.4: 8 px, 2 on it
    assert sweep.object_area().tolist() == [0.125] * 3
    assert sweep.object_coverage()[0] == pytest.approx(1.0)  # the whole object is under it
    assert sweep.overdrive()[:2].tolist() == pytest.approx([0.0, -0.7])
    assert sweep.overdrive()[2].isnan()
    summary = sweep.summary()
    assert summary["kept_share"] == pytest.approx(1 / 3) and summary["overdriven_share"] == 0
    frame = sweep.to_frame()
    assert list(frame["ratio@0.4"][:2]) == pytest.approx([0.95, 0.2])
    back = load_result(sweep.save(tmp_path / "s"))
    assert isinstance(back, ExtremalSweep) and back.summary() == pytest.approx(summary,
                                                                                nan_ok=True)
    over = _sweep([[11.0, 12.0, 10.0]], [10.0])
    assert over.summary()["overdriven_share"] == 1 and over.overdrive()[0] == pytest.approx(0.2)


def test_groups_select_and_compare():
    sweep = _sweep([[10.0, 10.0, 10.0], [1.0, 10.0, 10.0]], [10.0, 10.0],
                   torch.ones(2, 4, 4, dtype=torch.bool))
    sweep.groups = ["small", "large"]
    table = sweep.by_group()
    assert table["group"].tolist() == ["small", "large"]
    assert table["sufficient_area"].tolist() == pytest.approx([0.1, 0.4])
    assert table["area_per_object"].tolist() == pytest.approx([0.1, 0.4])
    assert sweep.select("large").original.tolist() == [10.0]
    with pytest.raises(InputError, match="no images in group"):
        sweep.select("medium")
    sweep.plot()


def test_extremal_sweep_scores_what_each_mask_keeps(unchanged):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=3).eval()
    images = torch.rand(2, 3, 32, 32)
    objects = torch.zeros(2, 32, 32, dtype=torch.bool)
    objects[:, 8:24, 8:24] = True
    with unchanged(model):
        sweep = extremal_sweep(model, images, [0, 2], objects=objects, areas=(0.1, 0.5),
                               iterations=2, groups=["a", "b"])
    assert sweep.masks.shape == (2, 2, 32, 32) and sweep.preserved.shape == (2, 2)
    assert sweep.targets.tolist() == [0, 2]
    with torch.no_grad():
        assert sweep.original.tolist() == pytest.approx(model(images)[[0, 1], [0, 2]].tolist(),
                                                        abs=1e-4)
    assert sweep.options["iterations"] == 2 and sweep.options["num_levels"] == 8
    with pytest.raises(InputError, match="preserve"):
        extremal_sweep(model, images, 0, variant="delete", iterations=1)
    with pytest.raises(InputError, match="ascending"):
        extremal_sweep(model, images, 0, areas=(0.5, 0.1), iterations=1)


def test_a_fully_kept_image_scores_as_the_image():
    """A mask of ones preserves the image exactly; a mask of zeros blurs it all."""
    model = Brightness()
    images = torch.zeros(1, 3, 16, 16)
    images[:, 0, 4:12, 4:12] = 1
    instances = torch.zeros(1, 1, 16, 16, dtype=torch.bool)
    instances[0, 0] = True
    curves = cumulative_objects(model, images, instances, 0)
    assert curves.scores[0, 1] == pytest.approx(float(curves.original[0]))
    assert curves.scores[0, 0] < curves.original[0]  # zero-padded blur darkens the border


def test_cumulative_objects_on_additive_evidence(tmp_path):
    """Three bright squares: each one preserved adds the same amount of red."""
    model = Brightness()
    image = torch.zeros(1, 3, 48, 48)
    instances = torch.zeros(1, 3, 48, 48, dtype=torch.bool)
    for k, (top, left) in enumerate([(4, 4), (4, 30), (30, 16)]):
        image[0, 0, top:top + 12, left:left + 12] = 1
        instances[0, k, top:top + 12, left:left + 12] = True
    curves = cumulative_objects(model, image, instances, 0, max_blur=2.0, pixel_scale=1.0)
    assert curves.cumulative().tolist() == [True]
    steps = curves.increments()[0]
    assert (steps > 0).all() and steps.max() - steps.min() < 0.3 * steps.mean()
    frame = curves.to_frame()
    assert frame["preserved"].tolist() == [0, 1, 2, 3]
    back = load_result(curves.save(tmp_path / "c"))
    assert isinstance(back, InstanceCurves) and back.summary() == curves.summary()
    two = instances.clone()
    two[0, 2] = False
    padded = cumulative_objects(model, image, two, 0, max_blur=2.0, pixel_scale=1.0)
    assert padded.counts.tolist() == [2] and padded.increments()[0, 2].isnan()


def test_scenes_are_reproducible_and_apart():
    first = object_scene(2, count=3, radius=0.2, index=5)
    again = object_scene(2, count=3, radius=0.2, index=5)
    assert torch.equal(first["image"], again["image"]) and first["label"] == 2
    masks = first["instance_masks"]
    assert masks.shape == (3, 64, 64) and (masks.sum(0) <= 1).all()
    assert (masks.flatten(1).sum(1) > 0).all()
    big, small = (object_scenes([0] * 4, radius=r)["object_mask"].float().mean()
                  for r in (0.4, 0.2))
    assert big > 3 * small  # area grows with the radius squared
    with pytest.raises(InputError, match="do not fit"):
        object_scene(0, count=3, radius=0.45)
    with pytest.raises(InputError, match="count"):
        object_scene(0, count=0)
    made = instance_scenes((1, 3), per_count=2)
    assert made["instances"].shape == (4, 3, 64, 64) and made["counts"].tolist() == [1, 1, 3, 3]
    assert not made["instances"][:2, 1:].any()


def test_photo_mosaics_and_zoom():
    images = torch.rand(2, 3, 32, 32)
    made = photo_mosaics(images)
    assert made["image"].shape == (6, 3, 32, 32) and made["counts"].tolist() == [1, 1, 2, 2, 3, 3]
    assert made["instances"][5].flatten(1).sum(1).tolist() == [256, 256, 256]
    assert torch.equal(made["image"][4][:, 16:, :16], torch.full((3, 16, 16), 0.5))
    assert torch.allclose(zoomed(images, 1.0), images, atol=1e-6)
    ramp = torch.linspace(0, 1, 32).expand(1, 3, 32, 32)
    closer = zoomed(ramp, 2.0)
    assert closer[..., 0].mean() > 0.2 and closer[..., -1].mean() < 0.8
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 3)).eval()
    sweep = zoom_sweep(model, images, zooms=(1.0, 2.0), areas=(0.2,), iterations=1)
    assert sweep.groups == ["zoom 1"] * 2 + ["zoom 2"] * 2
    assert sweep.targets[:2].tolist() == sweep.targets[2:].tolist()


# -- the claims on ConceptNet ------------------------------------------------------------------
#: the paper's schedule in a quarter of its 800 steps (with the paper's step size, 150 steps
#: left the masks of area 2.5 % at a mean of 0.38; compressed, 200 steps reach every area)
SCHEDULE = compressed_schedule(200)
#: half of that, for the claims that hold with room to spare at 100 steps (the report's quick run)
QUICK_SCHEDULE = compressed_schedule(100)
#: five of the seven areas: each area's mask is optimized on its own (its own row of the
#: batch), so dropping 2.5 % and 60 % leaves the other masks as they were, at 5/7 of the cost
TEST_AREAS = (0.05, 0.1, 0.2, 0.4, 0.8)


@pytest.fixture(scope="module")
def conceptnet():
    from seethrough.models import load_model

    return load_model("conceptnet")


@pytest.mark.slow  # about 10 seconds
def test_instances_add_up_on_conceptnet(conceptnet):
    """Cumulative objects. ConceptNet ends in global average pooling and one linear layer, so
    its logit is a mean of local evidence: each instance preserved should add to it.
    Measured (8 scenes per count, radius 0.2 of the side, seed 0): every instance raised the
    logit in all 48 steps; mean logit 0 -> 5.3 (1 instance), 0 -> 5.7 -> 10.4 (2),
    0 -> 4.8 -> 9.4 -> 12.3 (3). Asserted: every step of every scene adds, the mean with
    all instances preserved grows with their number (by 5.1 and 2.0 measured; asserted 2 and
    1), and with none preserved it stays within 1 of 0."""
    made = instance_scenes(per_count=8)
    curves = cumulative_objects(conceptnet, made["image"], made["instances"], made["label"],
                                counts=made["counts"])
    assert curves.cumulative().all()
    summary = curves.summary()
    full = [summary[count]["mean_scores"][-1] for count in (1, 2, 3)]
    assert full[1] > full[0] + 2 and full[2] > full[1] + 1
    assert all(abs(summary[count]["mean_scores"][0]) < 1 for count in (1, 2, 3))


def test_findings_command_writes_the_section(tmp_path, capsys):
    from seethrough.cli import main

    out = tmp_path / "out"
    assert main(["findings", "conceptnet", "--conceptworld", "2", "--quick", "--iterations", "2",
                 "--out", str(out)]) == 0
    text = (out / "findings.html").read_text()
    assert "What extremal perturbations find" in text and "radius 0.4" in text
    assert (out / "tables" / "what-extremal-perturbations-find-findings_sizes.csv").is_file()
    assert len(list((out / "figures").glob("*.png"))) == 5
    assert main(["findings", "conceptnet", "--out", str(out)]) == 2
    assert "--conceptworld N" in capsys.readouterr().err


@pytest.fixture(scope="module")
def world_sweep(conceptnet):
    from seethrough.data import ConceptWorld

    batch = ConceptWorld("val", length=3).batch()
    return extremal_sweep(conceptnet, batch["image"], batch["label"],
                          objects=batch["object_mask"], areas=TEST_AREAS, **QUICK_SCHEDULE)


@pytest.mark.slow  # about 2 minutes on 2 idle cores
def test_foreground_suffices_and_overdrives_on_conceptnet(world_sweep):
    """Foreground sufficient and background overdrive, on the first 3 ConceptWorld val images.

    Measured on the first 8 (``SCHEDULE``): some area keeps 90 % of the logit in all 8; the
    smallest such area has a median of 20 % of the image (objects cover 8.6 % on average),
    and 22 % of that mask lies on the object (2.6 times what a mask placed at random would
    have). Every image is overdriven: some preserved image scores above the whole one (by a
    median of 21 %; background distractors removed, the shape's logit rises). On the first 4
    of them (at all seven areas): areas 20, 60, 20, 80 %, object shares 0.26, 0.15, 0.29, 0.07
    for object areas 0.06, 0.14, 0.07, 0.06; overdrive 6, 5, 10, 56 %. Here the first 3 at
    ``TEST_AREAS`` and ``QUICK_SCHEDULE``: smallest sufficient areas 20, 80, 20 %, masks
    2.7 times their chance share of object, overdrive 4.2, 0.6, 10.3 %. Asserted: every
    image keeps the score at some area, the masks hold at least 1.5 times their chance share
    of object, and at least 2 of the 3 images are overdriven (measured: all 3)."""
    assert not world_sweep.sufficient_area().isnan().any()
    enrichment = world_sweep.object_share().mean() / world_sweep.object_area().mean()
    assert enrichment > 1.5
    assert (world_sweep.overdrive() > 0).sum() >= 2


@pytest.mark.slow  # about 2 minutes on 2 idle cores
def test_large_objects_need_less_area_per_object_on_conceptnet(conceptnet):
    """Large objects by details: one object per scene, radius 0.2 or 0.4 of the side.

    Measured (4 scenes per radius for 0.2, 0.27, 0.34, 0.4; ``SCHEDULE``): the objects cover
    7, 13, 21, 29 % of the image; the median smallest sufficient area is 20, 40, 30, 40 %,
    i.e. 3.1, 2.7, 1.5, 1.6 times the object's area. Four times the object takes twice the
    area: ConceptNet does not need all of a large object, though it still wants more than
    the object itself (the shape's outline against its surround). Asserted on the two ends:
    the median sufficient area per object area falls by at least a quarter (measured: by half),
    and every scene but one keeps the score at some area (measured: 15 of 16; of the 3 + 3
    scenes here, at ``TEST_AREAS``, all 6). At ``QUICK_SCHEDULE`` the fall is only 25 %
    (2.5 to 1.9), too close to the bound, so this claim keeps the 200 steps."""
    sizes = object_sizes(conceptnet, radii=(0.2, 0.4), per_size=3, areas=TEST_AREAS, **SCHEDULE)
    table = sizes.by_group().set_index("group")
    assert table.loc["radius 0.4", "object_area"] > 3 * table.loc["radius 0.2", "object_area"]
    small, large = table.loc["radius 0.2", "area_per_object"], table.loc["radius 0.4",
                                                                         "area_per_object"]
    assert large < 0.75 * small
    assert table["kept"].sum() >= 5

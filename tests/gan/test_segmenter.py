"""The ConceptWorld segmenter: deterministic training, clear errors, and the shipped weights
doing what their card says (per-concept validation IoU) on fresh images."""
from __future__ import annotations

import shlex

import pytest
import torch

from seethrough.data import ConceptWorld
from seethrough.errors import InputError, WeightsError
from seethrough.gan.segmenter_training import evaluate, generate_with_masks, train_segmenter
from seethrough.models.segmenter import (
    NAME,
    PIXEL_CATEGORIES,
    build_segmenter,
    load_segmenter,
    segment,
)

TINY = {"steps": 8, "n_train": 48, "n_val": 8, "batch_size": 8, "lr": 1e-2, "threads": 1}


@pytest.fixture(scope="module")
def shipped():
    return load_segmenter()


def test_tiny_training_is_deterministic_and_the_loss_moves():
    model_a, card_a = train_segmenter(seed=3, progress=False, **TINY)
    model_b, card_b = train_segmenter(seed=3, progress=False, **TINY)
    state_a, state_b = model_a.state_dict(), model_b.state_dict()
    assert state_a.keys() == state_b.keys()
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert card_a["history"] == card_b["history"] and card_a["iou"] == card_b["iou"]
    losses = [entry["loss"] for entry in card_a["history"]]
    assert len(losses) == TINY["steps"]
    assert sum(losses[4:]) < sum(losses[:4]) and min(losses[4:]) < losses[0] - 1.0
    assert not model_a.training and card_a["threads"] == 1
    assert torch.get_num_threads() >= 1  # restored, not left at the training's count


def test_training_restores_the_thread_count():
    before = torch.get_num_threads()
    train_segmenter(progress=False, **{**TINY, "steps": 1, "threads": 1})
    assert torch.get_num_threads() == before


def test_cli_writes_weights_and_a_card_that_load(tmp_path):
    from seethrough.cli import main

    out = tmp_path / "seg"
    assert main(["train-segmenter", "--steps", "1", "--n-train", "8", "--n-val", "4",
                 "--batch-size", "4", "--out", str(out)]) == 0
    model = load_segmenter("seg", folder=tmp_path)
    assert not model.training and model.card["steps"] == 1
    command = shlex.split(model.card["training_command"])
    assert command[:2] == ["seethrough", "train-segmenter"] and "--threads" in command


def test_unknown_option_and_missing_weights_are_one_clear_line(tmp_path):
    with pytest.raises(InputError, match="unknown segmenter training options"):
        train_segmenter(epochs=3)
    with pytest.raises(InputError, match="init must be"):
        train_segmenter(init="imagenet")
    with pytest.raises(WeightsError, match="missing") as missing:
        load_segmenter("nothing", folder=tmp_path)
    assert "\n" not in str(missing.value) and "train-segmenter" in str(missing.value)


def test_segment_keeps_train_mode_and_rejects_bad_input():
    net = build_segmenter().train()
    labels = segment(net, torch.rand(3, 3, 32, 48), batch_size=2)
    assert net.training and all(m.training for m in net.modules())
    assert labels["shape"].shape == (3, 32, 48) and labels["scene"].shape == (3,)
    assert all(labels[name].dtype == torch.long for name in labels)
    for bad in (torch.rand(3, 64, 64), torch.rand(1, 1, 64, 64), torch.rand(1, 3, 30, 30)):
        with pytest.raises(InputError) as error:
            segment(net, bad)
        assert "\n" not in str(error.value)


def test_shipped_card_reports_every_concept_iou(shipped):
    card = shipped.card
    for name in PIXEL_CATEGORIES:
        values = ConceptWorld.categories[name][1:]
        assert list(card["iou"][name]) == values
        assert all(0 <= card["iou"][name][v] <= 1 for v in values)
    assert card["name"] == NAME and card["threads"] == 1 and card["n_val"] >= 1000
    # shipped: shape 0.874, colour 0.952, texture 0.356, scene 0.999 (1000 val images)
    assert card["mean_iou"]["shape"] >= 0.85 and min(card["iou"]["shape"].values()) >= 0.75
    assert card["mean_iou"]["colour"] >= 0.9
    assert card["mean_iou"]["texture"] >= 0.3
    assert card["scene_accuracy"] >= 0.98
    assert shipped.card["training_command"].startswith("seethrough train-segmenter --seed 0 ")


def test_shipped_segmenter_beats_the_majority_baseline_on_fresh_images(shipped):
    n_val = shipped.card["n_val"]
    world = ConceptWorld("val", length=n_val + 64)  # images past the card's validation set
    images = torch.stack([torch.from_numpy(world.generate(i)["image"]).permute(2, 0, 1)
                          for i in range(n_val, n_val + 64)]).float() / 255
    truth = torch.stack([torch.from_numpy(world.generate(i)["masks"]["shape"]).long()
                         for i in range(n_val, n_val + 64)])
    predicted = segment(shipped, images)["shape"]
    accuracy = float((predicted == truth).float().mean())
    baseline = float(torch.bincount(truth.flatten()).max()) / truth.numel()
    assert accuracy >= 0.95 and accuracy >= baseline + 0.6 * (1 - baseline)


def test_evaluate_scores_a_perfect_prediction_as_one():
    class Oracle(torch.nn.Module):
        """Returns the true labels as one-hot logits of the images it was built for."""

        def __init__(self, images, masks, scenes, labels):
            super().__init__()
            self.images, self.masks, self.scenes = images, masks, scenes
            self.conv = torch.nn.Conv2d(3, 1, 1)

        def forward(self, x):
            sizes = {n: len(ConceptWorld.categories[n]) for n in (*PIXEL_CATEGORIES, "scene")}
            out = {name: torch.nn.functional.one_hot(self.masks[:, c].long(), sizes[name])
                   .permute(0, 3, 1, 2).float() for c, name in enumerate(PIXEL_CATEGORIES)}
            out["scene"] = torch.nn.functional.one_hot(self.scenes, sizes["scene"]).float()
            return out

    data = generate_with_masks(ConceptWorld("val", length=4), progress=False)
    scores = evaluate(Oracle(*data), *data)
    assert scores["scene_accuracy"] == 1.0
    assert all(v in (1.0, None) for name in PIXEL_CATEGORIES for v in scores["iou"][name].values())
    assert scores["pixel_accuracy"] == dict.fromkeys(PIXEL_CATEGORIES, 1.0)

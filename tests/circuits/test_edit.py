"""Editing units, weights and directions in a scope, and measuring the effect."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from seethrough.circuits.edit import Clamp, Direction, Off, SetWeights, edit, effect
from seethrough.errors import InputError


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(inplace=True),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4)).eval()


def test_the_scope_restores_every_parameter_byte_for_byte_also_on_error(unchanged):
    net = _net()
    x = torch.rand(3, 3, 8, 8)
    before = net(x)
    changes = (SetWeights("0.weight", (slice(0, 3),), 0.5), Off("2", [1]),
               SetWeights("5.bias", (slice(None),), 7.0))
    with unchanged(net), pytest.raises(RuntimeError, match="inside"), edit(net, *changes):
        assert torch.all(net[5].bias == 7)
        raise RuntimeError("inside")
    torch.testing.assert_close(net(x), before, rtol=0, atol=0)


def test_off_clamp_and_weight_slices_do_what_they_say():
    net = _net()
    x = torch.rand(3, 3, 8, 8)
    seen = {}
    net[3].register_forward_hook(lambda m, i, o: seen.__setitem__("pooled", i[0].clone()))
    with edit(net, Off("2", [0, 4]), Clamp("2", [1], 2.5)):
        net(x)
    pooled = seen["pooled"]
    assert torch.all(pooled[:, [0, 4]] == 0) and torch.all(pooled[:, 1] == 2.5)
    assert pooled[:, [2, 3, 5]].abs().sum() > 0
    net[3]._forward_hooks.clear()
    with edit(net, SetWeights("5.weight", (slice(None), [2, 3]), 0.0)):
        assert torch.all(net[5].weight[:, [2, 3]] == 0) and net[5].weight[:, 0].abs().sum() > 0


def test_directions_are_added_and_removed():
    net = _net()
    x = torch.rand(2, 3, 8, 8)
    vector = torch.tensor([1.0, 2.0, 0.0, 0.0, 0.0, 2.0])
    unit = vector / 3
    seen = {}
    hook = net[3].register_forward_hook(lambda m, i, o: seen.__setitem__("acts", i[0].clone()))
    net(x)
    plain = seen["acts"]
    with edit(net, Direction("2", vector, 1.5)):
        net(x)
    torch.testing.assert_close(seen["acts"], plain + 1.5 * unit.view(1, -1, 1, 1))
    with edit(net, Direction("2", vector)):
        net(x)
    along = (seen["acts"] * unit.view(1, -1, 1, 1)).sum(1)
    torch.testing.assert_close(along, torch.zeros_like(along), atol=1e-5, rtol=0)
    hook.remove()


def test_switching_off_every_unit_of_the_last_layer_gives_chance_accuracy():
    """ConceptNet ends in global pooling and a linear layer: with every unit of its last block
    off, every image gets the same scores (the classifier's bias), so it always says one class
    and is right exactly on that class's share of the images (chance: about 1 in 8)."""
    from seethrough.data import ConceptWorld
    from seethrough.models import load_model

    model = load_model("conceptnet")
    batch = ConceptWorld("val", length=160).batch()
    result = effect(model, Off("features.block5", range(128)), batch["image"], batch["label"])
    table = result.table.set_index("class")
    assert table.loc["all", "accuracy_before"] > 0.95
    constant = int(model.fc.bias.argmax())
    share = float((batch["label"] == constant).float().mean())
    assert table.loc["all", "accuracy_after"] == pytest.approx(share, abs=1e-6)
    assert share <= float(batch["label"].bincount().max()) / len(batch["label"]) < 0.2
    assert result.logit_change.shape == (8, 8)
    own = table.drop("all")["logit_change"]
    assert (own < 0).all()  # every class loses its own evidence
    assert len(result.figure().axes) == 2


def test_bad_changes_say_what_to_do():
    net = _net()
    with pytest.raises(InputError, match="no parameter"), edit(net, SetWeights("nope", 0, 0.0)):
        pass
    with pytest.raises(InputError, match="out of range"), edit(net, Off("2", [9])):
        net(torch.rand(1, 3, 8, 8))
    with pytest.raises(InputError, match="channels"), edit(net, Direction("2", [1.0, 2.0], 1.0)):
        net(torch.rand(1, 3, 8, 8))
    with pytest.raises(InputError, match="labels"):
        effect(net, Off("2", [0]), torch.rand(2, 3, 8, 8))


def test_a_concept_direction_moves_its_class_score():
    """A CAV for "circle" (Kim et al. 2018: logistic regression between the mean-pooled block5
    activations of circle images and of the others), added at every position of block5 at the
    mean activation norm, raises the circle logit of every class's images and turns most
    images into circles (measured: accuracy 0.99 -> 0.28, circles stay 1.0); removed (projected
    out), it lowers the circle images' own logit most (measured: -3.1; crescents -3.0, the other
    classes -0.7 to +0.2), the accuracy unchanged."""
    from seethrough.concepts.tcav import concept_activation_vector
    from seethrough.data import ConceptWorld
    from seethrough.models import load_model
    from seethrough.trace import capture

    model = load_model("conceptnet")
    batch = ConceptWorld("val", length=160).batch()
    acts = capture(model, batch["image"], "features.block5")["features.block5"].output
    pooled = acts.mean((2, 3)).double().numpy()
    circle = (batch["label"] == 0).numpy()
    cav = torch.as_tensor(concept_activation_vector(pooled[circle], pooled[~circle]))
    scale = float(acts.norm(dim=1).mean())
    added = effect(model, Direction("features.block5", cav, scale), batch["image"], batch["label"])
    assert (added.logit_change[:, 0] > 0).all()
    table = added.table.set_index("class")
    assert table.loc["circle", "accuracy_after"] == 1
    assert table.loc["all", "accuracy_after"] < table.loc["all", "accuracy_before"] - 0.3
    removed = effect(model, Direction("features.block5", cav), batch["image"], batch["label"])
    own = removed.table.set_index("class")["logit_change"].drop("all")
    assert own["circle"] < -1 and own["circle"] == own.min()

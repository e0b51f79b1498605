"""Adebayo et al.'s sanity checks beyond the cascade: independent model randomization and data
randomization (ConceptNet against the ConceptNet trained on shuffled labels)."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import seethrough
from seethrough.errors import InputError
from seethrough.evaluation import data_randomization, model_randomization
from seethrough.evaluation.sanity import reinitialize, spearman


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(128, 5),
    ).eval()


def test_independent_randomizes_each_layer_alone_and_restores_it(unchanged):
    model, images = _net(), torch.rand(3, 3, 16, 16)
    with unchanged(model):
        independent = model_randomization(model, images, "saliency", mode="independent",
                                          seed=4, progress=False)
        cascading = model_randomization(model, images, "saliency", seed=4, progress=False)
    assert independent.layers == cascading.layers == ["6", "2", "0"]
    # the first step is the same in both modes: the top layer alone
    torch.testing.assert_close(independent.correlations[1], cascading.correlations[1])
    # each step equals randomizing that layer alone in a fresh copy, with the same seed
    classes = model(images).argmax(1)
    original = seethrough.attribute(model, images, classes, method="saliency").maps.abs()
    for step, layer in enumerate(independent.layers):
        alone = copy.deepcopy(model)
        torch.manual_seed(4 + 1 + step)
        reinitialize(dict(alone.named_modules())[layer])
        maps = seethrough.attribute(alone, images, classes, method="saliency").maps.abs()
        torch.testing.assert_close(independent.correlations[step + 1], spearman(original, maps))
    assert not torch.allclose(independent.correlations[-1], cascading.correlations[-1])
    assert list(independent.to_frame()["randomized"]) == ["(none)", "6", "2", "0"]
    with pytest.raises(InputError, match="mode must be one of"):
        model_randomization(model, images, "saliency", mode="random")


def test_an_unused_layer_randomized_alone_changes_nothing():
    class Branch(nn.Module):
        def __init__(self):
            super().__init__()
            self.net, self.unused = _net(), nn.Linear(4, 4)

        def forward(self, x):
            return self.net(x)

    result = model_randomization(Branch().eval(), torch.rand(2, 3, 16, 16), "saliency",
                                 layers=["unused", "net.6"], mode="independent")
    torch.testing.assert_close(result.correlations[1], torch.ones(2))
    assert result.correlations[2].max() < 0.99


def test_a_model_against_itself_agrees_perfectly_and_the_state_is_kept(unchanged):
    model, images = _net(), torch.rand(3, 3, 16, 16)
    state = torch.get_rng_state()
    with unchanged(model):
        result = data_randomization(model, model, images, ["saliency", "smoothgrad"])
    assert torch.equal(torch.get_rng_state(), state)  # and SmoothGrad's noise was reseeded
    torch.testing.assert_close(result.absolute, torch.ones(2, 3))
    torch.testing.assert_close(result.signed, torch.ones(2, 3))
    with pytest.raises(InputError, match="at least one"):
        data_randomization(model, model, images, [])


@pytest.mark.slow
def test_conceptnet_gradcam_depends_on_the_labels_guided_backprop_much_less():
    """Measured on 16 ConceptWorld images, true labels: |map| Spearman between ConceptNet and
    conceptnet_shuffled: Grad-CAM 0.17, integrated gradients 0.28, saliency 0.52, guided
    backprop 0.53 (Adebayo et al.: guided backprop barely changes either)."""
    model, shuffled = seethrough.load_model("conceptnet"), seethrough.load_model(
        "conceptnet_shuffled")
    batch = seethrough.ConceptWorld("val", length=16).batch()
    result = data_randomization(model, shuffled, batch["image"], ["gradcam", "guided_backprop"],
                                batch["label"])
    gradcam, guided = result.to_frame()["spearman_abs_mean"]
    assert gradcam < 0.35 and guided > gradcam + 0.2

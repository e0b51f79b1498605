import pytest
import torch

from seethrough.errors import InputError
from seethrough.featureviz import objectives as obj
from seethrough.featureviz.render import Probe
from seethrough.featureviz.synthesis import (
    deepdream,
    invert,
    stage_layers,
    synthesize_texture,
    transfer_style,
)
from seethrough.featureviz.synthesis.inversion import feature_loss
from seethrough.featureviz.synthesis.texture import target_grams
from tests.featureviz.conftest import smooth_image


def test_stage_layers(resnet):
    assert stage_layers(resnet, (3, 64, 64)) == ["conv1", "layer1", "layer2", "layer3", "layer4"]


def test_inversion_lowers_the_feature_loss(resnet, unchanged):
    target = smooth_image(size=32)
    with unchanged(resnet):
        result = invert(resnet, target, "layer1", steps=40, lr=0.1, preset="fast")
    start = feature_loss(resnet, "layer1", torch.full_like(target, 0.5), target)
    end = feature_loss(resnet, "layer1", result.images, target)
    assert end < 0.25 * start, (start, end)  # the stated fraction: a quarter of a grey start


def test_texture_matches_the_target_grams(resnet, unchanged):
    texture = smooth_image(1, size=32)
    layers = ["conv1", "layer1"]
    with unchanged(resnet):
        result = synthesize_texture(resnet, texture, layers=layers, steps=50, lr=0.1, preset="fast")
    got, want = target_grams(resnet, result.images, layers), target_grams(resnet, texture, layers)
    for layer in layers:
        error = (got[layer] - want[layer]).norm() / want[layer].norm()
        assert error < 0.15, (layer, error)  # stated tolerance: 15 % relative Frobenius error
    assert not torch.allclose(result.images, texture, atol=0.05)  # a new image, not a copy


def test_deepdream_raises_the_layer_objective(resnet, unchanged):
    image = smooth_image(2, 48)
    with unchanged(resnet):
        dreamed = deepdream(resnet, image, layer="layer2", octaves=2, steps=4, jitter=4)
    with Probe(resnet, obj.layer("layer2")) as probe:
        assert probe(dreamed) > probe(image)
    assert dreamed.shape == image.shape and 0 <= dreamed.min() and dreamed.max() <= 1


def test_style_transfer_lowers_its_loss(resnet, unchanged):
    content, style = smooth_image(3, size=32), torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with unchanged(resnet):
        result = transfer_style(resnet, content, style, content_layer="layer2",
                                style_layers=["conv1", "layer1"], steps=20, lr=0.05, preset="fast")
    assert result.history[-1][0] > result.history[0][0]


def test_bad_images_are_clear_errors(resnet):
    with pytest.raises(InputError, match="N, 3, H, W"):
        invert(resnet, torch.rand(3, 8, 8), "layer1")
    with pytest.raises(InputError, match="layer"):
        deepdream(resnet, torch.rand(1, 3, 8, 8))

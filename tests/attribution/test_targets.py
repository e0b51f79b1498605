"""Targets, input validation, errors, ViT tokens, the result object."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

import seethrough
from seethrough.attribution import Attribution, default_layer
from seethrough.errors import InputError, LayerNotFoundError
from tests.conftest import small_vit


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).eval()


@pytest.fixture(scope="module")
def x():
    return torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_target_forms_agree(resnet, x):
    reference = seethrough.attribute(resnet, x, [3, 3]).maps
    for target in (3, [3, 3], (3, 3), torch.tensor([3, 3]), np.int64(3)):
        torch.testing.assert_close(seethrough.attribute(resnet, x, target).maps, reference)
    callable_ = seethrough.attribute(resnet, x, lambda out: out[:, 3])
    torch.testing.assert_close(callable_.maps, reference)
    assert callable_.target is None


def test_predicted_is_the_argmax_on_the_clean_image(resnet, x):
    with torch.no_grad():
        predicted = resnet(x).argmax(1)
    for method, options in [("saliency", {}), ("gradcam", {}), ("integrated_gradients", {"n_steps": 3}),
                            ("occlusion", {"window": 16}), ("smoothgrad", {"n_samples": 2})]:
        result = seethrough.attribute(resnet, x, method=method, **options)
        assert result.target.tolist() == predicted.tolist(), method
        torch.testing.assert_close(
            result.maps, seethrough.attribute(resnet, x, predicted, method=method, **options).maps)


class TwoHeads(nn.Module):
    def __init__(self, as_dict: bool):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.a, self.b, self.as_dict = nn.Linear(4, 3), nn.Linear(4, 2), as_dict

    def forward(self, x):
        h = self.body(x)
        return {"main": self.a(h), "aux": self.b(h)} if self.as_dict else (self.a(h), self.b(h))


def test_tuple_and_dict_outputs_need_a_callable_target(x):
    for as_dict, pick, words in [(False, lambda out: out[1][:, 0], "tuple of 2 items"),
                                 (True, lambda out: out["aux"][:, 0], "dict with keys")]:
        model = TwoHeads(as_dict).eval()
        with pytest.raises(InputError, match=words) as error:
            seethrough.attribute(model, x, 0)
        assert "callable target" in str(error.value)
        for method, options in [("saliency", {}), ("gradcam", {"layer": "body.0"}),
                                ("occlusion", {"window": 16})]:
            result = seethrough.attribute(model, x, pick, method=method, **options)
            assert result.maps.shape == (2, 1, 32, 32) and result.maps.abs().sum() > 0


def test_segmentation_output_with_a_callable_target(x):
    torch.manual_seed(0)
    segmenter = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 1)).eval()
    with pytest.raises(InputError, match=r"\(N, classes\)"):
        seethrough.attribute(segmenter, x, 2)
    result = seethrough.attribute(segmenter, x, lambda out: out[:, 2, :8, :8].mean((1, 2)))
    # the score reads only the top-left corner (a 3x3 conv sees one pixel further)
    assert result.maps[..., 10:, :].abs().sum() == 0 and result.maps[..., :8, :8].abs().sum() > 0


def test_bad_targets_raise_clear_errors(resnet, x):
    cases = [(10, "out of range"), ([1, 2, 3], "3 class indices for 2"), (-1, ">= 0"),
             (1.5, "integers"), ("best", "not understood"), (None, "class indices")]
    for target, words in cases:
        with pytest.raises(InputError, match=words):
            seethrough.attribute(resnet, x, target)
    with pytest.raises(InputError, match=r"shape \(2,\)"):
        seethrough.attribute(resnet, x, lambda out: out.sum())


def test_bad_images_raise_clear_errors(resnet, x):
    nan = x.clone()
    nan[0, 0, 0, 0] = float("nan")
    for images, words in [(nan, "NaN"), (x[0], r"images\[None\]"), ((x * 255).byte(), "float"),
                          (x.numpy(), "torch.Tensor"), (x[:0], "empty")]:
        with pytest.raises(InputError, match=words):
            seethrough.attribute(resnet, images, 0)


def test_bad_method_option_or_layer_raise_clear_errors(resnet, x):
    with pytest.raises(InputError, match="did you mean gradcam"):
        seethrough.attribute(resnet, x, 0, method="gradcm")
    with pytest.raises(InputError, match="no option 'n_step'.*n_steps"):
        seethrough.attribute(resnet, x, 0, method="integrated_gradients", n_step=5)
    with pytest.raises(LayerNotFoundError, match="layer4"):
        seethrough.attribute(resnet, x, 0, method="gradcam", layer="layer5")
    with pytest.raises(InputError, match="batch_size"):
        seethrough.attribute(resnet, x, 0, batch_size=0)


def test_inputs_are_not_modified(resnet, x):
    before = x.clone()
    for method in ("saliency", "integrated_gradients", "occlusion", "gradcam"):
        seethrough.attribute(resnet, x, 0, method=method, n_steps=2) if method == "integrated_gradients" \
            else seethrough.attribute(resnet, x, 0, method=method)
    assert torch.equal(x, before)


def test_vit_tokens_become_a_grid():
    torch.manual_seed(0)
    vit = small_vit().eval()
    nn.init.normal_(vit.heads.head.weight)  # torchvision starts the head at zero: no gradient
    x = torch.rand(2, 3, 64, 64)
    assert default_layer(vit) == "encoder.layers.encoder_layer_1.ln_1"
    result = seethrough.attribute(vit, x, 1, method="gradcam", layer="encoder.layers.encoder_layer_1")
    assert result.raw.shape == (2, 1, 4, 4)  # 17 tokens: class token dropped, 4 x 4 grid
    at_ln = seethrough.attribute(vit, x, 0, method="gradcam")
    assert at_ln.raw.shape == (2, 1, 4, 4) and at_ln.maps.abs().sum() > 0
    explicit = seethrough.attribute(vit, x, 0, method="gradcam", grid=(4, 4))
    torch.testing.assert_close(explicit.maps, at_ln.maps)
    with pytest.raises(InputError, match="grid"):
        seethrough.attribute(vit, x, 1, method="gradcam", grid=(5, 5))
    with pytest.raises(InputError, match="global average pooling"):
        seethrough.attribute(vit, x, 1, method="cam")


def test_default_layer_of_a_wrapped_model():
    model = seethrough.load_model("torchvision:resnet18", num_classes=3)
    assert default_layer(model) == "net.layer4"
    vgg = torchvision.models.vgg11()
    assert default_layer(vgg) == "features"


def test_result_normalization_and_numpy():
    maps = torch.tensor([[[[-2.0, 1.0], [0.0, 0.5]]], [[[0.0, 0.0], [0.0, 0.0]]]])
    result = Attribution(maps, method="test")
    assert result.normalized().flatten(1)[0].tolist() == [-1.0, 0.5, 0.0, 0.25]
    assert result.normalized("min_max").flatten(1)[0].tolist() == pytest.approx([0, 1, 2 / 3, 2.5 / 3])
    assert result.normalized("positive").flatten(1)[0].tolist() == [0.0, 1.0, 0.0, 0.5]
    assert torch.equal(result.normalized()[1], torch.zeros(1, 2, 2))  # no division by zero
    assert torch.equal(result.maps, maps)  # raw maps kept
    array = result.to_numpy()
    assert isinstance(array, np.ndarray) and array.shape == (2, 2, 2)
    with pytest.raises(InputError):
        result.normalized("z")


def test_result_records_options_and_target(resnet, x):
    result = seethrough.attribute(resnet, x, [1, 2], method="integrated_gradients", n_steps=3)
    assert result.options == {"n_steps": 3, "baseline": 0.0, "rule": "gauss_legendre",
                               "batch_size": 32}
    assert result.target.tolist() == [1, 2] and len(result) == 2

"""Every method on every architecture: right shapes, finite values, the model left as it was."""
from __future__ import annotations

import pytest
import torch

import seethrough
from seethrough.attribution import METHODS
from seethrough.errors import InputError
from tests.conftest import ARCHITECTURES, small_vit

#: few samples / steps / masks / iterations: these tests check that things run, not quality
LIGHT = {
    "integrated_gradients": {"n_steps": 4},
    "smoothgrad": {"n_samples": 3},
    "scorecam": {"top_channels": 6},
    "occlusion": {"window": 32},
    "rise": {"n_masks": 20},
    "meaningful_perturbation": {"iterations": 5},
    "extremal_perturbation": {"iterations": 5},
    "gradient_shap": {"n_samples": 2},
    "layer_conductance": {"n_steps": 3},
    "neuron_conductance": {"n_steps": 3},
    # superpixel methods: a 3 x 3 grid (SLIC finds one segment in these noise images)
    "lime": {"segments": "grid", "n_segments": 9, "n_samples": 16},
    "kernel_shap": {"segments": "grid", "n_segments": 9, "n_samples": 16},
    "shapley_sampling": {"segments": "grid", "n_segments": 9, "n_samples": 1},
    "feature_ablation": {"segments": "grid", "n_segments": 9},
}
LAYERED = {"cam", "gradcam", "gradcam_plus_plus", "scorecam", "guided_gradcam", "hirescam",
           "xgradcam", "layercam", "eigencam", "ablationcam"}
LAYERED |= {"layer_conductance", "neuron_conductance"}
LAYERED |= {"excitation_backprop", "contrastive_excitation_backprop"}
#: rules for CNNs only: a transformer gets a clear error
CNN_ONLY = {"lrp", "excitation_backprop", "contrastive_excitation_backprop"}
#: CAM needs a final linear layer fed by global average pooling
CAM_ARCHITECTURES = {"resnet18", "densenet121"}
#: the automatic layer: the outermost block holding the last conv and no classifier part
#: (MobileNetV3's squeeze-excitation pools, so its last conv block is chosen, not "features")
DEFAULT = {"resnet18": "layer4", "vgg11_bn": "features", "densenet121": "features",
           "mobilenet_v3_small": "features.12"}

MODELS = {**ARCHITECTURES, "vit": small_vit}
_built: dict[str, torch.nn.Module] = {}


def model_for(arch: str) -> torch.nn.Module:
    if arch not in _built:
        torch.manual_seed(0)
        _built[arch] = MODELS[arch]().eval()
        if arch == "vit":  # torchvision starts the head at zero, which leaves no gradient at all
            torch.nn.init.normal_(_built[arch].heads.head.weight)
    return _built[arch]


@pytest.fixture(scope="module")
def images():
    return torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def test_registry_has_every_method_of_the_issue():
    assert set(METHODS) >= {
        "saliency", "input_x_gradient", "integrated_gradients", "smoothgrad", "guided_backprop",
        "deconvnet", "cam", "gradcam", "gradcam_plus_plus", "scorecam", "guided_gradcam",
        "occlusion", "rise", "meaningful_perturbation", "extremal_perturbation",
    }


@pytest.mark.parametrize("arch", list(MODELS))
def test_every_method_runs_and_leaves_model_unchanged(arch, images, unchanged):
    """One ``unchanged`` check around all methods (it copies every parameter: vgg has 130 M)."""
    model = model_for(arch)
    with unchanged(model):
        for method in sorted(METHODS):
            if method == "cam" and arch not in CAM_ARCHITECTURES:
                with pytest.raises(InputError, match="global average pooling"):
                    seethrough.attribute(model, images, method=method)
                continue
            if method in CNN_ONLY and arch == "vit":
                with pytest.raises(InputError, match="attention"):
                    seethrough.attribute(model, images, method=method)
                continue
            result = seethrough.attribute(model, images, [1, 7], method=method, **LIGHT.get(method, {}))
            assert result.maps.shape == (2, 1, 64, 64), method
            assert torch.isfinite(result.maps).all(), method
            assert result.method == method and result.target.tolist() == [1, 7]
            if method in LAYERED:
                expected = "encoder.layers.encoder_layer_1.ln_1" if arch == "vit" else DEFAULT[arch]
                assert result.options["layer"] == expected, method
            if method in ("saliency", "input_x_gradient", "integrated_gradients", "smoothgrad",
                          "guided_backprop", "deconvnet", "occlusion", "rise"):
                assert result.maps.abs().sum() > 0, f"{method}: an all-zero map explains nothing"
            assert all(not m._forward_hooks and not m._backward_hooks for m in model.modules())


@pytest.mark.parametrize("method", sorted(METHODS))
def test_model_unchanged_when_the_target_raises_midway(method, images, unchanged):
    model = model_for("resnet18")
    calls = []

    def flaky(output):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom")
        return output[:, 0]

    with unchanged(model), pytest.raises((RuntimeError, InputError)):
        seethrough.attribute(model, images, flaky, method=method, batch_size=1,
                             **LIGHT.get(method, {}))
    assert len(calls) == (0 if method == "cam" else 2)  # CAM refuses a function target at once


def test_training_mode_is_kept_and_used(images, unchanged):
    model = model_for("resnet18").train()
    try:
        with unchanged(model):
            seethrough.attribute(model, images, 0, method="gradcam")
        assert model.training
    finally:
        model.eval()

"""On a CUDA GPU, every family gives the CPU's results (float tolerance); skipped without one.

Run: ``python -m pytest -q -m gpu tests/gpu`` or ``scripts/gpu-check``. TF32 is turned off while
these run, so the GPU computes in full float32 and the CPU and GPU results agree to ~1e-6; the
tolerance is 1e-3 of each result's scale.
"""
from __future__ import annotations

import copy

import pytest
import torch
import torchvision

import seethrough

pytestmark = pytest.mark.gpu

DEVICE = torch.device("cuda")
#: largest difference allowed, as a fraction of the CPU result's largest magnitude
TOLERANCE = 1e-3


def assert_close_to_scale(actual: torch.Tensor, expected: torch.Tensor, what: str,
                          tolerance: float = TOLERANCE) -> None:
    actual, expected = actual.detach().float().cpu(), expected.detach().float().cpu()
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert torch.isfinite(actual).all(), f"{what}: non-finite values on {DEVICE}"
    scale = float(expected.abs().max().clamp_min(1e-12))
    error = float((actual - expected).abs().max())
    assert error <= tolerance * scale, (
        f"{what}: {DEVICE} differs from the CPU by {error:.3g} (scale {scale:.3g}, "
        f"allowed {tolerance * scale:.3g})")


@pytest.fixture(scope="module", autouse=True)
def full_float32():
    """No TF32 (on by default for cuDNN convolutions): compare float32 with float32."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.fixture(scope="module")
def models():
    """The same random-weight resnet18 on the CPU and, a deep copy, on the device."""
    torch.manual_seed(0)
    cpu = torchvision.models.resnet18(num_classes=10).eval()
    return cpu, copy.deepcopy(cpu).to(DEVICE)


@pytest.fixture(scope="module")
def images_and_targets(models):
    cpu, _ = models
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        targets = cpu(images).argmax(1)  # fixed classes: a near tie cannot flip the target
    return images, targets


METHODS = {
    "saliency": {},
    "integrated_gradients": {"n_steps": 8},
    "gradcam": {"layer": "layer3"},
    "scorecam": {"layer": "layer3", "top_channels": 8},
    "occlusion": {"window": 16, "stride": 8},
    "rise": {"n_masks": 64},
}


@pytest.mark.parametrize("method", list(METHODS))
def test_attribution_on_the_device_equals_the_cpu(method, models, images_and_targets):
    cpu, device_model = models
    images, targets = images_and_targets
    expected = seethrough.attribute(cpu, images, targets, method=method, **METHODS[method])
    actual = seethrough.attribute(device_model, images.to(DEVICE), targets.to(DEVICE),
                                  method=method, **METHODS[method])
    assert actual.maps.device.type == DEVICE.type
    assert_close_to_scale(actual.maps, expected.maps, method)


def test_deletion_and_insertion_on_the_device_equal_the_cpu(models, images_and_targets):
    cpu, device_model = models
    images, targets = images_and_targets
    maps = torch.rand(len(images), 1, 64, 64, generator=torch.Generator().manual_seed(1))  # no ties
    options = {"metrics": ["deletion", "insertion"], "progress": False}
    expected = seethrough.evaluate(cpu, images, maps, targets, **options)
    actual = seethrough.evaluate(device_model, images.to(DEVICE), maps.to(DEVICE),
                                 targets.to(DEVICE), **options)
    for name in ("deletion", "insertion"):
        assert_close_to_scale(actual.values[name], expected.values[name], name)


def test_visualize_runs_on_the_device(models):
    _, device_model = models
    result = seethrough.visualize(device_model, seethrough.objectives.channel("layer2", [0]),
                                  steps=4, size=32)
    assert result.images.shape == (1, 3, 32, 32)
    assert result.images.device.type in (DEVICE.type, "cpu")
    assert torch.isfinite(result.images).all() and len(result.history) == 4


def test_dissection_on_the_device_equals_the_cpu():
    from seethrough.models import load_model

    layer = "features.block3"
    data = seethrough.ConceptWorld("val", length=32)
    expected = seethrough.dissect(load_model("conceptnet"), [layer], data, progress=False)
    actual = seethrough.dissect(load_model("conceptnet").to(DEVICE), [layer], data, progress=False)
    # the full (units, concepts) IoU: a unit whose best concept differs can only be a tie
    assert_close_to_scale(actual.iou(layer), expected.iou(layer), "IoU", tolerance=1e-4)
    cpu_frame, device_frame = expected.to_frame(), actual.to_frame()
    assert list(device_frame.columns) == list(cpu_frame.columns)
    assert (device_frame[["layer", "unit"]] == cpu_frame[["layer", "unit"]]).all().all()
    assert (device_frame.iou - cpu_frame.iou).abs().max() <= 1e-4
    assert_close_to_scale(torch.tensor(device_frame.threshold.to_numpy()),
                          torch.tensor(cpu_frame.threshold.to_numpy()), "thresholds")
    iou = expected.iou(layer).cpu()
    chosen = actual.best(layer)[0].cpu()
    for unit in torch.nonzero(chosen != expected.best(layer)[0].cpu()).flatten().tolist():
        assert float(iou[unit].max() - iou[unit, chosen[unit]]) <= 1e-4, f"unit {unit}: not a tie"


def test_style_transfer_runs_on_the_device(models):
    """Guards a fixed defect: ``synthesis.layers`` built its probe input on the CPU."""
    from seethrough.featureviz.synthesis import transfer_style

    _, device_model = models
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2)).to(DEVICE)
    result = transfer_style(device_model, x, x, steps=2)
    assert result.images.shape == (1, 3, 64, 64)
    assert torch.isfinite(result.images).all()

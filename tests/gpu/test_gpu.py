"""On a CUDA GPU, every family gives the CPU's results (float tolerance); skipped without one.

Run: ``python -m pytest -q -m gpu tests/gpu`` or ``scripts/gpu-check``. TF32 is turned off while
these run, so the GPU computes in full float32 and the CPU and GPU results agree to ~1e-6; the
tolerance is 1e-3 of each result's scale. Attribution maps are compared in float64 (see
``float64_models``).
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


@pytest.fixture(scope="module")
def float64_models(models):
    """The models in float64: a float32 ReLU input within rounding of 0 (2.9e-7 in one of
    resnet18's here) gates differently on the two devices and moves a gradient map by 5 % of
    its scale; in float64 no gate is that close."""
    return tuple(copy.deepcopy(model).double() for model in models)


@pytest.mark.parametrize("method", list(METHODS))
def test_attribution_on_the_device_equals_the_cpu(method, float64_models, images_and_targets):
    cpu, device_model = float64_models
    images, targets = images_and_targets
    images = images.double()
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


@pytest.mark.parametrize("method, options", [
    ("fgsm", {"eps": 4 / 255}),
    ("pgd", {"eps": 4 / 255, "steps": 3, "random_start": False}),
    ("deepfool", {"steps": 5}),
])
def test_attacks_on_the_device_equal_the_cpu(method, options, models, images_and_targets):
    """Sign-of-gradient steps can flip where a gradient is ~0: almost every pixel must agree."""
    cpu, device_model = models
    images, _ = images_and_targets
    expected = seethrough.attack(cpu, images, method=method, **options)
    actual = seethrough.attack(device_model, images.to(DEVICE), method=method, **options)
    assert actual.images.device.type == DEVICE.type
    agree = ((actual.images.cpu() - expected.images).abs() <= 1e-4).float().mean()
    assert float(agree) >= 0.99, f"{method}: only {float(agree):.4f} of the pixels agree"


def test_gan_generation_segmentation_and_ablation_on_the_device_equal_the_cpu():
    from seethrough.gan.interventions import ablation_effect, concept_pixels
    from seethrough.gan.quality import generate_images, sample_latents
    from seethrough.models import load_model

    generator, segmenter = load_model("conceptworld_gan"), load_model("conceptworld_segmenter")
    latents = sample_latents(16, generator.latent_dim, seed=0)
    expected = generate_images(generator, latents)
    device_generator = copy.deepcopy(generator).to(DEVICE)
    device_segmenter = copy.deepcopy(segmenter).to(DEVICE)
    actual = generate_images(device_generator, latents.to(DEVICE))
    assert_close_to_scale(actual, expected, "generated images")
    same = (concept_pixels(device_segmenter, expected.to(DEVICE), "red").cpu()
            == concept_pixels(segmenter, expected, "red")).float().mean()
    assert float(same) >= 0.999, f"segmenter labels agree on only {float(same):.4f} of pixels"
    units = [0, 1, 2, 3]
    on_cpu = ablation_effect(generator, segmenter, "layer3", units, "red", latents,
                             random_draws=1)
    on_device = ablation_effect(device_generator, device_segmenter, "layer3", units,
                                "red", latents.to(DEVICE), random_draws=1)
    assert abs(on_device.removed - on_cpu.removed) <= 0.01


def test_gan_inversion_runs_on_the_device():
    from seethrough.gan.inversion import invert
    from seethrough.gan.quality import generate_images, sample_latents
    from seethrough.models import load_model

    generator = load_model("conceptworld_gan").to(DEVICE)
    images = generate_images(generator, sample_latents(2, generator.latent_dim, seed=1).to(DEVICE))
    result = invert(generator, images, steps=5, progress=False)
    assert torch.isfinite(result.latents).all() and result.latents.shape[0] == 2


def test_stylizer_on_the_device_equals_the_cpu_and_trains_there():
    from seethrough.featureviz.stylizers import load_stylizer, stylize, train_stylizer
    from seethrough.models import load_model

    stylizer = load_stylizer("stained_glass")
    content = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    expected = stylize(stylizer, content)
    actual = stylize(copy.deepcopy(stylizer).to(DEVICE), content.to(DEVICE))
    assert_close_to_scale(actual, expected, "stylized images")
    extractor = load_model("conceptnet").to(DEVICE)
    trained = train_stylizer(content[0], content, extractor=extractor, size=32, steps=3,
                             content_layer="features.block3",
                             style_layers=["features.block1", "features.block2"], progress=False)
    assert len(trained.history) == 3 and all(torch.isfinite(torch.tensor(row["total"]))
                                             for row in trained.history)


def test_cka_and_features_on_the_device_equal_the_cpu(models, images_and_targets):
    from seethrough.circuits.cka import cka
    from seethrough.represent.extract import features

    cpu, device_model = models
    images, _ = images_and_targets
    images = torch.cat([images, images.flip(-1), images.flip(-2)])
    expected = features(cpu, "layer2", images, progress=False)
    actual = features(device_model, "layer2", images.to(DEVICE), progress=False)
    assert_close_to_scale(actual, expected, "layer2 features")
    x, y = torch.randn(40, 8), torch.randn(40, 8)
    for kernel in ("linear", "rbf"):
        assert abs(cka(x.to(DEVICE), y.to(DEVICE), kernel) - cka(x, y, kernel)) <= 1e-4

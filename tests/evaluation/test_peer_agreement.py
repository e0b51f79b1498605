"""Agreement with peer libraries on the same model and inputs (Captum, pytorch-grad-cam), and
Score-CAM against the authors' formula written out here independently.

Peers are in the ``dev`` extra; the tests skip with the reason when a peer is not importable.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision

import seethrough

LAYER = "layer4"


def correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation per image of two map batches, after min-max normalising each map."""
    a, b = a.reshape(len(a), -1).double(), b.reshape(len(b), -1).double()

    def min_max(x):
        low, high = x.amin(1, keepdim=True), x.amax(1, keepdim=True)
        return (x - low) / (high - low).clamp(min=1e-12)

    a, b = min_max(a), min_max(b)
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp(min=1e-12)


@pytest.fixture(scope="module")
def setting():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    images = torch.rand(3, 3, 64, 64)
    targets = torch.tensor([1, 4, 7])
    return model, images, targets


def test_saliency_matches_captum(setting):
    captum = pytest.importorskip("captum.attr", reason="captum not installed (pip install captum)")
    model, images, targets = setting
    ours = seethrough.attribute(model, images, targets, method="saliency")
    theirs = captum.Saliency(model).attribute(images.clone().requires_grad_(), target=targets,
                                              abs=False)
    torch.testing.assert_close(ours.raw, theirs, rtol=1e-4, atol=1e-6)
    assert (correlation(ours.maps, theirs.abs().amax(1)) >= 0.99).all()


def test_integrated_gradients_matches_captum(setting):
    captum = pytest.importorskip("captum.attr", reason="captum not installed (pip install captum)")
    model, images, targets = setting
    ours = seethrough.attribute(model, images, targets, method="integrated_gradients", n_steps=20)
    theirs = captum.IntegratedGradients(model).attribute(images, target=targets, n_steps=20,
                                                         method="gausslegendre")
    assert (correlation(ours.raw, theirs) >= 0.99).all()
    assert (correlation(ours.maps, theirs.sum(1)) >= 0.99).all()
    torch.testing.assert_close(ours.raw, theirs.float(), rtol=1e-3, atol=1e-5)


def test_gradcam_matches_captum_layer_gradcam(setting):
    captum = pytest.importorskip("captum.attr", reason="captum not installed (pip install captum)")
    model, images, targets = setting
    ours = seethrough.attribute(model, images, targets, method="gradcam", layer=LAYER)
    layer_cam = captum.LayerGradCam(model, model.layer4).attribute(
        images, target=targets, relu_attributions=True)
    theirs = captum.LayerAttribution.interpolate(layer_cam, (64, 64), "bilinear")
    torch.testing.assert_close(ours.raw, layer_cam, rtol=1e-4, atol=1e-6)
    assert (correlation(ours.maps, theirs) >= 0.99).all()


def test_gradcam_plus_plus_matches_pytorch_grad_cam(setting):
    grad_cam = pytest.importorskip("pytorch_grad_cam",
                                   reason="pytorch-grad-cam not installed (pip install grad-cam)")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model, images, targets = setting
    ours = seethrough.attribute(model, images, targets, method="gradcam_plus_plus", layer=LAYER)
    with grad_cam.GradCAMPlusPlus(model=model, target_layers=[model.layer4]) as cam:
        theirs = cam(input_tensor=images, targets=[ClassifierOutputTarget(int(t)) for t in targets])
    theirs = torch.from_numpy(theirs)  # min-max normalised, resized with cv2 (bilinear)
    assert (correlation(ours.maps, theirs) >= 0.99).all()


def scorecam_by_the_paper(model, images, targets, layer):
    """Wang et al. 2020, eq. (4)-(6), one channel and one image at a time."""
    activations = {}
    handle = dict(model.named_modules())[layer].register_forward_hook(
        lambda module, inputs, output: activations.__setitem__("a", output.detach().clone()))
    try:
        with torch.no_grad():
            model(images)
    finally:
        handle.remove()
    maps = []
    with torch.no_grad():
        for x, c, acts in zip(images, targets, activations["a"]):
            base = model(torch.zeros_like(x)[None]).softmax(1)[0, c]
            cam = torch.zeros(acts.shape[-2:])
            for a in acts:
                up = F.interpolate(a[None, None], size=x.shape[-2:], mode="bilinear",
                                   align_corners=False)[0, 0]
                if up.max() == up.min():
                    continue
                h = (up - up.min()) / (up.max() - up.min())
                weight = model((x * h)[None]).softmax(1)[0, c] - base
                cam += weight * a
            maps.append(F.relu(cam))
    return torch.stack(maps)[:, None]


def test_scorecam_matches_the_papers_formula():
    torch.manual_seed(1)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 12, 3, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(12, 5),
    ).eval()
    images = torch.rand(2, 3, 32, 32)
    targets = torch.tensor([2, 2])  # the predicted class of both (seed 1)
    ours = seethrough.attribute(model, images, targets, method="scorecam", layer="4")
    expected = scorecam_by_the_paper(model, images, targets, "4")
    assert (expected.flatten(1).amax(1) > 0).all()  # a map with something in it
    torch.testing.assert_close(ours.raw, expected, rtol=1e-4, atol=1e-6)
    assert (correlation(ours.maps, F.interpolate(expected, size=(32, 32), mode="bilinear")) >= 0.99).all()

"""HiResCAM, XGrad-CAM, LayerCAM, Eigen-CAM, Ablation-CAM: agreement with pytorch-grad-cam on the
same model, inputs, targets and layer; the identities between them; Ablation-CAM's tail pass
against the whole-network re-run and the paper's formula; the model left as it was."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import seethrough
from seethrough.errors import InputError
from seethrough.trace import Trace
from tests.evaluation.test_peer_agreement import correlation

VARIANTS = ("hirescam", "xgradcam", "layercam", "eigencam", "ablationcam")
LAYERS = {"resnet18": "layer4", "mobilenet_v2": "features.18"}
PEERS = {"hirescam": "HiResCAM", "xgradcam": "XGradCAM", "layercam": "LayerCAM",
         "ablationcam": "AblationCAM"}


def calibrated(model: nn.Module, size: int = 64) -> nn.Module:
    """Random weights with BatchNorm statistics of random images: at init MobileNetV2's logits
    are ~1e-10 and its maps mostly float noise; this gives unit-scale activations."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None
    with torch.no_grad():
        model.train()(torch.rand(64, 3, size, size))
    return model.eval()


_models: dict[str, nn.Module] = {}


def model_for(arch: str) -> nn.Module:
    if arch not in _models:
        torch.manual_seed(0)
        model = getattr(torchvision.models, arch)(num_classes=10).eval()
        _models[arch] = calibrated(model) if arch == "mobilenet_v2" else model
    return _models[arch]


@pytest.fixture(scope="module")
def images():
    return torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


TARGETS = torch.tensor([1, 4])


@pytest.mark.parametrize("arch", list(LAYERS))
@pytest.mark.parametrize("method", list(PEERS))
def test_matches_pytorch_grad_cam(method, arch, images):
    grad_cam = pytest.importorskip("pytorch_grad_cam",
                                   reason="pytorch-grad-cam not installed (pip install grad-cam)")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model, layer = model_for(arch), LAYERS[arch]
    if method == "ablationcam":  # the peer re-runs the whole net per 128 channels: one image
        images = images[:1]
    targets = TARGETS[:len(images)]
    ours = seethrough.attribute(model, images, targets, method=method, layer=layer)
    peer = getattr(grad_cam, PEERS[method])
    extra = {"batch_size": 128} if method == "ablationcam" else {}
    with peer(model=model, target_layers=[dict(model.named_modules())[layer]], **extra) as cam:
        theirs = cam(input_tensor=images, targets=[ClassifierOutputTarget(int(t)) for t in targets])
    assert (correlation(ours.maps, torch.from_numpy(theirs)) >= 0.99).all()


@pytest.mark.parametrize("arch", list(LAYERS))
def test_eigencam_centered_is_pytorch_grad_cams_projection(arch, images):
    """pytorch-grad-cam keeps LAPACK's sign of the component; ours is fixed (loadings sum >= 0),
    so the peer's projection is compared up to that sign."""
    pytest.importorskip("pytorch_grad_cam", reason="pytorch-grad-cam not installed")
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection

    model, layer = model_for(arch), LAYERS[arch]
    ours = seethrough.attribute(model, images, method="eigencam", layer=layer, center=True).raw
    with torch.no_grad(), Trace(model, layer) as trace:
        model(images)
    theirs = torch.from_numpy(get_2d_projection(trace[layer].output.numpy()))[:, None]
    for mine, signed in zip(ours, theirs):
        peer = max((F.relu(signed), F.relu(-signed)),
                   key=lambda p: float(correlation(mine[None], p[None])))
        torch.testing.assert_close(mine, peer, rtol=1e-3, atol=1e-3 * float(peer.abs().max()))


def test_eigencam_paper_default_is_nonnegative_first_component(images):
    """Uncentered, on non-negative activations, the first right singular vector is of one sign
    (Perron-Frobenius); ours points it positive, so the projection needs no ReLU."""
    model, layer = model_for("resnet18"), "layer4"
    result = seethrough.attribute(model, images, method="eigencam", layer=layer)
    with torch.no_grad(), Trace(model, layer) as trace:
        model(images)
    acts = trace[layer].output.double()
    for a, cam in zip(acts, result.raw):
        matrix = a.flatten(1).T
        v = torch.linalg.svd(matrix, full_matrices=False).Vh[0]
        projection = (matrix @ (v if v.sum() >= 0 else -v)).view(cam.shape[1:])
        assert (projection >= -1e-9).all()
        torch.testing.assert_close(cam[0].double(), projection, rtol=1e-4, atol=1e-5)


def head_model(inplace: bool = False, positive_head: bool = False) -> nn.Module:
    """conv -> ReLU -> conv -> ReLU -> global average pool -> linear: at layer "3" (the last ReLU)
    the gradient of every class score is constant over space."""
    torch.manual_seed(3)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=inplace),
        nn.Conv2d(8, 12, 3, padding=1), nn.ReLU(inplace=inplace),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 5),
    ).eval()
    if positive_head:  # every path from layer "1" on has positive weights
        with torch.no_grad():
            model[2].weight.abs_()
            model[6].weight.abs_()
    return model


def test_hirescam_and_xgradcam_equal_gradcam_when_the_gradient_is_constant_over_space():
    model, images = head_model(), torch.rand(3, 3, 16, 16)
    gradcam = seethrough.attribute(model, images, [0, 2, 4], method="gradcam", layer="3").raw
    hires = seethrough.attribute(model, images, [0, 2, 4], method="hirescam", layer="3").raw
    xgrad = seethrough.attribute(model, images, [0, 2, 4], method="xgradcam", layer="3").raw
    assert gradcam.abs().sum() > 0
    torch.testing.assert_close(hires, gradcam, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(xgrad, gradcam, rtol=1e-4, atol=1e-6)


def test_layercam_equals_hirescam_when_gradients_are_non_negative():
    model, images = head_model(positive_head=True), torch.rand(3, 3, 16, 16)
    layer = seethrough.attribute(model, images, [0, 2, 4], method="layercam", layer="1").raw
    hires = seethrough.attribute(model, images, [0, 2, 4], method="hirescam", layer="1").raw
    assert hires.abs().sum() > 0
    torch.testing.assert_close(layer, hires)
    # ... but not in general: a signed head gives negative gradients that LayerCAM drops
    signed = head_model()
    assert not torch.allclose(
        seethrough.attribute(signed, images, 0, method="layercam", layer="1").raw,
        seethrough.attribute(signed, images, 0, method="hirescam", layer="1").raw)


def ablation_by_the_paper(model, images, targets, layer):
    """Desai & Ramaswamy 2020, eq. (2)-(3), one image and one zeroed channel at a time."""
    module = dict(model.named_modules())[layer]
    maps = []
    with torch.no_grad():
        for x, c in zip(images, targets):
            kept = {}

            def keep(m, i, o, kept=kept):
                kept["a"] = o.clone()  # returns None: the net goes on with ``o`` (in-place ReLU)
            handle = module.register_forward_hook(keep)
            y = model(x[None])[0, c]
            handle.remove()
            acts = kept["a"][0]
            weights = []
            for k in range(len(acts)):
                def zero(m, i, o, k=k):
                    o = o.clone()
                    o[:, k] = 0
                    return o
                handle = module.register_forward_hook(zero)
                weights.append((y - model(x[None])[0, c]) / y)
                handle.remove()
            maps.append(F.relu(torch.einsum("k,khw->hw", torch.stack(weights), acts)))
    return torch.stack(maps)[:, None]


def test_ablationcam_is_the_papers_formula():
    model, images = head_model(inplace=True), torch.rand(2, 3, 16, 16)
    ours = seethrough.attribute(model, images, [1, 3], method="ablationcam", layer="2",
                                batch_size=5)
    assert ours.options["engine"] == "tail"
    torch.testing.assert_close(ours.raw, ablation_by_the_paper(model, images, [1, 3], "2"),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("arch, layer", [
    ("resnet18", "layer4"),
    ("resnet18", "layer4.0.conv2"),      # the residual's identity comes from before the cut
    ("resnet18", "layer3.1.bn1"),        # in-place ReLU right after the cut
    ("mobilenet_v2", "features.18"),
    ("mobilenet_v2", "features.5.conv.1"),  # inside an inverted residual block
])
def test_ablationcam_tail_equals_the_whole_network_rerun(arch, layer, images, unchanged):
    model = model_for(arch)
    with unchanged(model):
        fast = seethrough.attribute(model, images, TARGETS, method="ablationcam", layer=layer,
                                    batch_size=48)
        slow = seethrough.attribute(model, images, TARGETS, method="ablationcam", layer=layer,
                                    batch_size=48, engine="hook")
    assert fast.options["engine"] == "tail" and slow.options["engine"] == "hook"
    assert fast.raw.abs().sum() > 0
    assert torch.equal(fast.raw, slow.raw)  # the same operations on the same values


def test_ablationcam_batched_equals_one_channel_at_a_time(images):
    model = head_model()
    x = torch.rand(3, 3, 16, 16)
    one = seethrough.attribute(model, x, [0, 1, 2], method="ablationcam", layer="2", batch_size=1)
    many = seethrough.attribute(model, x, [0, 1, 2], method="ablationcam", layer="2",
                                batch_size=64)
    torch.testing.assert_close(one.raw, many.raw, rtol=1e-5, atol=1e-6)


class Branchy(nn.Module):
    """Python control flow on a tensor's value: torch.fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.body = head_model()

    def forward(self, x):
        return self.body(x) if x.mean() > -1 else -self.body(x)


def test_ablationcam_falls_back_to_the_hook_where_the_model_does_not_trace(unchanged):
    model, images = Branchy().eval(), torch.rand(2, 3, 16, 16)
    with unchanged(model):
        result = seethrough.attribute(model, images, [1, 2], method="ablationcam", layer="body.2")
    assert result.options["engine"] == "hook"
    assert "torch.fx" in result.options["engine_note"]
    reference = seethrough.attribute(model.body, images, [1, 2], method="ablationcam", layer="2")
    torch.testing.assert_close(result.raw, reference.raw)
    with pytest.raises(InputError, match="engine='hook'"):
        seethrough.attribute(model, images, 0, method="ablationcam", layer="body.2",
                             engine="tail")
    with pytest.raises(InputError, match="engine must be one of"):
        seethrough.attribute(model, images, 0, method="ablationcam", engine="fast")


@pytest.mark.parametrize("method", VARIANTS)
def test_inplace_relu_gives_the_same_map(method, unchanged):
    images = torch.rand(2, 3, 16, 16)
    plain, inplace = head_model(), head_model(inplace=True)
    for layer in ("0", "2"):  # each followed by an in-place ReLU in ``inplace``
        with unchanged(inplace):
            got = seethrough.attribute(inplace, images, [0, 3], method=method, layer=layer).raw
        expected = seethrough.attribute(plain, images, [0, 3], method=method, layer=layer).raw
        torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("method", VARIANTS)
def test_model_unchanged_on_resnet(method, images, unchanged):
    model = model_for("resnet18")
    with unchanged(model):
        result = seethrough.attribute(model, images, TARGETS, method=method, layer="layer4.1")
    assert result.maps.shape == (2, 1, 64, 64) and torch.isfinite(result.maps).all()
    assert result.options["layer"] == "layer4.1"


@pytest.mark.parametrize("method", VARIANTS)
def test_batched_equals_one_at_a_time(method):
    model, x = model_for("resnet18"), torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    together = seethrough.attribute(model, x, [1, 4, 7], method=method, layer="layer3")
    for i, label in enumerate([1, 4, 7]):
        alone = seethrough.attribute(model, x[i:i + 1], label, method=method, layer="layer3")
        # Ablation-CAM's weights are differences of nearly equal scores: they amplify the float
        # rounding by which a conv differs between batch sizes
        scale = 1e-3 * float(alone.maps.abs().max()) if method == "ablationcam" else 1e-5
        torch.testing.assert_close(together.maps[i:i + 1], alone.maps, rtol=1e-4, atol=scale)


def test_papers_defaults_are_pinned():
    import inspect

    from seethrough.attribution import METHODS

    def defaults(name):
        parameters = inspect.signature(inspect.unwrap(METHODS[name])).parameters
        return {k: p.default for k, p in parameters.items() if p.default is not p.empty}

    assert defaults("hirescam")["relu"] is True
    assert defaults("xgradcam")["eps"] == 1e-7
    assert defaults("eigencam")["center"] is False  # the paper; pytorch-grad-cam centres
    assert defaults("ablationcam")["engine"] == "auto"

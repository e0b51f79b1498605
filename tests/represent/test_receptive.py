"""Receptive fields composed from the graph equal the gradient support of a linearized copy, on
real architectures and on hand-made ones (dilation, "same" padding, residuals, concatenation,
gating); the measured fallback agrees; the model is left as it was."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from seethrough.errors import InputError
from seethrough.models import load_model
from seethrough.represent.receptive import FieldMap, field_map, receptive_field

pytestmark = pytest.mark.filterwarnings("ignore:Using padding=.same. with even kernel")
ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.Hardsigmoid, nn.SiLU, nn.GELU, nn.Sigmoid)


class _Stop(Exception):
    pass


def linearized(model: nn.Module) -> nn.Module:
    """The test's own truth: activations out, max pooling averaged, every weight |w| + 1e-3."""
    twin = copy.deepcopy(model).eval().double()
    for module in list(twin.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, ACTIVATIONS):
                setattr(module, name, nn.Identity())
            elif isinstance(child, nn.MaxPool2d):
                setattr(module, name, nn.AvgPool2d(child.kernel_size, child.stride, child.padding,
                                                   child.ceil_mode))
    with torch.no_grad():
        for parameter in twin.parameters():
            parameter.copy_(parameter.abs() + 1e-3)
        for module in twin.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.zero_()
                module.running_var.fill_(1.0)
    return twin


def support_box(twin: nn.Module, layer: str, position, input_size) -> tuple[int, int, int, int]:
    """The box of the pixels with a nonzero gradient of ``layer[:, :, row, col].sum()``."""
    images = torch.ones(1, *input_size, dtype=torch.float64, requires_grad=True)
    outputs = []

    def stop(module, inputs, output):
        outputs.append(output)
        raise _Stop

    handle = dict(twin.named_modules())[layer].register_forward_hook(stop)
    try:
        twin(images)
    except _Stop:
        pass
    finally:
        handle.remove()
    (grad,) = torch.autograd.grad(outputs[0][0, :, position[0], position[1]].sum(), images)
    support = grad[0].abs().sum(0) > 0
    rows, cols = support.any(1).nonzero(), support.any(0).nonzero()
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def corners(output_size) -> list[tuple[int, int]]:
    h, w = output_size
    return [(0, 0), (0, w // 2), (h // 2, w // 2), (h - 1, w - 1)]


class Branchy(nn.Module):
    """Dilation, a residual sum, even-kernel "same" padding, two concatenated branches."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 5, stride=2, padding=2)
        self.dilated = nn.Conv2d(8, 8, 3, padding=2, dilation=2)
        self.same = nn.Conv2d(8, 8, 4, padding="same")
        self.left = nn.Conv2d(8, 4, 1)
        self.right = nn.Conv2d(8, 4, 5, padding=2)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.head = nn.Conv2d(8, 8, 3, stride=2)

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = self.same(x + self.dilated(x))
        x = torch.cat([self.left(x), self.right(x)], dim=1)
        return self.head(self.pool(x))


class Untraceable(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(4, 4, 3)

    def forward(self, x):
        x = self.pool(torch.relu(self.conv1(x)))
        if x.mean() > 0:
            x = x * 2
        return self.conv2(x)


class Gated(nn.Module):
    """Squeeze-and-excitation: the image-wide mean scales every channel."""

    def __init__(self, squeeze: str):
        super().__init__()
        self.squeeze = squeeze
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(8, 2, 1)
        self.expand = nn.Conv2d(2, 8, 1)
        self.head = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        x = torch.relu(self.conv(x))
        squeezed = self.pool(x) if self.squeeze == "pool" else x.mean((2, 3), keepdim=True)
        scale = torch.sigmoid(self.expand(torch.relu(self.reduce(squeezed))))
        return self.head(x * scale)


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {
        "conceptnet": load_model("conceptnet"),
        "resnet18": torchvision.models.resnet18(weights=None).eval(),
        "mobilenet_v2": torchvision.models.mobilenet_v2(weights=None).eval(),
        "branchy": Branchy().eval(),
    }


REAL = [("conceptnet", f"features.block{i}", 64) for i in range(1, 6)] + [
    ("resnet18", layer, 128) for layer in ("maxpool", "layer1.0", "layer2.0", "layer3.1")
] + [("mobilenet_v2", layer, 96) for layer in ("features.2", "features.6", "features.10")] + [
    ("branchy", layer, 64) for layer in ("dilated", "same", "pool", "head")]


@pytest.mark.parametrize("name, layer, size", REAL)
def test_composed_fields_are_the_gradient_support(models, name, layer, size):
    model = models[name]
    fields = field_map(model, layer, (3, size, size), method="fx")
    twin = linearized(model)
    for position in corners(fields.output_size):
        assert fields.box(position) == support_box(twin, layer, position, (3, size, size)), position


@pytest.mark.parametrize("name, layer, size", [("resnet18", "layer2.0", 128),
                                               ("mobilenet_v2", "features.6", 96),
                                               ("branchy", "pool", 64)])
def test_measured_fields_equal_the_composed_ones(models, name, layer, size):
    composed = field_map(models[name], layer, (3, size, size), method="fx")
    measured = field_map(models[name], layer, (3, size, size), method="gradient")
    assert measured == composed
    h, w = composed.output_size
    assert all(measured.box((i, j)) == composed.box((i, j)) for i in range(h) for j in range(w))


def test_hand_made_geometry_by_hand(models):
    fields = {layer: field_map(models["branchy"], layer, (3, 64, 64), method="fx")
              for layer in ("same", "pool", "head")}
    # stem (5, s2, p2), dilated residual: hull (-6, 13); "same" 4x4 pads 1 before, 2 after
    assert (fields["same"].start, fields["same"].size, fields["same"].step) == ((-8,) * 2,
                                                                                (19,) * 2, (2,) * 2)
    # the 5x5 branch of the concatenation is the wider one; then the pooling
    assert (fields["pool"].start, fields["pool"].size, fields["pool"].step) == ((-14,) * 2,
                                                                                (31,) * 2, (4,) * 2)
    head = fields["head"]
    assert (head.start, head.size, head.step, head.output_size) == ((-14,) * 2, (39,) * 2,
                                                                    (8,) * 2, (7, 7))
    assert head.centre((1, 2)) == (-14 + 8 + 19, -14 + 16 + 19)
    assert head.box((3, 6)) == (10, 34, 49, 64) and not head.whole


def test_untraceable_model_is_measured_exactly():
    model = Untraceable().eval()
    with pytest.raises(InputError, match="method='gradient'"):
        field_map(model, "conv2", (3, 32, 32), method="fx")
    fields = field_map(model, "conv2", (3, 32, 32))
    assert (fields.start, fields.size, fields.step, fields.output_size) == ((-1, -1), (8, 8),
                                                                           (2, 2), (14, 14))
    assert fields.box((0, 0)) == (0, 0, 7, 7)
    assert fields.box((6, 13)) == (11, 25, 19, 32)
    assert receptive_field(model, "conv2", (13, 13), (3, 32, 32)) == (25, 25, 32, 32)


@pytest.mark.parametrize("squeeze", ["pool", "mean"])
@pytest.mark.parametrize("method", ["fx", "gradient"])
def test_gating_by_the_image_mean_sees_the_whole_image(squeeze, method):
    model = Gated(squeeze).eval()
    local = field_map(model, "conv", (3, 32, 32), method=method)
    gated = field_map(model, "head", (3, 32, 32), method=method)
    assert not local.whole and local.box((0, 0)) == (0, 0, 2, 2)
    assert gated.whole and gated.box((0, 0)) == gated.box((15, 15)) == (0, 0, 32, 32)
    if method == "fx":  # the local geometry stays, for anchoring the positions
        assert (gated.start, gated.size, gated.step) == ((-3, -3), (7, 7), (2, 2))


def test_gated_real_model_and_global_pooling(models):
    model = torchvision.models.mobilenet_v3_small(weights=None).eval()
    for method in ("fx", "gradient"):
        assert field_map(model, "features.1", (3, 64, 64), method=method).whole
    pooled = field_map(models["conceptnet"], "pool")
    assert pooled.whole and pooled.output_size == (1, 1) and pooled.box((0, 0)) == (0, 0, 64, 64)


def test_border_pixels_that_no_position_sees():
    """A 2x2 stride-2 convolution on 65 pixels drops the last one; the padded 3x3 after it
    must not claim it."""
    model = nn.Sequential(nn.Conv2d(3, 4, 2, stride=2), nn.Conv2d(4, 4, 3, padding=1)).eval()
    truth = support_box(linearized(model), "1", (31, 31), (3, 65, 65))
    for method in ("fx", "gradient"):
        fields = field_map(model, "1", (3, 65, 65), method=method)
        assert fields.seen == ((0, 64), (0, 64))
        assert fields.box((31, 31)) == truth == (60, 60, 64, 64)


def test_model_is_left_as_it_was(unchanged):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).train()
    model.conv1.weight.requires_grad_(False)
    model.layer1.register_forward_hook(lambda module, inputs, output: None)
    with unchanged(model):
        for method in ("fx", "gradient"):
            field_map(model, "layer2.0", (3, 64, 64), method=method)
    assert model.training and model.layer1[0].bn1.training


def test_bad_arguments_are_one_line_errors(models):
    model = models["conceptnet"]
    with pytest.raises(InputError, match="no spatial output"):
        field_map(model, "fc")
    fields = field_map(model, "features.block3")
    assert fields.output_size == (8, 8) and isinstance(fields, FieldMap)
    for position in [(8, 0), (0, -1), (0,), "a", (0.5, 1)]:
        with pytest.raises(InputError, match="0 <= row < 8"):
            fields.box(position)
    with pytest.raises(InputError, match="method must be"):
        field_map(model, "features.block3", method="exact")
    with pytest.raises(InputError, match="input_size"):
        field_map(model, "features.block3", (64, 64))


class ChannelsLast(nn.Module):
    """A ConvNeXt-like block: channels last, LayerNorm and Linear over the channels."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.LayerNorm(8)
        self.mix = nn.Linear(8, 8)
        self.head = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        x = self.mix(self.norm(self.conv(x).permute(0, 2, 3, 1)))
        return self.head(x.permute(0, 3, 1, 2))


def test_normalization_statistics_are_measured_structurally():
    """LayerNorm over channels keeps the field; GroupNorm's statistics span the image."""
    fields = field_map(ChannelsLast().eval(), "head", (3, 32, 32))
    assert (fields.start, fields.size, fields.step) == ((-2, -2), (5, 5), (1, 1))
    assert fields.box((16, 0)) == (14, 0, 19, 3)
    grouped = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.GroupNorm(2, 8), nn.Conv2d(8, 8, 1))
    assert field_map(grouped.eval(), "2", (3, 32, 32)).whole

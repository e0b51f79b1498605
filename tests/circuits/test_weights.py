"""Weights between units: the kernel for adjacent convolutions, expanded weights further apart."""
from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from torch import nn

from seethrough.circuits.weights import circuit_weights, folded_batchnorm
from seethrough.errors import InputError


def _compose(outer: torch.Tensor, inner: torch.Tensor, stride: int = 1) -> torch.Tensor:
    """The kernel of ``conv(outer) after conv(inner, stride)`` written out by hand: output unit
    ``o`` reads inner position ``d``, which reads input position ``stride * d + e``."""
    out_c, _, kh, kw = outer.shape
    _, in_c, ih, iw = inner.shape
    composed = torch.zeros(out_c, in_c, stride * (kh - 1) + ih, stride * (kw - 1) + iw,
                           dtype=torch.float64)
    for dy in range(kh):
        for dx in range(kw):
            for ey in range(ih):
                for ex in range(iw):
                    composed[:, :, stride * dy + ey, stride * dx + ex] += (
                        outer[:, :, dy, dx].double() @ inner[:, :, ey, ex].double())
    return composed


def test_adjacent_convolutions_give_the_kernel(unchanged):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True),
                        nn.Conv2d(4, 6, 5, padding=2), nn.ReLU(inplace=True)).eval()
    with unchanged(net):
        weights = circuit_weights(net, "0", "2", input_size=(3, 16, 16))
    torch.testing.assert_close(weights, net[2].weight.detach())
    # a ReLU output as layer_a reads the same kernel
    torch.testing.assert_close(circuit_weights(net, "1", "2", input_size=(3, 16, 16)),
                               net[2].weight.detach())


def test_a_following_batchnorm_is_folded_in_unless_told_not_to():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 5, 3), nn.BatchNorm2d(5),
                        nn.ReLU()).eval()
    bn = net[3]
    bn.running_var.uniform_(0.5, 2)
    bn.weight.data.uniform_(-2, 2)
    bn.running_mean.uniform_(-1, 1)
    assert folded_batchnorm(net, "2", (3, 16, 16)) == "3"
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    folded = circuit_weights(net, "0", "2", input_size=(3, 16, 16))
    torch.testing.assert_close(folded, (net[2].weight * scale.view(-1, 1, 1, 1)).detach())
    raw = circuit_weights(net, "0", "2", input_size=(3, 16, 16), fold_batchnorm=False)
    torch.testing.assert_close(raw, net[2].weight.detach())


@pytest.mark.parametrize("stride", [1, 2])
def test_two_stacked_convolutions_equal_their_kernels_composed_by_hand(stride):
    torch.manual_seed(stride)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 5, 3, stride=stride),
                        nn.ReLU(), nn.Conv2d(5, 6, 3, padding=1)).eval()
    weights = circuit_weights(net, "1", "4", input_size=(3, 32, 32))
    expected = _compose(net[4].weight.detach(), net[2].weight.detach(), stride)
    assert weights.shape == (6, 4, 2 * stride + 3, 2 * stride + 3)
    torch.testing.assert_close(weights.double(), expected, atol=1e-5, rtol=1e-5)


def test_max_pooling_counts_as_its_average():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 5, 3)).eval()
    average = torch.full((4, 4, 2, 2), 0.25).mul(torch.eye(4).view(4, 4, 1, 1))
    expected = _compose(net[3].weight.detach(), average, stride=2)
    torch.testing.assert_close(circuit_weights(net, "1", "3", input_size=(3, 32, 32)).double(),
                               expected, atol=1e-6, rtol=1e-6)


def test_the_field_is_kept_whole_at_the_borders_and_at_a_zero_rim():
    """A probe too small for the field is enlarged (zero padding never cuts weights off), and
    zero weights at a kernel's rim stay in the crop (it is the field, not the non-zero part)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 5, padding=2), nn.ReLU(), nn.Conv2d(4, 2, 7, padding=3))
    with torch.no_grad():
        net[2].weight[:, :, [0, -1]] = 0
        net[2].weight[:, :, :, [0, -1]] = 0
    weights = circuit_weights(net, "1", "2", input_size=(3, 4, 4))
    torch.testing.assert_close(weights, net[2].weight.detach())
    deeper = circuit_weights(net, "0", "2", input_size=(3, 4, 4))
    assert deeper.shape == (2, 4, 7, 7)


def _linear_copy(model: nn.Module) -> nn.Module:
    """The model with every activation module an identity and max pooling averaged: an
    independent way to the linear path (module swaps, one backward per unit)."""
    twin = copy.deepcopy(model).eval()
    for name, module in list(twin.named_modules()):
        parent = twin.get_submodule(name.rpartition(".")[0]) if "." in name else twin
        leaf = name.rpartition(".")[2]
        if isinstance(module, (nn.ReLU, nn.ReLU6)):
            setattr(parent, leaf, nn.Identity())
        elif isinstance(module, nn.MaxPool2d):
            setattr(parent, leaf, nn.AvgPool2d(module.kernel_size, module.stride, module.padding))
    return twin


@pytest.mark.parametrize("arch,layer_a,layer_b,units", [
    ("resnet18", "layer1.0", "layer2.0.conv2", [0, 7, 100]),
    ("mobilenet_v2", "features.2", "features.4.conv.0.0", [0, 50]),
])
def test_expanded_weights_on_other_architectures(arch, layer_a, layer_b, units, unchanged):
    """Residual sums (resnet18) and depthwise convolutions with ReLU6 (MobileNetV2) at 64 px,
    random weights: equal to one backward per unit through a copy whose activations are
    identity modules."""
    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(num_classes=4).eval()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_var.uniform_(0.5, 2)
    with unchanged(model):
        weights = circuit_weights(model, layer_a, layer_b, input_size=(3, 64, 64),
                                  fold_batchnorm=False)
    twin = _linear_copy(model)
    images = torch.zeros(1, 3, 64, 64)
    for unit in units:
        start = {}

        def replace(_module, _inputs, output, start=start):
            start["value"] = torch.zeros_like(output, requires_grad=True)
            return start["value"]

        handle = twin.get_submodule(layer_a).register_forward_hook(replace)
        ends = {}
        handle_b = twin.get_submodule(layer_b).register_forward_hook(
            lambda _m, _i, o, ends=ends: ends.__setitem__("value", o))
        twin(images)
        handle.remove()
        handle_b.remove()
        out = ends["value"]
        out[0, unit, out.shape[2] // 2, out.shape[3] // 2].backward()
        grad = start["value"].grad[0]
        support = grad.abs().sum(0) > 0
        ys, xs = support.any(1).nonzero(), support.any(0).nonzero()
        cropped = grad[:, ys[0]:ys[-1] + 1, xs[0]:xs[-1] + 1]
        h, w = cropped.shape[-2:]
        assert h <= weights.shape[-2] and w <= weights.shape[-1]
        inside = weights[unit].abs().sum(0) > 0
        assert inside.sum() == support.sum()
        torch.testing.assert_close(weights[unit][:, inside], grad[:, support], atol=1e-5,
                                   rtol=1e-4)


def test_a_linear_layer_after_global_pooling_sees_its_weights_spread_evenly():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=3).eval()
    weights = circuit_weights(model, "layer4", "fc", input_size=(3, 64, 64))
    assert weights.shape == (3, 512, 2, 2)
    torch.testing.assert_close(weights.sum((2, 3)), model.fc.weight.detach(), atol=1e-6,
                               rtol=1e-5)
    torch.testing.assert_close(weights[..., 0, 0], weights[..., 1, 1])


def test_bad_layers_say_what_to_do():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 5, 3))
    with pytest.raises(InputError, match="two different layers"):
        circuit_weights(net, "0", "0", input_size=(3, 8, 8))
    with pytest.raises(InputError, match="does not depend"):
        circuit_weights(net, "2", "0", input_size=(3, 8, 8))


def test_chunks_give_the_same_weights():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 9, 3), nn.ReLU(),
                        nn.Conv2d(9, 7, 3))
    whole = circuit_weights(net, "0", "4", input_size=(3, 16, 16))
    torch.testing.assert_close(circuit_weights(net, "0", "4", input_size=(3, 16, 16), chunk=3),
                               whole)

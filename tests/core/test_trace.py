"""Trace guarantees: hooks removed and model restored (also on error), in-place ReLU, residuals,
modules called twice, unknown names, edits."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from seethrough.edits import ablate, replace, scale
from seethrough.errors import LayerNotFoundError
from seethrough.trace import Trace, capture
from tests.conftest import ARCHITECTURES, LAST_CONV


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {name: make().eval() for name, make in ARCHITECTURES.items()}


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_trace_restores_model_normally_and_on_error(models, arch, unchanged):
    model = models[arch]
    model.train()  # a mode that is not the default, to see it restored
    layer = LAST_CONV[arch]
    x = torch.rand(2, 3, 64, 64)
    with unchanged(model):
        with Trace(model, layer, retain_grad=True) as trace:
            model.eval()
            for p in model.parameters():
                p.requires_grad_(False)
            out = model(x.requires_grad_())
            out[:, 1].sum().backward()
        assert trace[layer].grad.shape == trace[layer].output.shape
    with unchanged(model), pytest.raises(RuntimeError, match="boom"):
        first_conv = next(n for n, m in model.named_modules() if isinstance(m, nn.Conv2d))
        with Trace(model, [layer, first_conv]):
            model.eval()
            model(x)
            raise RuntimeError("boom")
    model.eval()


def test_trace_on_bundled_model(unchanged):
    from seethrough.models import load_model

    model = load_model("conceptnet")
    size = model.input_size
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    with unchanged(model), Trace(model, names, retain_grad=True) as trace:
        model(torch.rand(3, *size))[:, 0].sum().backward()
    assert all(trace[n].grad is not None for n in names)


def test_gradient_is_right_with_inplace_relu_after_layer(models):
    model = models["resnet18"]
    reference = copy.deepcopy(model)
    for module in reference.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = False
    x = torch.rand(2, 3, 64, 64)
    kept = {}

    def keep(module, inputs, output):
        output.retain_grad()
        kept["out"] = output

    handle = reference.layer1[0].bn1.register_forward_hook(keep)
    reference(x)[:, 3].sum().backward()
    handle.remove()
    with Trace(model, "layer1.0.bn1", retain_grad=True) as trace:
        model(x)[:, 3].sum().backward()
    torch.testing.assert_close(trace["layer1.0.bn1"].grad, kept["out"].grad)


def test_recorded_output_is_not_changed_by_later_inplace_relu(models):
    model = models["resnet18"]
    with Trace(model, "bn1") as trace:
        model(torch.rand(1, 3, 64, 64))
    assert (trace["bn1"].output < 0).any(), "bn1's output was overwritten by the in-place ReLU"


def test_module_called_twice_records_every_call_in_order(models):
    model = models["resnet18"]
    block = model.layer1[0]
    seen = []
    handles = [block.bn1.register_forward_hook(lambda m, i, o: seen.append(o.clamp(min=0))),
               block.bn2.register_forward_hook(lambda m, i, o: seen.append(o))]
    with Trace(model, "layer1.0.relu") as trace:
        model(torch.rand(1, 3, 64, 64))
    for handle in handles:
        handle.remove()
    outputs = trace["layer1.0.relu"].outputs
    assert len(outputs) == 2
    torch.testing.assert_close(outputs[0], seen[0])  # first call: relu(bn1)
    assert outputs[1].shape == seen[1].shape and (outputs[1] >= 0).all()
    torch.testing.assert_close(trace["layer1.0.relu"].output, outputs[1])


def test_residual_block_output_recorded(models):
    model = models["resnet18"]
    with Trace(model, ["layer1.0", "layer1.1"]) as trace:
        model(torch.rand(1, 3, 64, 64))
    assert trace["layer1.0"].output.shape == trace["layer1.1"].output.shape


def test_unknown_layer_lists_closest_names(models):
    with pytest.raises(LayerNotFoundError) as error:
        Trace(models["resnet18"], "layer4.1.conv3")
    message = str(error.value)
    assert "layer4.1.conv1" in message and "layer4.1.conv2" in message
    assert not any(m._forward_hooks for m in models["resnet18"].modules())


def test_suffix_names_resolve_inside_wrapped_model():
    from seethrough.models import load_model

    model = load_model("torchvision:resnet18", num_classes=4)
    out = capture(model, torch.rand(1, 3, 64, 64), "layer2")
    assert out["layer2"].output.shape == (1, 128, 8, 8)
    assert out["net.layer2"] is out["layer2"]


def test_edits_ablate_scale_replace(models):
    model = models["vgg11_bn"]
    x = torch.rand(1, 3, 64, 64)
    layer = "features.2"
    with Trace(model, layer, edit=ablate([0, 3])) as trace:
        model(x)
    output = trace[layer].output
    assert output[:, [0, 3]].abs().sum() == 0 and output[:, 1].abs().sum() > 0
    plain = capture(model, x, layer)[layer].output
    with Trace(model, layer, edit=scale([1], 3.0)) as trace:
        model(x)
    torch.testing.assert_close(trace[layer].output[:, 1], 3 * plain[:, 1])
    torch.testing.assert_close(trace[layer].output[:, 2], plain[:, 2])
    with Trace(model, layer, edit={layer: replace([2], 7.0)}) as trace:
        edited_logits = model(x)
    assert (trace[layer].output[:, 2] == 7).all()
    assert not torch.allclose(edited_logits, model(x))


def test_edit_with_function_changes_downstream():
    net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(inplace=True), nn.Linear(4, 1))
    x = torch.randn(3, 4)
    with Trace(net, "0", edit=lambda a: torch.zeros_like(a)):
        out = net(x)
    torch.testing.assert_close(out, net[2].bias.expand(3, 1))


def test_stop_skips_the_rest_of_the_network():
    calls = []
    tail = nn.Linear(4, 4)
    tail.register_forward_hook(lambda *a: calls.append(1))
    net = nn.Sequential(nn.Linear(4, 4), tail)
    trace = capture(net, torch.randn(2, 4), "0")
    assert trace["0"].output.shape == (2, 4) and calls == []
    tail._forward_hooks.clear()


def test_hook_errors_do_not_leak_hooks():
    net = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
    with pytest.raises(Exception), Trace(net, ["0", "1"], edit={"0": lambda a: "not a tensor"}):
        net(torch.randn(1, 4))
    assert not net[0]._forward_hooks and not net[1]._forward_hooks

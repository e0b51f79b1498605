
import pytest
import torch
from torch import nn

from seethrough.errors import InputError
from seethrough.featureviz import objectives as obj
from seethrough.featureviz.render import Probe, Renderer, redirected_rule, visualize
from seethrough.relu_rules import relu_backward
from seethrough.trace import capture
from tests.conftest import ARCHITECTURES, LAST_CONV, small_vit


def test_deterministic_given_a_seed(net):
    run = lambda seed: visualize(net, obj.channel("2", [0, 1]), steps=5, size=24, seed=seed)
    first, again, other = run(0), run(0), run(1)
    assert torch.equal(first.images, again.images) and first.history == again.history
    assert not torch.equal(first.images, other.images)


def test_model_unchanged_and_no_parameter_gradients(net, unchanged):
    net[0].weight.requires_grad_(True)
    net.train()
    with unchanged(net):
        visualize(net, obj.channel("2", 1) + obj.class_logit(0), steps=3, size=16)
    assert all(p.grad is None for p in net.parameters())
    assert net.training


def test_model_unchanged_on_error(net, unchanged):
    with unchanged(net), pytest.raises(InputError, match="outside"):
        visualize(net, obj.channel("2", 99), steps=3, size=16)
    with unchanged(net), pytest.raises(InputError):
        visualize(net, obj.channel("no.such.layer", 0), steps=3, size=16)


class Recorder(nn.Module):
    """Counts its calls: shows whether the forward pass went past the traced layer."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return x


def test_forward_stops_early_unless_the_output_is_needed(net):
    recorder = Recorder()
    model = nn.Sequential(net[:3], recorder, net[3:])
    visualize(model, obj.channel("0.2", 0), steps=2, size=16)
    assert recorder.calls == 0
    visualize(model, obj.channel("0.2", 0) + obj.class_logit(1), steps=2, size=16)
    assert recorder.calls == 2


def test_step_api_matches_visualize(net):
    objective = obj.channel("2", [2, 3])
    with Renderer(net, objective, size=20, seed=4) as renderer:
        for _ in range(4):
            renderer.step()
    result = visualize(net, objective, size=20, seed=4, steps=4)
    assert torch.equal(renderer.images(), result.images)


def test_probe_outside_a_block_is_a_clear_error(net):
    with pytest.raises(InputError, match="context manager"):
        Probe(net, obj.channel("2", 0))(torch.rand(1, 3, 8, 8))


def test_redirected_relu_revives_a_dead_unit():
    conv = nn.Conv2d(3, 1, 1)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        conv.bias.fill_(-10.0)  # dead for every image in [0, 1]
    model = nn.Sequential(conv, nn.ReLU(inplace=True), nn.Conv2d(1, 1, 1))
    x = torch.rand(2, 3, 8, 8, requires_grad=True)
    (-model(x).sum()).backward()
    assert x.grad.abs().sum() == 0
    x.grad = None
    with relu_backward(redirected_rule):
        (-model(x).sum() * model[2].weight.sign().item()).backward()
    assert x.grad.abs().sum() > 0


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_architectures(arch, unchanged):
    model = ARCHITECTURES[arch]().eval()
    with unchanged(model):
        result = visualize(model, obj.channel(LAST_CONV[arch], [0, 1]), steps=3, size=40,
                           transforms="jitter", redirect_relu_steps=2)
    assert result.images.shape == (2, 3, 40, 40)
    assert result.history[-1][0] > result.history[0][0]


def test_vision_transformer_tokens(unchanged):
    model = small_vit().eval()
    with unchanged(model):
        # 8 steps: with Lucid's exact rotation list (26 angles) 4 noisy steps were not enough
        result = visualize(model, obj.channel("encoder.layers.encoder_layer_1", 3), steps=8, size=64,
                           model_size=64)
    assert result.history[-1][0] > result.history[0][0]


def test_rendered_channel_beats_noise_on_a_random_model():
    torch.manual_seed(0)
    import torchvision

    model = torchvision.models.resnet18(num_classes=10).eval()
    channels = [0, 5, 9]
    # random filters are phase-specific, so no robustness transforms here (they are for trained nets)
    result = visualize(model, obj.channel("layer2", channels), steps=30, size=32, lr=0.1,
                       transforms="none")
    noise = torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    on_noise = capture(model, noise, "layer2")["layer2"].output[:, channels].mean((2, 3))
    rendered = capture(model, result.images, "layer2")["layer2"].output
    rendered = rendered[torch.arange(3), channels].mean((1, 2))
    # a stated factor: at least twice the best of 16 noise images (activations are positive here)
    assert (rendered > 2 * on_noise.max(0).values.clamp_min(1e-3)).all(), (rendered, on_noise.max(0))


def test_conceptnet_channel_beats_every_validation_image():
    from seethrough.data import ConceptWorld
    from seethrough.featureviz.figures import most_active_channels
    from seethrough.featureviz.synthesis import stage_layers
    from seethrough.models import load_model

    model = load_model("conceptnet")
    layer = stage_layers(model)[-2]
    world = ConceptWorld("val", length=64, size=64)
    images = torch.stack([world[i]["image"] for i in range(len(world))])
    channels = most_active_channels(model, images, layer, 4)  # live units, not dead ones
    result = visualize(model, obj.channel(layer, channels), steps=96, size=64)
    on_data = capture(model, images, layer)[layer].output[:, channels].mean((2, 3))
    rendered = capture(model, result.images, layer)[layer].output
    rendered = rendered[torch.arange(4), channels].mean((1, 2))
    assert (rendered > on_data.max(0).values).all(), (rendered, on_data.max(0).values)

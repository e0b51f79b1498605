"""Load a model by name, path or object; every loaded model takes images in [0, 1], in eval mode.

Names (``list_models()`` lists them all):
    ``conceptnet``, ``conceptnet_cheater``   bundled models trained on ConceptWorld
    ``conceptnet_shuffled``                   the same net trained on shuffled labels (a
                                              memorizer: 99.8 % train, chance on new images)
    ``conceptnet_seed1``, ``conceptnet_seed2``  ConceptNet trained again from seeds 1 and 2
                                              (universality: do they learn the same?)
    ``mobilenet_v2``, ``efficientnet_lite0``  real ImageNet models, offline
    ``torchvision:ARCH``                      any torchvision classifier (random weights, or
                                              ``weights=PATH`` to a local state dict)
    your own                                  ``register_model(name, loader)``

Each loaded model is an ``ImageModel``: its first module (``normalize``) normalizes, or passes
the images through untouched for a module loaded without ``normalize=``; it carries
``input_size``, ``class_names`` and a ``card`` (where it came from, its normalization, how well
it does).

Example:
    >>> model = load_model("torchvision:resnet18", num_classes=10)
    >>> model.input_size, type(model.normalize).__name__, model.card["normalize"], model.training
    ((3, 224, 224), 'Normalize', 'imagenet', False)
    >>> from torch import nn
    >>> load_model(nn.Conv2d(3, 4, 3)).card["normalize"]
    'none'
"""
from __future__ import annotations

import difflib
import functools
from collections.abc import Callable
from pathlib import Path

from torch import nn

from seethrough.core.registry import Registry
from seethrough.errors import InputError, ModelNotFoundError, WeightsError
from seethrough.models.normalize import (
    NoNormalization,
    Normalize,
    describe_normalization,
    resolve_normalization,
)
from seethrough.models.sources import is_source, module_from

BUNDLED = ("conceptnet", "conceptnet_cheater", "conceptnet_shuffled", "conceptnet_seed1",
           "conceptnet_seed2")
IMAGENET = ("mobilenet_v2", "efficientnet_lite0")
#: shipped models that are not classifiers: the ConceptWorld GAN's generator and segmenter
WORLD_TOOLS = ("conceptworld_gan", "conceptworld_segmenter")

Loader = Callable[[], nn.Module]


class _Default:
    """``normalize=`` not given: ``"imagenet"`` for ``torchvision:ARCH``, the model card's for
    bundled and already loaded models, none for a module of yours."""

    def __repr__(self) -> str:
        return "<default>"


DEFAULT = _Default()


class ImageModel(nn.Sequential):
    """A network with its normalization in front: ``normalize`` then ``net``.

    ``normalize`` is ``"imagenet"``, a ``(mean, std)`` pair, or ``None`` (a ``NoNormalization``
    identity: the network gets the images as they are). Layer names inside are ``net.<name>``;
    seethrough also accepts the bare ``<name>``.
    """

    def __init__(self, net: nn.Module, *, normalize=None, input_size=(3, 224, 224),
                 class_names=None, card=None):
        super().__init__()
        self.input_size = tuple(input_size)
        mean_std = resolve_normalization(normalize, channels=int(self.input_size[0]))
        self.add_module("normalize", NoNormalization() if mean_std is None else Normalize(*mean_std))
        self.add_module("net", net)
        self.class_names = list(class_names) if class_names is not None else None
        self.card = dict(card or {})
        self.card["normalize"] = describe_normalization(mean_std)


def torchvision_architectures() -> list[str]:
    import torchvision.models as tvm

    return sorted(tvm.list_models(module=tvm))


def _torchvision(arch: str, weights: str | Path | None, num_classes: int | None,
                 normalize) -> ImageModel:
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

        state = read_state_dict(weights)
        found = _classes_in(net, state)
        if num_classes is None and found is not None:  # a fine-tuned head: size it from the file
            num_classes = found
            net = tvm.get_model(arch, weights=None, **{**options, "num_classes": found})
        load_state(net, state, weights)
        card["source"] = str(weights)
    size = 299 if arch.startswith("inception") else 224
    classes = None
    if num_classes in (None, 1000):
        from seethrough.models.imagenet import imagenet_class_names

        classes = imagenet_class_names()
    return ImageModel(net, normalize="imagenet" if normalize is DEFAULT else normalize,
                      input_size=(3, size, size), class_names=classes, card=card)


def _classes_in(net: nn.Module, state: dict) -> int | None:
    """The output count of the net's last linear layer as the state dict has it, if it differs."""
    linears = [name for name, module in net.named_modules() if isinstance(module, nn.Linear)]
    weight = state.get(f"{linears[-1]}.weight") if linears else None
    if weight is None or weight.shape[0] == dict(net.named_modules())[linears[-1]].out_features:
        return None
    return int(weight.shape[0])


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


def _load_weights(model: nn.Module, weights) -> None:
    """Weights into a module; for an ``ImageModel``, into its ``net`` unless they are the whole's."""
    from seethrough.models.imagenet import read_state_dict

    state = read_state_dict(weights)
    if isinstance(model, ImageModel) and not any(key.startswith("net.") for key in state):
        model = model.net
    load_state(model, state, weights)


def _bundled(name: str) -> nn.Module:
    from seethrough.models.conceptnet import load_conceptnet

    model = load_conceptnet(name)
    model.card = dict(model.card)
    model.card.setdefault("normalize", describe_normalization((model.card["mean"], model.card["std"])))
    return model


def _imagenet(name: str) -> ImageModel:
    from seethrough.models import imagenet

    net, card = getattr(imagenet, f"load_{name}")()
    return ImageModel(net, normalize=(card["mean"], card["std"]), input_size=card["input_size"],
                      class_names=card["class_names"], card=card)


def _world_tool(name: str) -> nn.Module:
    if name == "conceptworld_gan":
        from seethrough.models.generator import load_generator

        return load_generator(name)
    from seethrough.models.segmenter import load_segmenter

    return load_segmenter(name)


#: name -> loader ``() -> nn.Module``: the bundled, ImageNet and ConceptWorld-tool models, then
#: ``register_model``'s
MODELS: Registry[Loader] = Registry("model", {
    **{name: functools.partial(_bundled, name) for name in BUNDLED},
    **{name: functools.partial(_imagenet, name) for name in IMAGENET},
    **{name: functools.partial(_world_tool, name) for name in WORLD_TOOLS},
})
_BUILTIN = frozenset(MODELS.names())


def register_model(name: str, loader: Loader | None = None):
    """Make ``load_model(name)`` call ``loader()``; a name that is taken raises ``InputError``.

    ``loader`` takes no arguments and returns an ``nn.Module``. A plain module is then loaded like
    any module passed to ``load_model`` (``normalize=``, ``input_size=``, ``class_names=`` and
    ``weights=`` of that call apply; no normalization unless asked); a module that is already
    loaded (an ``ImageModel``, or one with ``input_size``) keeps its own. Without ``loader``,
    a decorator.

    Example:
        >>> from torch import nn
        >>> register_model("tiny_conv", lambda: nn.Conv2d(3, 2, 3))       # doctest: +SKIP
        >>> load_model("tiny_conv", normalize="imagenet").card["name"]      # doctest: +SKIP
        'tiny_conv'
    """
    if loader is None:
        return lambda function: register_model(name, function)
    if isinstance(name, str) and name.startswith("torchvision:"):
        raise InputError(f"model names starting with 'torchvision:' are torchvision's; "
                         f"register {name!r} under another name")
    if not callable(loader):
        raise InputError(f"a model loader is a function () -> nn.Module, not {type(loader).__name__}")
    return MODELS.register(name, loader)


def list_models() -> list[str]:
    """Every name ``load_model`` takes: the bundled and ImageNet models, those registered with
    ``register_model``, then ``torchvision:ARCH`` (each group sorted)."""
    registered = [name for name in MODELS.names() if name not in _BUILTIN]
    return (sorted(_BUILTIN) + sorted(registered)
            + [f"torchvision:{arch}" for arch in torchvision_architectures()])


def _is_loaded(model: nn.Module) -> bool:
    return isinstance(model, ImageModel) or hasattr(model, "input_size")


def _from_module(model: nn.Module, *, weights, normalize, input_size, class_names,
                 name: str) -> nn.Module:
    if weights is not None:
        _load_weights(model, weights)
    if _is_loaded(model):
        if normalize is not DEFAULT:
            raise InputError(
                f"{name} is already loaded (it has input_size) and carries its own normalization: "
                "drop normalize=, or pass the bare network to load_model"
            )
        return model.eval()
    return ImageModel(model, normalize=None if normalize is DEFAULT else normalize,
                      input_size=input_size, class_names=class_names,
                      card={"name": name}).eval()


def load_model(
    model: str | nn.Module,
    *,
    weights: str | Path | None = None,
    num_classes: int | None = None,
    normalize=DEFAULT,
    input_size=(3, 224, 224),
    class_names=None,
) -> nn.Module:
    """Load a model ready for every seethrough method, in eval mode, taking [0, 1] images.

    The returned model is always in eval mode. A module of yours is wrapped, not copied: the
    ``ImageModel`` holds your module as ``net``, so it is put in eval mode too.

    Args:
        model: a name (``list_models()``), a file saved with ``torch.save(model)`` or
            TorchScript, ``package.module:function`` returning a model, or any ``nn.Module``.
        weights: a local state-dict file (.pth or .safetensors) for a ``torchvision:ARCH``, a
            registered model or a module.
        num_classes: size of the last layer for ``torchvision:ARCH``.
        normalize: what goes in front of the network. ``"imagenet"`` (ImageNet mean and std),
            ``(mean, std)`` (one number per channel) or ``None`` (nothing: the network gets the
            [0, 1] pixels as they are). Not given: ImageNet for ``torchvision:ARCH``, the model
            card's for the bundled and ImageNet models, and NONE for a module of yours (its card
            records ``"normalize": "none"``) — seethrough never guesses a normalization for
            your network. Bundled and already loaded models carry their own: passing it raises.
        input_size, class_names: for a module of yours (``(C, H, W)``; names of the outputs).

    Raises:
        ModelNotFoundError: an unknown name (the message lists the closest ones).
        InputError: a ``normalize`` that is not one of the above.
        WeightsError: weights that are missing, unreadable or do not fit.
    """
    if isinstance(model, nn.Module):
        return _from_module(model, weights=weights, normalize=normalize, input_size=input_size,
                            class_names=class_names, name=type(model).__name__)
    if not isinstance(model, str):
        raise ModelNotFoundError(f"a model is a name or an nn.Module, not {type(model).__name__}")
    if normalize is not DEFAULT:
        resolve_normalization(normalize)  # a bad value is one clear error, whatever the model
    name = model
    if name in MODELS:
        if name in _BUILTIN and normalize is not DEFAULT:
            raise InputError(f"{name} carries its own normalization (see its card): drop normalize=")
        loaded = MODELS.get(name)()
        if not isinstance(loaded, nn.Module):
            raise InputError(f"the loader registered as {name!r} returned a "
                             f"{type(loaded).__name__}, not an nn.Module")
        return _from_module(loaded, weights=weights, normalize=normalize, input_size=input_size,
                            class_names=class_names, name=name)
    if name.startswith("torchvision:"):
        return _torchvision(name.split(":", 1)[1], weights, num_classes, normalize).eval()
    if is_source(name):
        return _from_module(module_from(name), weights=weights, normalize=normalize,
                            input_size=input_size, class_names=class_names, name=name)
    known = list_models()
    close = difflib.get_close_matches(name, known, n=4) or difflib.get_close_matches(
        f"torchvision:{name}", known, n=4
    )
    named = [n for n in known if not n.startswith("torchvision:")]
    raise ModelNotFoundError(
        f"unknown model {name!r}; use one of {', '.join(named)} or torchvision:ARCH"
        + (f" (did you mean {', '.join(close)}?)" if close else "")
    )


def input_size(model: nn.Module, default=(3, 224, 224)) -> tuple[int, int, int]:
    """The (C, H, W) a loaded model expects."""
    return tuple(getattr(model, "input_size", default))


def class_name(model: nn.Module, index: int) -> str:
    names = getattr(model, "class_names", None)
    return names[index] if names and 0 <= index < len(names) else f"class {index}"


__all__ = [
    "MODELS", "ImageModel", "NoNormalization", "Normalize", "class_name", "input_size",
    "list_models", "load_model", "register_model",
]

"""ConceptNet: a small CNN trained on ConceptWorld, whose weights ship with the package.

Five conv blocks, global average pooling and one linear layer (so CAM applies), with the
normalization as its first module. Layer names: ``normalize``, ``features.block1`` …
``features.block5`` (each ``conv``, ``bn``, ``relu``), ``pool``, ``flatten``, ``fc``.

Example:
    >>> model = load_conceptnet()                 # doctest: +SKIP
    >>> model.class_names[:3]                     # doctest: +SKIP
    ['circle', 'square', 'triangle']
"""
from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

from torch import nn

from seethrough.errors import WeightsError
from seethrough.models.normalize import Normalize

WEIGHTS_DIR = Path(__file__).with_name("weights")
#: (out channels, max-pool after the block)
BLOCKS = ((16, True), (32, True), (64, True), (128, False), (128, False))
#: mean and std of ConceptWorld pixels (seed 0, train split, first 600 images at 64 px)
MEAN = (0.493, 0.532, 0.506)
STD = (0.233, 0.193, 0.290)


def conv_block(inputs: int, outputs: int, pool: bool) -> nn.Sequential:
    layers = OrderedDict(
        conv=nn.Conv2d(inputs, outputs, 3, padding=1, bias=False),
        bn=nn.BatchNorm2d(outputs),
        relu=nn.ReLU(inplace=True),
    )
    if pool:
        layers["pool"] = nn.MaxPool2d(2)
    return nn.Sequential(layers)


def build_conceptnet(num_classes: int = 8, mean=MEAN, std=STD) -> nn.Sequential:
    """A freshly initialised ConceptNet (see the module docstring for its layers)."""
    blocks, channels = OrderedDict(), 3
    for index, (outputs, pool) in enumerate(BLOCKS, start=1):
        blocks[f"block{index}"] = conv_block(channels, outputs, pool)
        channels = outputs
    return nn.Sequential(OrderedDict(
        normalize=Normalize(mean, std),
        features=nn.Sequential(blocks),
        pool=nn.AdaptiveAvgPool2d(1),
        flatten=nn.Flatten(),
        fc=nn.Linear(channels, num_classes),
    ))


def read_card(name: str) -> dict:
    path = WEIGHTS_DIR / f"{name}.json"
    if not path.is_file():
        raise WeightsError(f"model card {path} is missing: reinstall seethrough, or run "
                           f"`seethrough train` to make the weights again")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise WeightsError(f"model card {path} is corrupt: run `seethrough train` again") from None


def load_conceptnet(name: str = "conceptnet") -> nn.Module:
    """A bundled ConceptNet (``conceptnet``, ``conceptnet_cheater``, ``conceptnet_shuffled``),
    in eval mode, with its card."""
    from seethrough.models.imagenet import read_state_dict

    card = read_card(name)
    model = build_conceptnet(len(card["class_names"]), card["mean"], card["std"])
    state = read_state_dict(WEIGHTS_DIR / f"{name}.safetensors")
    from seethrough.models import load_state

    load_state(model, state, WEIGHTS_DIR / f"{name}.safetensors")
    model.input_size = (3, card["image_size"], card["image_size"])
    model.class_names = list(card["class_names"])
    model.card = card
    return model.eval()

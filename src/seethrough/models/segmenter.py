"""The ConceptWorld segmenter: a small U-Net that labels every pixel's shape, colour and texture
and the image's scene, as the segmentation model labels a generator's images in GAN Dissection
(Bau et al. 2019).

Encoder: ConceptNet's five conv blocks (16-32-64-128-128, the last two at 1/8 of the image, so
their receptive field covers a whole object; training starts from the bundled ConceptNet's
weights), three decoder levels (widths ``4w``, ``2w``, ``w``; ``w = 16`` shipped) with skip
connections, and one 1x1 head per pixel category. The scene head reads the globally pooled
lowest level; so does ``object``, an auxiliary head (the main object's shape, a ConceptWorld
class) that training uses to make the deep features tell shapes apart; ``segment`` leaves it
out. Images go in as [0, 1] pixels: the normalization (ConceptNet's ``MEAN``/``STD``) is the
first module. Logits cover every label value of ``ConceptWorld.categories`` (value ``k``
means ``categories[name][k]``; 0 is none/background).

Layer names: ``normalize``, ``enc1``, ``enc2``, ``enc3`` (each ``conv``/``bn``/``relu``),
``enc4.block4``, ``enc4.block5``, ``up3``, ``dec3``, ``up2``, ``dec2``, ``up1``, ``dec1``, ``heads.shape``,
``heads.colour``, ``heads.texture``, ``scene``, ``object``.

Example:
    >>> import torch
    >>> net = build_segmenter().eval()
    >>> labels = segment(net, torch.rand(2, 3, 64, 64))
    >>> labels["shape"].shape, labels["scene"].shape
    (torch.Size([2, 64, 64]), torch.Size([2]))
"""
from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from seethrough.errors import InputError, WeightsError
from seethrough.models.conceptnet import MEAN, STD, WEIGHTS_DIR, conv_block
from seethrough.models.normalize import Normalize

NAME = "conceptworld_segmenter"
#: the per-pixel categories, in the order of ``Segmenter.heads``
PIXEL_CATEGORIES = ("shape", "colour", "texture")


def category_sizes() -> dict[str, int]:
    """Number of label values (including 0 = none) of every ConceptWorld category."""
    from seethrough.data.conceptworld import ConceptWorld

    return {name: len(values) for name, values in ConceptWorld.categories.items()}


def _block(inputs: int, outputs: int, dilations: tuple[int, ...] = (1, 1)) -> nn.Sequential:
    layers, channels = OrderedDict(), inputs
    for index, dilation in enumerate(dilations, start=1):
        layers[f"conv{index}"] = nn.Conv2d(channels, outputs, 3, padding=dilation,
                                           dilation=dilation, bias=False)
        layers[f"bn{index}"] = nn.BatchNorm2d(outputs)
        layers[f"relu{index}"] = nn.ReLU(inplace=True)
        channels = outputs
    return nn.Sequential(layers)


class Segmenter(nn.Module):
    """U-Net-lite with a dict of logits: ``shape``, ``colour``, ``texture`` (N, K, H, W),
    ``scene`` (N, K) and the auxiliary ``object`` (N, classes). H and W must be multiples of 8.

    The encoder has ConceptNet's blocks (``conv``, ``bn``, ``relu``; widths 16-32-64-128-128,
    the last two at 1/8 resolution), so training can start from the bundled ConceptNet."""

    def __init__(self, sizes: dict[str, int], width: int = 16, mean=MEAN, std=STD):
        super().__init__()
        w = int(width)
        self.normalize = Normalize(mean, std)
        self.enc1 = conv_block(3, 16, False)
        self.enc2 = conv_block(16, 32, False)
        self.enc3 = conv_block(32, 64, False)
        self.enc4 = nn.Sequential(OrderedDict(block4=conv_block(64, 128, False),
                                              block5=conv_block(128, 128, False)))
        self.pool = nn.MaxPool2d(2)
        self.up3 = nn.ConvTranspose2d(128, 4 * w, 2, stride=2)
        self.dec3 = _block(4 * w + 64, 4 * w, (1,))
        self.up2 = nn.ConvTranspose2d(4 * w, 2 * w, 2, stride=2)
        self.dec2 = _block(2 * w + 32, 2 * w, (1,))
        self.up1 = nn.ConvTranspose2d(2 * w, w, 2, stride=2)
        self.dec1 = _block(w + 16, w, (1,))
        self.heads = nn.ModuleDict({name: nn.Conv2d(w, sizes[name], 1) for name in PIXEL_CATEGORIES})
        self.scene = nn.Sequential(OrderedDict(pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(),
                                               fc=nn.Linear(128, sizes["scene"])))
        #: auxiliary training head: the main object's shape (ConceptWorld class), image level
        self.object = nn.Sequential(OrderedDict(pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(),
                                                fc=nn.Linear(128, sizes["shape"] - 1)))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.normalize(x)
        e1 = self.enc1(x)
        e2 = self.enc2(self.pool(e1))
        e3 = self.enc3(self.pool(e2))
        e4 = self.enc4(self.pool(e3))
        d3 = self.dec3(torch.cat([self.up3(e4), e3], 1))
        d2 = self.dec2(torch.cat([self.up2(d3), e2], 1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], 1))
        logits = {name: head(d1) for name, head in self.heads.items()}
        logits["scene"] = self.scene(e4)
        logits["object"] = self.object(e4)
        return logits

    def encoder_from_conceptnet(self, conceptnet: nn.Module) -> Segmenter:
        """Copy a ConceptNet's five conv blocks into the encoder and its ``fc`` into ``object``."""
        blocks = conceptnet.features
        with torch.no_grad():
            for target, source in ((self.enc1, blocks.block1), (self.enc2, blocks.block2),
                                   (self.enc3, blocks.block3), (self.enc4.block4, blocks.block4),
                                   (self.enc4.block5, blocks.block5), (self.object.fc, conceptnet.fc)):
                target.load_state_dict({k: v for k, v in source.state_dict().items()})
        return self


def build_segmenter(width: int = 16, mean=MEAN, std=STD) -> Segmenter:
    """A freshly initialised segmenter whose heads cover every ConceptWorld label value.

    Example:
        >>> import torch
        >>> logits = build_segmenter().eval()(torch.rand(1, 3, 64, 64))
        >>> {name: tuple(v.shape) for name, v in logits.items()}["shape"]
        (1, 9, 64, 64)
    """
    model = Segmenter(category_sizes(), width, mean, std)
    model.input_size = (3, 64, 64)
    return model


def read_segmenter_card(name: str = NAME, folder: str | Path | None = None) -> dict:
    """The JSON card of a bundled segmenter (or ``folder/name.json``); one-line WeightsError."""
    path = Path(folder or WEIGHTS_DIR) / f"{name}.json"
    if not path.is_file():
        raise WeightsError(f"segmenter card {path} is missing: reinstall seethrough, or run "
                           f"`seethrough train-segmenter` to make the weights again")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise WeightsError(f"segmenter card {path} is corrupt: run `seethrough train-segmenter` "
                           f"again") from None


def load_segmenter(name: str = NAME, folder: str | Path | None = None) -> Segmenter:
    """The shipped segmenter (or ``folder/name.safetensors`` + ``.json``) in eval mode, with
    its card as ``.card``.

    Example:
        >>> load_segmenter().card["mean_iou"]["shape"] > 0.5   # doctest: +SKIP
        True
    """
    from seethrough.models import load_state
    from seethrough.models.imagenet import read_state_dict

    card = read_segmenter_card(name, folder)
    weights = Path(folder or WEIGHTS_DIR) / f"{name}.safetensors"
    model = build_segmenter(card.get("width", 16), card.get("mean", MEAN), card.get("std", STD))
    load_state(model, read_state_dict(weights), weights)
    model.input_size = (3, card.get("image_size", 64), card.get("image_size", 64))
    model.card = card
    return model.eval()


def segment(segmenter: nn.Module, images: torch.Tensor, batch_size: int = 256
            ) -> dict[str, torch.Tensor]:
    """Label maps of images (N, 3, H, W) in [0, 1]: ``shape``, ``colour``, ``texture`` as
    LongTensors (N, H, W) of label values, ``scene`` (N,). Runs in eval mode without gradients
    and leaves the segmenter as it was; results are on the segmenter's device.

    Example:
        >>> import torch
        >>> net = build_segmenter().train()
        >>> segment(net, torch.rand(1, 3, 32, 32))["texture"].dtype, net.training
        (torch.int64, True)
    """
    from seethrough.core import check_images
    from seethrough.preserve import preserve

    images = check_images(images, segmenter)
    if images.shape[-1] % 8 or images.shape[-2] % 8:
        raise InputError(f"images must have a height and width that are multiples of 8 for the "
                         f"segmenter; got {tuple(images.shape[-2:])}")
    if batch_size < 1:
        raise InputError(f"batch_size must be at least 1, not {batch_size}")
    parts: dict[str, list[torch.Tensor]] = {}
    with preserve(segmenter), torch.no_grad():
        segmenter.eval()
        for start in range(0, len(images), batch_size):
            for name, logits in segmenter(images[start:start + batch_size]).items():
                if name == "object":
                    continue
                parts.setdefault(name, []).append(logits.argmax(1))
    return {name: torch.cat(values) for name, values in parts.items()}


__all__ = ["NAME", "PIXEL_CATEGORIES", "Segmenter", "build_segmenter", "load_segmenter",
           "read_segmenter_card", "segment"]

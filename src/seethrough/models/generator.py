"""ConceptWorld GAN: a DCGAN-style generator and an SNGAN-style discriminator at 64 px.

The generator maps a standard-normal latent ``z`` (N, D) to an image (N, 3, 64, 64) in [0, 1],
the range ConceptWorld's images and every seethrough model take. Layers: ``layer1`` (z to a
4x4 map by a transposed convolution) then ``layer2`` … ``layer4`` (8x8 … 32x32), each nearest
upsampling, a 3x3 convolution, batch norm and ReLU (DCGAN's transposed convolutions drew
checkerboards here), then ``output`` (upsampling, convolution, tanh) and ``to_unit``
((x + 1) / 2). The units that GAN Dissection reads are the channels of ``layer1`` … ``layer4``.

The discriminator (Miyato et al. 2018's spectral norm on strided 4x4 convolutions, leaky ReLUs,
no batch norm) gives one logit per image; DCGAN's batch-normed discriminator overpowered the
generator on ConceptWorld within 200 steps.

Example:
    >>> import torch
    >>> generator = build_generator(latent_dim=16, width=8)
    >>> generator(torch.randn(2, 16)).shape
    torch.Size([2, 3, 64, 64])
"""
from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from seethrough.errors import InputError, WeightsError

#: the shipped generator's name (``load_model(NAME)``)
NAME = "conceptworld_gan"
#: the generator's analysable layers, coarse to fine
GENERATOR_LAYERS = ("layer1", "layer2", "layer3", "layer4")


class AsMap(nn.Module):
    """Latents (N, D), or (N, D, 1, 1) as a dataset of latents gives them, to (N, D, 1, 1)."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z.reshape(len(z), -1, 1, 1)


class ToUnit(nn.Module):
    """tanh's [-1, 1] to [0, 1]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x + 1) / 2


class Generator(nn.Sequential):
    """A DCGAN-style generator taking latents (N, D) or (N, D, 1, 1); ``latent_dim`` = D and
    ``input_size`` = (D, 1, 1), so that seethrough's passes over a dataset feed it latents as
    1x1 "images" with D channels."""

    def __init__(self, latent_dim: int = 128, width: int = 32):
        widths = (8 * width, 4 * width, 2 * width, width)
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        layers["as_map"] = AsMap()
        layers["layer1"] = nn.Sequential(OrderedDict(
            conv=nn.ConvTranspose2d(latent_dim, widths[0], 4, 1, 0, bias=False),
            bn=nn.BatchNorm2d(widths[0]), relu=nn.ReLU(inplace=True)))
        for index in range(1, 4):
            layers[f"layer{index + 1}"] = _upsample_block(widths[index - 1], widths[index])
        layers["output"] = nn.Sequential(OrderedDict(
            upsample=nn.Upsample(scale_factor=2, mode="nearest"),
            conv=nn.Conv2d(width, 3, 3, 1, 1), tanh=nn.Tanh()))
        layers["to_unit"] = ToUnit()
        super().__init__(layers)
        self.latent_dim = latent_dim
        self.input_size = (latent_dim, 1, 1)
        self.image_size = 64


class ConditionalBatchNorm(nn.Module):
    """BigGAN's conditional batch norm (Brock et al. 2019): batch norm without its own affine,
    scaled by ``1 + W z`` and shifted by ``V z``, ``z`` the layer's chunk of the latent (W, V
    start at zero, so an untrained layer is plain batch norm)."""

    def __init__(self, channels: int, chunk: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=False)
        self.gain = nn.Linear(chunk, channels, bias=False)
        self.shift = nn.Linear(chunk, channels, bias=False)
        nn.init.zeros_(self.gain.weight)
        nn.init.zeros_(self.shift.weight)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return (self.norm(x) * (1 + self.gain(z))[:, :, None, None]
                + self.shift(z)[:, :, None, None])


class HierarchicalBlock(nn.Module):
    """(Upsampling,) a convolution, conditional batch norm on the layer's latent chunk, ReLU;
    called with ``(x, z)``, its output is the layer's units."""

    def __init__(self, conv: nn.Module, channels: int, chunk: int, upsample: bool):
        super().__init__()
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest") if upsample else nn.Identity()
        self.conv = conv
        self.bn = ConditionalBatchNorm(channels, chunk)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(self.upsample(x)), z))


class HierarchicalGenerator(nn.Module):
    """The same layers as ``Generator``, with BigGAN's hierarchical latent: ``z`` is cut into
    five equal chunks; chunk 0 makes the 4x4 map and chunk ``k`` conditions layer ``k``'s batch
    norm, so every layer has its own latent input (``latent_chunks``), as the per-layer codes
    in which Yang et al. 2021 measured the GAN hierarchy.

    Example:
        >>> generator = HierarchicalGenerator(latent_dim=10, width=4)
        >>> generator(torch.randn(2, 10)).shape, generator.latent_chunks["layer2"]
        (torch.Size([2, 3, 64, 64]), slice(4, 6, None))
    """

    def __init__(self, latent_dim: int = 100, width: int = 32):
        super().__init__()
        if latent_dim % 5:
            raise InputError(f"a hierarchical latent is cut into 5 chunks: latent_dim {latent_dim} "
                             "must be a multiple of 5 (e.g. --latent-dim 100)")
        widths = (8 * width, 4 * width, 2 * width, width)
        chunk = latent_dim // 5
        self.layer1 = HierarchicalBlock(nn.ConvTranspose2d(chunk, widths[0], 4, 1, 0, bias=False),
                                        widths[0], chunk, upsample=False)
        for index in range(1, 4):
            setattr(self, f"layer{index + 1}", HierarchicalBlock(
                nn.Conv2d(widths[index - 1], widths[index], 3, 1, 1, bias=False), widths[index],
                chunk, upsample=True))
        self.output = nn.Sequential(OrderedDict(
            upsample=nn.Upsample(scale_factor=2, mode="nearest"),
            conv=nn.Conv2d(width, 3, 3, 1, 1), tanh=nn.Tanh()))
        self.to_unit = ToUnit()
        self.latent_dim, self.chunk = latent_dim, chunk
        self.input_size = (latent_dim, 1, 1)
        self.image_size = 64
        #: which latent entries each layer takes (layer1 also the 4x4 map's chunk 0)
        self.latent_chunks = {"layer1": slice(0, 2 * chunk),
                              **{f"layer{k}": slice(k * chunk, (k + 1) * chunk) for k in (2, 3, 4)}}

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        chunks = z.reshape(len(z), -1).split(self.chunk, 1)  # (N, D) or (N, D, 1, 1)
        x = self.layer1(chunks[0][:, :, None, None], chunks[1])
        for index in (2, 3, 4):
            x = getattr(self, f"layer{index}")(x, chunks[index])
        return self.to_unit(self.output(x))


def _upsample_block(inputs: int, outputs: int) -> nn.Sequential:
    """Nearest upsampling by 2, a 3x3 convolution, batch norm, ReLU (no checkerboard artifacts,
    Odena et al. 2016)."""
    return nn.Sequential(OrderedDict(
        upsample=nn.Upsample(scale_factor=2, mode="nearest"),
        conv=nn.Conv2d(inputs, outputs, 3, 1, 1, bias=False),
        bn=nn.BatchNorm2d(outputs), relu=nn.ReLU(inplace=True)))


def build_generator(latent_dim: int = 128, width: int = 32, hierarchical: bool = False
                    ) -> Generator | HierarchicalGenerator:
    """A freshly initialised generator with DCGAN's N(0, 0.02) weights (BN scales N(1, 0.02));
    ``hierarchical``: a ``HierarchicalGenerator``."""
    kind = HierarchicalGenerator if hierarchical else Generator
    return _dcgan_init(kind(latent_dim, width))


def build_discriminator(width: int = 32) -> nn.Sequential:
    """A discriminator for (N, 3, 64, 64) images in [0, 1]: strided 4x4 convolutions with
    spectral norm (Miyato et al. 2018) and leaky ReLUs, no batch norm; returns logits (N,)."""
    from torch.nn.utils.parametrizations import spectral_norm

    layers: OrderedDict[str, nn.Module] = OrderedDict()
    layers["to_symmetric"] = _ToSymmetric()
    channels = 3
    for index, outputs in enumerate((width, 2 * width, 4 * width, 8 * width), start=1):
        layers[f"layer{index}"] = nn.Sequential(OrderedDict(
            conv=spectral_norm(nn.Conv2d(channels, outputs, 4, 2, 1)),
            relu=nn.LeakyReLU(0.1, inplace=True)))
        channels = outputs
    layers["output"] = spectral_norm(nn.Conv2d(channels, 1, 4, 1, 0))
    layers["flatten"] = nn.Flatten(0)
    return nn.Sequential(layers)


class _ToSymmetric(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2 - 1


def _dcgan_init(module: nn.Module) -> nn.Module:
    for child in module.modules():
        if isinstance(child, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(child.weight, 0.0, 0.02)
        elif isinstance(child, nn.BatchNorm2d) and child.affine:
            nn.init.normal_(child.weight, 1.0, 0.02)
            nn.init.zeros_(child.bias)
    return module


def load_generator(name: str | Path = NAME) -> Generator:
    """The shipped generator (``conceptworld_gan``) or one saved by ``save_generator`` (path with
    or without suffix), in eval mode, with ``card``."""
    from seethrough.models.conceptnet import WEIGHTS_DIR
    from seethrough.models.imagenet import read_state_dict

    stem = WEIGHTS_DIR / NAME if str(name) == NAME else Path(name).with_suffix("")
    card_path, weights = stem.with_suffix(".json"), stem.with_suffix(".safetensors")
    if not card_path.is_file() or not weights.is_file():
        raise WeightsError(f"no generator at {stem}: use {NAME!r} or a path written by "
                           "`seethrough train-gan`")
    card = json.loads(card_path.read_text(encoding="utf-8"))
    kind = HierarchicalGenerator if card.get("hierarchical") else Generator
    generator = kind(card["latent_dim"], card["width"])
    try:
        generator.load_state_dict(read_state_dict(weights))
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0]
        raise WeightsError(f"weights {weights} do not fit the card: {first}") from None
    generator.card = card
    return generator.eval()


__all__ = ["GENERATOR_LAYERS", "NAME", "ConditionalBatchNorm", "Generator", "HierarchicalGenerator",
           "build_discriminator", "build_generator", "load_generator"]

"""The synthesis section of a report: what a network's features can make, and style transfer
by optimisation against a feed-forward network.

On the model and images of 96 px or more: DeepDream, feature inversion at three depths,
texture synthesis by Efros & Leung's pixel sampling beside Gatys et al.'s Gram matching, and
Gatys et al.'s style transfer (the style is ``data.extra["style"]`` when given, else the last
texture), with their times; the paper presets of ``seethrough.featureviz.synthesis``. With ``data.extra["stylizers"]`` (the demo),
the shipped feed-forward stylizers too: the same content stylized in one pass against the
optimisation (times side by side), the eight-style network's grid, an interpolation strip
between two of its styles, and the instance-versus-batch-norm table of its card.

Example:
    >>> import torch, torchvision
    >>> from seethrough.sections import SectionData, SectionOptions
    >>> model = torchvision.models.resnet18(num_classes=4).eval()
    >>> made = section(model, SectionData(torch.rand(2, 3, 32, 32)), SectionOptions(quick=True))
    >>> made.title, made.notes[0][:24]
    ('Synthesis and style', 'Synthesis needs images o')
"""
from __future__ import annotations

import time

import torch
from torch import nn

from seethrough.core.layer_table import stage_layers
from seethrough.featureviz.figures import resized, row_html
from seethrough.featureviz.synthesis import deepdream, invert, synthesize_texture, transfer_style
from seethrough.featureviz.synthesis.nonparametric import synthesize_texture_nonparametric
from seethrough.progress import best_time
from seethrough.sections import Section, SectionData, SectionOptions

TITLE = "Synthesis and style"
#: the smallest images the section synthesizes from
MIN_SIZE = 96
#: Efros & Leung grow this many pixels a side from a sample of the same size
SAMPLED_SIZE = 64
NEURAL_TEXTURE_SIZE = 128
#: the largest side the style transfer runs at (the stained-glass cells need room)
STYLE_SIZE = 224


def _dream_and_invert_html(model: nn.Module, data: SectionData, stages: list[str], steps: int,
                           quick: bool) -> str:
    small = resized(data.images[:2], 128)
    deep = stages[len(stages) // 2]
    dreams = deepdream(model, small, layer=deep, steps=5 if quick else 10)
    body = f"<h4>DeepDream ({deep.removeprefix('net.')}, 4 octaves)</h4>" + row_html(
        torch.cat([small, dreams]), [*data.names[:2], *(f"{n}, dreamed" for n in data.names[:2])])
    first = small[:1]
    inversions, captions = [first], ["original"]
    for layer in (stages[len(stages) // 6], stages[len(stages) // 3], stages[3 * len(stages) // 4]):
        inversions.append(invert(model, first, layer, steps=steps).images)
        captions.append(f"inverted from {layer.removeprefix('net.')}")
    return body + "<h4>Feature inversion (Mahendran & Vedaldi 2015)</h4>" + row_html(
        torch.cat(inversions), captions)


def _texture_html(model: nn.Module, textures: torch.Tensor, steps: int) -> str:
    made, captions = [], []
    for index, texture in enumerate(textures[:2]):
        sample = resized(texture[None], NEURAL_TEXTURE_SIZE)
        small = resized(texture[None], SAMPLED_SIZE)
        neural, neural_time = best_time(lambda s=sample: synthesize_texture(
            model, s, steps=steps, preset="fast").images)
        grown, grown_time = best_time(lambda s=small: synthesize_texture_nonparametric(s, size=SAMPLED_SIZE))
        made += [sample, neural, small, grown]
        captions += [f"texture {index + 1}", f"Gatys et al., {neural_time:.1f} s",
                     f"texture {index + 1} at {SAMPLED_SIZE} px", f"Efros & Leung, {grown_time:.1f} s"]
    return ("<h4>Texture synthesis: Gram matching (Gatys et al. 2015) and pixel sampling (Efros "
            "& Leung 1999)</h4><p>Gram matching makes new pixels whose feature correlations "
            f"match the sample's at five stages of the network ({NEURAL_TEXTURE_SIZE} px; the "
            "fast preset, decorrelated Fourier pixels and Adam: the paper's L-BFGS from white "
            "noise keeps the noise a stride-2 first layer cannot see). Sampling copies the "
            "sample's own pixels one at a time where their neighbourhoods match, with no "
            f"network ({SAMPLED_SIZE} px: it compares every window of the sample for every "
            "pixel).</p>" + row_html([image[0] for image in made], captions))


#: the style loss weight of the report's style transfer: the paper's alpha / beta = 1e-3 leaves
#: the style faint on ImageNet CNNs fed [0, 1] images (see ``synthesis.style``); at 224 px on
#: MobileNetV2, 1e6 still does, 1e7 shows the glass and keeps the content
STYLE_WEIGHT = 1e7


def _gatys_html(model: nn.Module, content: torch.Tensor, style: torch.Tensor, steps: int) -> tuple[str, float]:
    styled, seconds = best_time(lambda: transfer_style(model, content, style, steps=steps,
                                                    style_weight=STYLE_WEIGHT, init="content"))
    layer = styled.settings["content_layer"].removeprefix("net.")
    body = ("<h4>Style transfer by optimisation (Gatys et al. 2016)</h4><p>The paper's losses "
            "(unnormalised Gram matrices, 1/(4 N² M²), five style layers weighted 1/5) and "
            f"optimiser (L-BFGS, {steps} iterations) on this model, content at {layer}; two "
            f"departures, both stated: style weight {STYLE_WEIGHT:.0e} (the paper's ratio 1e-3 "
            "leaves the style faint on a network fed [0, 1] images) and the content image as "
            "the start (white noise stays as pixel noise where the first convolution has "
            "stride 2).</p>" + row_html(
                torch.cat([content, style, styled.images]),
                ["content", "style", f"optimised, {seconds:.1f} s"]))
    return body, seconds


def section(model: nn.Module, data: SectionData, options: SectionOptions, *,
            steps: int | None = None) -> Section:
    """Synthesis on ``model`` and ``data`` (see the module docstring); ``steps`` overrides the
    optimisation steps (default 32 quick, 128 otherwise)."""
    size = data.images.shape[-1]
    if size < MIN_SIZE:
        note = f"Synthesis needs images of {MIN_SIZE} px or more; these are {size} px."
        return Section(TITLE, "", notes=[note])
    stages = stage_layers(model, (3, 128, 128))
    if not stages:
        return Section(TITLE, "", notes=["The model has no convolutional stages to synthesize from."])
    start = time.perf_counter()
    steps = steps or (32 if options.quick else 128)
    textures = data.extra.get("textures", data.images[1:3] if len(data.images) > 2 else data.images)
    body = _dream_and_invert_html(model, data, stages, steps, options.quick)
    body += _texture_html(model, textures, steps)
    style = data.extra.get("style", textures[-1:])
    side = min(size, STYLE_SIZE)
    content, style = resized(data.images[:1], side), resized(style, side)
    gatys, gatys_seconds = _gatys_html(model, content, style, steps)
    body += gatys
    notes = []
    if data.extra.get("stylizers"):
        from seethrough.featureviz.stylizers.section import stylizers_html

        more, more_notes = stylizers_html(data.images[:2], content, gatys_seconds)
        body += more
        notes += more_notes
    notes.append(f"time: {time.perf_counter() - start:.0f} s")
    return Section(TITLE, body, notes=notes)

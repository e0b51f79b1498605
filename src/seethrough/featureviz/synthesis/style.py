"""Neural style transfer (Gatys, Ecker & Bethge 2016, "Image style transfer using convolutional
neural networks", CVPR): the content of one image in another's style.

``preset="paper"`` (the default) is the paper's method, minimizing
``L = alpha * L_content + beta * L_style``:

* ``L_content = 1/2 sum (F - P)^2`` at one layer (conv4_2 of VGG-19; here by default the stage
  half-way through the network), ``objectives.gatys_content_loss``;
* ``L_style = sum_l w_l E_l``, ``E_l = 1/(4 N_l^2 M_l^2) sum (G_l - A_l)^2`` with unnormalized
  Grams, ``w_l = 1/5`` over five layers (conv1_1 ... conv5_1; here five stages spread over the
  first 2/3 of the network), ``objectives.gatys_style_loss``;
* ``alpha / beta = 1e-3`` (``content_weight=1``, ``style_weight=1e3``): the ratio of the
  paper's Fig. 3 B-D (its Fig. 3 E-F use 8e-4; Fig. 4 shows 1e-5 ... 1e-2);
* start from white noise, optimize the pixels (``param="raw"``, projected into [0, 1]) with
  L-BFGS (``torch.optim.LBFGS``, lr 1, strong-Wolfe line search; one step = one iteration).

The PyTorch port by the first author (leongatys/PytorchNeuralStyleTransfer) differs: it starts from
the content image, weights the style layers ``1e3 / N_l^2`` on Grams divided by ``M_l``, and
runs 500 L-BFGS iterations. ``preset="fast"`` is the earlier default of this module: losses
normalized by their targets (``feature_match``, ``gram_match``), ``content_weight=1``,
``style_weight=10``, starting from the content image with Adam (lr 0.02) on a sigmoid pixel image.

The balance ``alpha / beta`` depends on the network's activation scale: the content loss grows
with its square, the style loss with its fourth power. The paper's VGG-19 saw 0..255 pixels
(activations about 255 x 0.23 = 58 times those of a [0, 1] input normalized by the ImageNet
std, for a network without normalization layers), so the same ratio on our models leans to the
content. Measured on ``load_model("mobilenet_v2")`` at 128 px, 100 L-BFGS steps from noise:
``style_weight=1e3`` (the paper's 1e-3) lowers the style loss only 7x and leaves mostly the
content; ``1e6`` lowers it about 100x and carries the style; ``1e7`` loses the content.
A white-noise start also leaves pixel noise on networks whose first convolution has stride 2
(the noise the network cannot see is never removed); ``init="content"`` avoids that.

Example:
    >>> import torchvision
    >>> net = torchvision.models.resnet18(num_classes=10)
    >>> x = torch.rand(1, 3, 32, 32)
    >>> transfer_style(net, x, x, content_layer="layer2", style_layers=["layer1"], steps=2).images.shape
    torch.Size([1, 3, 32, 32])
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from seethrough.core.layer_table import spread, stage_layers
from seethrough.errors import InputError
from seethrough.featureviz import objectives as obj
from seethrough.featureviz.render import Renderer, Visualization
from seethrough.featureviz.synthesis.texture import LBFGS_OPTIONS, preset_settings, target_grams
from seethrough.progress import progress_bar
from seethrough.trace import capture

#: settings per preset; arguments given explicitly win
PRESETS: dict[str, dict] = {
    "paper": {"loss": "gatys", "content_weight": 1.0, "style_weight": 1e3, "param": "raw",
              "init": "noise", "optimizer": torch.optim.LBFGS, "lr": 1.0,
              "optimizer_options": LBFGS_OPTIONS, "steps": 200},
    "fast": {"loss": "normalized", "content_weight": 1.0, "style_weight": 10.0, "param": "pixel",
             "init": "content", "optimizer": torch.optim.Adam, "lr": 0.02,
             "optimizer_options": None, "steps": 200},
}


def style_objective(model: nn.Module, content: torch.Tensor, style: torch.Tensor, content_layer: str,
                    style_layers: Sequence[str], *, content_weight: float, style_weight: float,
                    loss: str = "gatys") -> obj.Objective:
    """``-(alpha L_content + beta sum_l L_style,l / L)`` (``loss="gatys"``), or the normalized
    losses of the fast preset (``loss="normalized"``); ``style`` has ``content``'s size."""
    target = capture(model, content, content_layer)[content_layer].output
    weight = style_weight / len(style_layers)
    if loss == "gatys":
        grams = target_grams(model, style, style_layers, normalize=False)
        return (content_weight * obj.gatys_content_loss(content_layer, target)
                + sum(weight * obj.gatys_style_loss(l, grams[l]) for l in style_layers))
    if loss != "normalized":
        raise InputError(f"loss is 'gatys' or 'normalized', not {loss!r}")
    grams = target_grams(model, style, style_layers)
    return (content_weight * obj.feature_match(content_layer, target)
            + sum(weight * obj.gram_match(l, grams[l]) for l in style_layers))


def transfer_style(model: nn.Module, content: torch.Tensor, style: torch.Tensor, *,
                   content_layer: str | None = None, style_layers: Sequence[str] | None = None,
                   content_weight: float | None = None, style_weight: float | None = None,
                   steps: int | None = None, lr: float | None = None, param: str | None = None,
                   seed: int = 0, progress: bool | None = None, preset: str = "paper",
                   init: str | torch.Tensor | None = None, optimizer=None) -> Visualization:
    """``content`` (N, 3, H, W) repainted with the style of ``style`` (1, 3, h, w).

    ``preset`` ("paper" or "fast") sets the losses, weights, start (``init``: "noise",
    "content" or an image), parameterization, optimizer, lr and steps; explicit arguments win.
    """
    for name, image in (("content", content), ("style", style)):
        if image.dim() != 4 or image.shape[1] != 3:
            raise InputError(f"{name} must be (N, 3, H, W) in [0, 1], got {tuple(image.shape)}")
    chosen = preset_settings(preset, PRESETS)
    steps = chosen["steps"] if steps is None else steps
    content_weight = chosen["content_weight"] if content_weight is None else content_weight
    style_weight = chosen["style_weight"] if style_weight is None else style_weight
    stages = stage_layers(model, tuple(content.shape[1:]))
    content_layer = content_layer or stages[len(stages) // 2]
    style_layers = list(style_layers or spread(stages, 5, upto=2 / 3))
    if style.shape[-2:] != content.shape[-2:]:
        style = F.interpolate(style, size=content.shape[-2:], mode="bilinear", align_corners=False,
                              antialias=True)
    objective = style_objective(model, content, style, content_layer, style_layers,
                                content_weight=content_weight, style_weight=style_weight,
                                loss=chosen["loss"])
    init = chosen["init"] if init is None else init
    start = content if isinstance(init, str) and init == "content" else (None if isinstance(init, str) else init)
    if isinstance(init, str) and init not in ("noise", "content"):
        raise InputError(f"init is 'noise', 'content' or an image, not {init!r}")
    renderer = Renderer(model, objective, size=tuple(content.shape[-2:]), batch=content.shape[0],
                        seed=seed, param=param or chosen["param"], transforms="none",
                        lr=chosen["lr"] if lr is None else lr, redirect_relu_steps=0, init=start,
                        optimizer=optimizer or chosen["optimizer"],
                        optimizer_options=chosen["optimizer_options"] if optimizer is None else None)
    with renderer:
        for _ in progress_bar(range(steps), "style", progress=progress, unit="step"):
            renderer.step()
    return Visualization(renderer.images(), renderer.history, objective.description,
                         {"content_layer": content_layer, "style_layers": style_layers,
                          "content_weight": content_weight, "style_weight": style_weight,
                          "preset": preset, "steps": steps, "evaluations": renderer.evaluations})

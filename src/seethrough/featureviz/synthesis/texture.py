"""Neural texture synthesis (Gatys, Ecker & Bethge 2015, "Texture synthesis using convolutional
neural networks"): match Gram matrices at several layers.

``preset="paper"`` (the default) is the paper's method:

* Gram matrices ``G_l = F_l F_l^T``, unnormalized (``F_l``: ``N_l`` channels x ``M_l`` positions);
* per-layer loss ``E_l = 1/(4 N_l^2 M_l^2) sum (G_l - G_hat_l)^2`` (``objectives.gatys_style_loss``);
* total ``sum_l w_l E_l`` with equal weights ``w_l = 1/L`` over the layers (the paper's conv1_1,
  pool1, pool2, pool3, pool4 of VGG-19; here by default five network stages spread over the first
  2/3 of the depth, ``default_texture_layers``);
* start from white noise (uniform in [0, 1]), optimize the pixels themselves (``param="raw"``,
  projected into [0, 1] after each step: the paper's L-BFGS-B had pixel bounds) with L-BFGS
  (``torch.optim.LBFGS``, lr 1, strong-Wolfe line search, history 100, no early stop; one
  ``step`` = one L-BFGS iteration).

Libraries differ from the paper: the PyTorch port by the first author
(leongatys/PytorchNeuralStyleTransfer) divides the Gram by ``M_l`` and weighs layers
``1e3 / N_l^2``; Lucid's ``StyleLoss`` (optvis/style.py) divides the Gram by the positions and
compares by a mean absolute (L1) difference by default, optimized with Adam (lr 0.05).

``preset="fast"`` is the earlier default: each layer's Gram ``F F^T / M_l`` matched relative to
its own norm, ``||G - G_hat||^2 / ||G_hat||^2`` averaged over layers, on a decorrelated Fourier
image with Adam (lr 0.05): smoother images in fewer, cheaper steps, but not the paper's loss.

Example:
    >>> import torchvision
    >>> net = torchvision.models.resnet18(num_classes=10)
    >>> out = synthesize_texture(net, torch.rand(1, 3, 32, 32), layers=["layer1"], steps=3)
    >>> out.images.shape, out.settings["preset"]
    (torch.Size([1, 3, 32, 32]), 'paper')
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from seethrough.core.layer_table import spread, stage_layers
from seethrough.errors import InputError
from seethrough.featureviz import objectives as obj
from seethrough.featureviz.render import Renderer, Visualization
from seethrough.progress import progress_bar
from seethrough.trace import capture

#: torch.optim.LBFGS settings of the paper presets: one iteration per step, strong-Wolfe line
#: search (scipy's L-BFGS-B, used by the authors, also ends each iteration with a Wolfe search),
#: no early stop on small gradients (the losses are small numbers)
LBFGS_OPTIONS = {"max_iter": 1, "history_size": 100, "line_search_fn": "strong_wolfe",
                 "tolerance_grad": 0.0, "tolerance_change": 0.0}

#: settings per preset; any argument given explicitly wins
PRESETS: dict[str, dict] = {
    "paper": {"loss": "gatys", "param": "raw", "optimizer": torch.optim.LBFGS, "lr": 1.0,
              "optimizer_options": LBFGS_OPTIONS, "steps": 200},
    "fast": {"loss": "normalized", "param": "fourier", "optimizer": torch.optim.Adam, "lr": 0.05,
             "optimizer_options": None, "steps": 200},
}


def preset_settings(preset: str, presets: dict[str, dict] | None = None) -> dict:
    """The settings of a preset name (``"paper"`` or ``"fast"``)."""
    presets = PRESETS if presets is None else presets
    if preset not in presets:
        raise InputError(f"preset is one of {sorted(presets)}, not {preset!r}")
    return dict(presets[preset])


def target_grams(model: nn.Module, images: torch.Tensor, layers: Sequence[str], *,
                 normalize: bool = True) -> dict[str, torch.Tensor]:
    """Gram matrices (1, C, C) of the mean over ``images`` at each layer (``normalize=False``:
    Gatys et al.'s unnormalized ``F F^T``)."""
    trace = capture(model, images, list(layers))
    return {layer: obj.gram(trace[layer].output, normalize=normalize).mean(0, keepdim=True)
            for layer in layers}


def _positions(model: nn.Module, shape: tuple[int, int], layers: Sequence[str], device) -> dict[str, int]:
    trace = capture(model, torch.zeros((1, 3) + tuple(shape), device=device), list(layers))
    return {layer: trace[layer].output.flatten(2).shape[2] for layer in layers}


def gatys_texture_objective(model: nn.Module, images: torch.Tensor, layers: Sequence[str], *,
                            weights: Sequence[float] | None = None,
                            size: tuple[int, int] | None = None) -> obj.Objective:
    """``-sum_l w_l E_l`` (Gatys et al. 2015, eq. 4-5), ``w_l = 1/L`` unless ``weights``.

    For an output ``size`` other than the texture's, the target Grams are rescaled to the output's
    number of positions (the per-position Gram is what is matched).
    """
    weights = [1.0 / len(layers)] * len(layers) if weights is None else list(weights)
    if len(weights) != len(layers):
        raise InputError(f"{len(weights)} layer weights for {len(layers)} layers")
    grams = target_grams(model, images, layers, normalize=False)
    if size is not None and tuple(size) != tuple(images.shape[-2:]):
        device = images.device
        have, want = _positions(model, images.shape[-2:], layers, device), _positions(model, size, layers, device)
        grams = {layer: grams[layer] * (want[layer] / have[layer]) for layer in layers}
    return sum(w * obj.gatys_style_loss(layer, grams[layer]) for w, layer in zip(weights, layers))


def texture_objective(model: nn.Module, images: torch.Tensor, layers: Sequence[str], *,
                      loss: str = "normalized", weights: Sequence[float] | None = None,
                      size: tuple[int, int] | None = None) -> obj.Objective:
    """The objective of a preset: ``loss="gatys"`` (paper) or ``"normalized"`` (fast)."""
    if loss == "gatys":
        return gatys_texture_objective(model, images, layers, weights=weights, size=size)
    if loss != "normalized":
        raise InputError(f"loss is 'gatys' or 'normalized', not {loss!r}")
    grams = target_grams(model, images, layers)
    return sum(obj.gram_match(layer, grams[layer]) for layer in layers) / len(layers)


def default_texture_layers(model: nn.Module, input_shape) -> list[str]:
    """Five stages over the first 2/3 of the network (the paper's conv1_1, pool1 ... pool4)."""
    return spread(stage_layers(model, input_shape), 5, upto=2 / 3)


def synthesize_texture(model: nn.Module, texture: torch.Tensor, *, layers: Sequence[str] | None = None,
                       size: int | tuple[int, int] | None = None, batch: int = 1, steps: int | None = None,
                       lr: float | None = None, param: str | None = None, transforms="none", seed: int = 0,
                       progress: bool | None = None, preset: str = "paper",
                       layer_weights: Sequence[float] | None = None, optimizer=None) -> Visualization:
    """New images with the texture statistics of ``texture`` (1, 3, H, W).

    ``preset`` picks the loss, parameterization, optimizer, lr and steps (200 L-BFGS iterations
    for ``"paper"``, 200 Adam steps for ``"fast"``); arguments given explicitly override it.
    """
    if texture.dim() != 4 or texture.shape[1] != 3:
        raise InputError(f"texture needs a (1, 3, H, W) image in [0, 1], got {tuple(texture.shape)}")
    chosen = preset_settings(preset)
    steps = chosen["steps"] if steps is None else steps
    out_size = size or tuple(texture.shape[-2:])
    out_size = (out_size, out_size) if isinstance(out_size, int) else tuple(out_size)
    layers = list(layers or default_texture_layers(model, tuple(texture.shape[1:])))
    objective = texture_objective(model, texture, layers, loss=chosen["loss"], weights=layer_weights,
                                  size=out_size)
    renderer = Renderer(model, objective, size=out_size, batch=batch, seed=seed,
                        param=param or chosen["param"], transforms=transforms,
                        lr=chosen["lr"] if lr is None else lr, redirect_relu_steps=0,
                        optimizer=optimizer or chosen["optimizer"],
                        optimizer_options=chosen["optimizer_options"] if optimizer is None else None)
    with renderer:
        for _ in progress_bar(range(steps), "texture", progress=progress, unit="step"):
            renderer.step()
    return Visualization(renderer.images(), renderer.history, objective.description,
                         {"layers": layers, "steps": steps, "preset": preset, "loss": chosen["loss"],
                          "evaluations": renderer.evaluations})

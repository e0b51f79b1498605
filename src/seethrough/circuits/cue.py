"""A worked circuit edit: find the channels that carry a shortcut cue and switch them off.

The cheater (``conceptnet_cheater``) was trained on a world where a small square in the
top-left corner has a colour that tells the class. On unbiased images (the cue's colour
random) it follows the cue and fails. ``cue_channels`` ranks a layer's channels by how much of
the decision they carry on the cue's pixels (channel attribution, gradient x activation of the
predicted class, summed over the cue's positions, on images where the cue tells the truth);
``cue_edit`` switches the top channels off where the cue lies and measures accuracy on
unbiased images, beside the same number of random channels switched off in the same place
(the control) and the references: the honest model, and the cheater on images without a cue.

Example:
    >>> from seethrough.data import ConceptWorld
    >>> from seethrough.models import load_model
    >>> cheater = load_model("conceptnet_cheater")
    >>> biased = ConceptWorld("val", length=32, bias=1.0).batch()
    >>> scores = cue_channels(cheater, "features.block3", biased["image"], biased["cue_mask"])
    >>> scores.shape
    torch.Size([64])
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from seethrough.circuits.edit import Off, edit
from seethrough.core import model_device, run_scope
from seethrough.errors import InputError

#: shares of a layer's channels switched off
SHARES = (0.125, 0.25, 0.5, 1.0)


def cue_channels(model: nn.Module, layer: str, images: torch.Tensor,
                 cue_masks: torch.Tensor) -> torch.Tensor:
    """``(C,)``: per channel of ``layer``, the mean over images of its gradient x activation for
    the predicted class summed over the cue's positions (the cue masks resized to the layer's
    grid by area). High: the channel carries the decision where the cue is."""
    from seethrough.attribution.channels import channel_attribution

    if cue_masks.shape[0] != images.shape[0] or cue_masks.dim() != 3:
        raise InputError("cue_masks is (N, H, W), one mask per image")
    scores = channel_attribution(model, images, layer, "predicted", keep_maps=True)
    if scores.maps is None:
        raise InputError(f"layer {layer!r} has no (C, H, W) output to find a cue in")
    on_cue = F.interpolate(cue_masks[:, None].float(), size=scores.maps.shape[-2:], mode="area")
    return (scores.maps * on_cue.to(scores.maps.device)).sum((2, 3)).mean(0).cpu()


def _accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
              changes: Sequence = ()) -> float:
    with torch.no_grad(), run_scope(model, mode="eval"), edit(model, *changes):
        predicted = model(images.to(model_device(model))).argmax(1).cpu()
    return float((predicted == labels).float().mean())


@dataclass
class CueEdit:
    """Accuracy on unbiased images with a layer's cue channels switched off at the cue.

    Attributes:
        table: one row per (layer, channels off): ``layer``, ``channels``, ``share``,
            ``cue_channels_off`` (accuracy), ``random_off_mean`` / ``random_off_max`` (the
            control, over ``draws`` random sets of the same size).
        before: the cheater's accuracy on the unbiased images, unedited.
        references: e.g. ``{"honest model": 0.99, "cheater, no cue drawn": 0.5}``.
        ranking: per layer, the channels from most to least cue-carrying.
    """

    table: object
    before: float
    references: dict[str, float]
    ranking: dict[str, list[int]]

    def best_layer(self) -> str:
        """The layer where switching off a quarter of the channels gains most over random."""
        rows = self.table[self.table["share"] == 0.25]
        gain = rows["cue_channels_off"] - rows["random_off_mean"]
        return str(rows.loc[gain.idxmax(), "layer"])

    def figure(self):
        """Accuracy against the number of channels off, cue-ranked and random, per layer."""
        import matplotlib.pyplot as plt

        layers = list(dict.fromkeys(self.table["layer"]))
        figure, axes = plt.subplots(1, len(layers), figsize=(2.6 * len(layers), 2.8),
                                    sharey=True, squeeze=False)
        for axis, layer in zip(axes[0], layers):
            rows = self.table[self.table["layer"] == layer]
            axis.plot(rows["channels"], rows["cue_channels_off"], "o-", color="#c33",
                      label="cue channels off")
            axis.plot(rows["channels"], rows["random_off_mean"], "s--", color="#888",
                      label="random channels off")
            axis.axhline(self.before, color="black", linewidth=0.8, linestyle=":")
            for (name, value), colour in zip(self.references.items(), ("#36c", "#6a3")):
                axis.axhline(value, color=colour, linewidth=0.8, label=name)
            axis.set_title(layer, fontsize=9)
            axis.set_xlabel("channels off at the cue")
            axis.set_ylim(0, 1)
        axes[0][0].set_ylabel("accuracy, unbiased images")
        axes[0][-1].legend(fontsize=7, frameon=False, loc="upper left")
        figure.tight_layout()
        return figure


def cue_edit(model: nn.Module, layers: Sequence[str], biased: dict, unbiased: dict, *,
             honest: nn.Module | None = None, without_cue: dict | None = None,
             shares: Sequence[float] = SHARES, draws: int = 3, seed: int = 0) -> CueEdit:
    """Switch off each layer's most cue-carrying channels where the cue lies (see module doc).

    Args:
        model: the cheater.
        layers: the layers to try.
        biased: ``{"image", "cue_mask"}`` batches where the cue tells the class (for ranking).
        unbiased: ``{"image", "label", "cue_mask"}`` where the cue's colour is random.
        honest, without_cue: references: an honest model on ``unbiased``, and the cheater on
            ``without_cue`` (``{"image", "label"}``, the same world with no cue drawn).
        shares: fractions of each layer's channels to switch off; ``draws``: random sets each.
    """
    import pandas as pd

    region = unbiased["cue_mask"].any(0)
    if not region.any():
        raise InputError("the unbiased images have no cue: draw them with cue=True")
    images, labels = unbiased["image"], torch.as_tensor(unbiased["label"])
    generator = torch.Generator().manual_seed(seed)
    rows, ranking = [], {}
    for layer in layers:
        scores = cue_channels(model, layer, biased["image"], biased["cue_mask"])
        order = scores.argsort(descending=True)
        ranking[layer] = order.tolist()
        total = len(order)
        for share in shares:
            count = max(1, round(share * total))
            randoms = [_accuracy(model, images, labels, [Off(layer, torch.randperm(
                total, generator=generator)[:count].tolist(), where=region)])
                for _ in range(draws if count < total else 1)]
            rows.append({"layer": layer, "channels": count, "share": share,
                         "cue_channels_off": _accuracy(model, images, labels, [
                             Off(layer, order[:count].tolist(), where=region)]),
                         "random_off_mean": sum(randoms) / len(randoms),
                         "random_off_max": max(randoms)})
    references = {}
    if honest is not None:
        references["honest model"] = _accuracy(honest, images, labels)
    if without_cue is not None:
        references["cheater, no cue drawn"] = _accuracy(
            model, without_cue["image"], torch.as_tensor(without_cue["label"]))
    return CueEdit(pd.DataFrame(rows).round(4), _accuracy(model, images, labels), references,
                   ranking)

"""Data-randomization sanity check (Adebayo et al., 2018, "Sanity Checks for Saliency Maps").

A model trained on shuffled labels can only memorise: whatever its maps show, it is not the
evidence for the class. An explanation that depends on the relation between images and labels
must therefore differ between a model trained on the true labels and one trained on shuffled
labels; a method whose maps stay alike (high rank correlation) explains the input, not what
the model learned. ``data_randomization`` computes, per method and image, the Spearman rank
correlation between the two models' maps (of ``|map|`` by default, the paper's main figure, and
of the signed maps), for the same class in both: the true label when given, otherwise the
trained model's prediction (the paper explains the true label; the shuffled model's own
prediction would compare two different questions).

The bundled ``conceptnet_shuffled`` is ConceptNet's architecture trained on ConceptWorld with
the labels shuffled (``seethrough train --shuffle-labels``; 99.8 % train, 12.4 % validation
accuracy, chance 1/8): ConceptNet's data-randomization partner.

Example:
    >>> import torch, torchvision
    >>> first, second = (torchvision.models.resnet18(num_classes=4).eval() for _ in range(2))
    >>> result = data_randomization(first, second, torch.rand(2, 3, 64, 64), ["saliency"])
    >>> result.to_frame().columns.tolist()[:3]
    ['method', 'spearman_abs_mean', 'spearman_abs_std']
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from seethrough.core import Target, TargetSpec, check_images, run_scope
from seethrough.core.inputs import as_maps
from seethrough.core.ranks import spearman
from seethrough.errors import InputError
from seethrough.results import Result


@dataclass
class DataRandomization(Result):
    """Spearman correlations ``(M, N)`` of ``|map|`` (``absolute``) and of the signed maps
    (``signed``) between the trained and the shuffled-label model, per method and image."""

    methods: list[str]
    absolute: torch.Tensor
    signed: torch.Tensor

    def to_frame(self):
        """One row per method: mean and std over the images of both correlations."""
        import pandas as pd

        def stats(values: torch.Tensor) -> tuple[list[float], list[float]]:
            mean = values.nanmean(1)
            return mean.tolist(), (values - mean[:, None]).pow(2).nanmean(1).sqrt().tolist()

        (abs_mean, abs_std), (signed_mean, signed_std) = stats(self.absolute), stats(self.signed)
        return pd.DataFrame({"method": self.methods, "spearman_abs_mean": abs_mean,
                             "spearman_abs_std": abs_std, "spearman_signed_mean": signed_mean,
                             "spearman_signed_std": signed_std,
                             "images": [int(row.isfinite().sum()) for row in self.absolute]})

    def plot(self):
        """Mean rank correlation per method (bars: ``|map|``, dots: signed), lower is better."""
        from matplotlib.figure import Figure

        frame = self.to_frame()
        fig = Figure(figsize=(6.0, 0.9 + 0.35 * len(frame)))
        ax = fig.add_subplot()
        rows = range(len(frame))
        ax.barh(rows, frame["spearman_abs_mean"], xerr=frame["spearman_abs_std"],
                color="#d62728", alpha=0.7, label="|map|")
        ax.plot(frame["spearman_signed_mean"], rows, "ko", markersize=4, label="signed map")
        ax.set_yticks(rows, frame["method"], fontsize=8)
        ax.invert_yaxis()
        ax.axvline(0, color="black", linewidth=0.5)
        ax.set_xlim(-1.05, 1.05)
        ax.set_xlabel("Spearman: trained vs shuffled-label model (lower is better)")
        ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        return fig

    def _settings(self) -> dict:
        return {"methods": self.methods}

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {"absolute": self.absolute, "signed": self.signed}

    @classmethod
    def _from_saved(cls, settings: dict, tensors: dict[str, torch.Tensor]) -> DataRandomization:
        return cls(list(settings["methods"]), tensors["absolute"], tensors["signed"])


def data_randomization(model: nn.Module, shuffled: nn.Module, images: torch.Tensor,
                       methods: Sequence[str], target: TargetSpec = "predicted", *,
                       seed: int = 0, batch_size: int = 32,
                       options: dict[str, dict] | None = None) -> DataRandomization:
    """Each method's maps for ``model`` and for ``shuffled`` (the same architecture trained on
    shuffled labels), compared per image by Spearman rank correlation (see the module doc).

    ``target``: the class explained in both models (labels, an index, ``"predicted"``: the
    trained model's prediction); ``options``: method -> its options for ``seethrough.attribute``.
    The random generator is seeded with ``seed`` before each method's maps, so stochastic
    methods compare like with like; the caller's random state is left untouched.
    """
    from seethrough.attribution import attribute

    if isinstance(methods, str):
        methods = [methods]
    if not methods:
        raise InputError("give at least one attribution method to compare")
    images = check_images(images, model).detach()
    check_images(images, shuffled)
    goal = Target.of(target, len(images))
    if goal.is_class:
        with run_scope(model):
            goal.resolve(model, images, batch_size)
        target = goal.classes.to(images.device)
    options = options or {}
    devices = [images.device.index or 0] if images.device.type == "cuda" else []

    def maps_of(net: nn.Module, method: str) -> torch.Tensor:
        torch.manual_seed(seed)
        made = attribute(net, images, target=target, method=method, batch_size=batch_size,
                         **options.get(method, {})).maps
        return as_maps(made, size=images.shape[-2:], count=len(images)).cpu()

    absolute, signed = [], []
    with torch.random.fork_rng(devices=devices):
        for method in methods:
            trained, memorizer = maps_of(model, method), maps_of(shuffled, method)
            absolute.append(spearman(trained.abs(), memorizer.abs()))
            signed.append(spearman(trained, memorizer))
    return DataRandomization(list(methods), torch.stack(absolute), torch.stack(signed))


__all__ = ["DataRandomization", "data_randomization"]

"""Do unit detectors survive attacks? Network Dissection on adversarial images against clean
ones (the robustness question of the Network Dissection slides).

Each batch of the concept dataset is attacked on its way into the model (``dissect``'s
``transform``), untargeted at the model's own clean predictions, and the dissection runs again,
thresholds included: the table counts the unique detectors per layer and category.

Example:
    >>> frame = detectors_under_attack(net, ["features.block5"], world, ["fgsm"])  # doctest: +SKIP
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from seethrough.adversarial.attacks import attack


def attack_transform(model: nn.Module, method: str, *, seed: int = 0, **options):
    """A dissection ``transform`` that replaces each batch by its ``method`` adversarial images
    (labels unchanged; the seed comes from the batch's first dataset index, so runs repeat
    exactly, and shards of whole batches agree with one run)."""
    def attacked(images: torch.Tensor, labels, indices: torch.Tensor):
        return attack(model, images, method=method, seed=seed + int(indices[0]),
                      **options).images, labels

    settings = "_".join(f"{key}{value}" for key, value in sorted(options.items()))
    attacked.__name__ = f"attack_{method}_{seed}_{settings}"
    return attacked


def detectors_under_attack(model: nn.Module, layers: Sequence[str], dataset,
                           methods: Sequence[str], *, attack_options: dict | None = None,
                           **dissect_options):
    """Unique detectors per layer and category on clean images (``images="clean"``) and on
    each method's adversarial images: a DataFrame images, layer, category, unique_detectors,
    detector_units."""
    import pandas as pd

    from seethrough.dissection import dissect

    frames = []
    for method in (None, *methods):
        transform = (None if method is None
                     else attack_transform(model, method, **(attack_options or {})))
        counts = dissect(model, layers, dataset, transform=transform,
                         **dissect_options).unique_detectors()
        counts.insert(0, "images", method or "clean")
        frames.append(counts)
    return pd.concat(frames, ignore_index=True)

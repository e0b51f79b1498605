"""Rank attribution methods on one batch: every score, the sanity check and the time per image.

Example:
    >>> import torch, torchvision
    >>> from seethrough.attribution.compare import run_methods
    >>> model = torchvision.models.resnet18(num_classes=4).eval()
    >>> x = torch.rand(2, 3, 32, 32)
    >>> results = run_methods(model, x, ["saliency", "gradcam"], progress=False)
    >>> list(score_methods(model, x, results, step=256, progress=False).method)
    ['saliency', 'gradcam']
"""
from __future__ import annotations

import torch
from torch import nn


def score_methods(model: nn.Module, images: torch.Tensor, results: dict, *, masks=None,
                  sanity_images: int = 0,
                  step: int | None = None, batch_size: int = 64, progress: bool | None = None):
    """One row per method: the mean of each score over the images, and seconds per image.

    ``sanity`` (with ``sanity_images > 0``) is the mean Spearman correlation between the maps of
    the model and of a copy with every parameter re-initialised (Adebayo et al.'s cascade run to
    the bottom, block by block): lower is better, near 1 means the map ignores the model.
    ``step`` is the deletion / insertion step in pixels (default: one row).
    """
    import pandas as pd

    from seethrough.evaluation import evaluate, model_randomization

    rows = []
    for name, (result, seconds) in results.items():
        scores = evaluate(model, images, result, result.target, masks=masks, step=step,
                          batch_size=batch_size, progress=False).mean()
        row = {"method": name, **scores, "seconds_per_image": seconds / len(images)}
        if sanity_images:
            options = {k: v[:sanity_images] if _per_image(v, len(images)) else v  # e.g. neurons
                       for k, v in result.options.items() if k != "batch_size"}
            blocks = [n for n, m in model.named_children() if any(True for _ in m.parameters())]
            check = model_randomization(model, images[:sanity_images], name,
                                        result.target[:sanity_images], layers=blocks[::-1] or None,
                                        progress=False, **options)
            row["sanity_spearman"] = float(check.mean()[-1])
        rows.append(row)
    return pd.DataFrame(rows)


def _per_image(value, count: int) -> bool:
    """Whether a recorded option holds one entry per image (a list as long as the images)."""
    return isinstance(value, list) and len(value) == count


def ranked(frame):
    order = frame.sort_values("pointing_game", ascending=False, kind="stable", ignore_index=True)
    columns = ["method", "pointing_game", "energy_pointing_game", "mask_iou", "deletion",
               "insertion", "sanity_spearman", "seconds_per_image"]
    return order[[c for c in columns if c in order]]

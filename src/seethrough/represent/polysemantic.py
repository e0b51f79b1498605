"""Polysemantic units: units that detect several concepts, from a dissection's full unit x concept
IoU matrix, and their top patches grouped by the concept each patch shows.

A unit is polysemantic when more than one concept passes the detector threshold (Network
Dissection's IoU > 0.04). Its score is the effective number of concepts it detects,
``exp(entropy)`` of its above-threshold IoUs normalised to sum to one: 0 for no concept, 1 for
one, 2 for two equally strong concepts, and in between when one dominates.

Example:
    >>> import torch
    >>> iou = torch.tensor([[0.10, 0.01, 0.00], [0.08, 0.07, 0.00], [0.0, 0.0, 0.01]])
    >>> frame = polysemantic_units(iou, ["red", "circle", "star"])
    >>> frame[["unit", "concepts", "count"]].values.tolist()
    [[1, 'red, circle', 2], [0, 'red', 1], [2, '', 0]]
    >>> round(float(frame.score[0]), 3)
    1.996
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from seethrough.errors import InputError

if TYPE_CHECKING:
    from seethrough.represent.patches import Patches
    from seethrough.represent.receptive import FieldMap

#: Network Dissection's detector threshold
IOU_THRESHOLD = 0.04


def effective_concepts(ious: torch.Tensor) -> float:
    """``exp(entropy)`` of positive IoUs normalised to sum to one (0 when there are none)."""
    ious = ious[ious > 0].double()
    if len(ious) == 0:
        return 0.0
    share = ious / ious.sum()
    return float(torch.exp(-(share * share.log()).sum()))


def polysemantic_units(iou: torch.Tensor, names: Sequence[str], *,
                       categories: Sequence[str] | None = None,
                       threshold: float = IOU_THRESHOLD):
    """Per unit the concepts above ``threshold`` (strongest first), their count and score.

    Args:
        iou: ``(units, concepts)`` IoU (``Dissection.iou(layer)``).
        names: the concept names (``Dissection.vocabulary.names``).
        categories: each concept's category; adds ``categories``, how many different ones a
            unit's concepts span (a red-or-circle unit spans two; a square-or-diamond one, one).

    Returns a DataFrame sorted by score: unit, concepts, ious, count, score, polysemantic
    (and categories).
    """
    import pandas as pd

    iou = torch.as_tensor(iou).detach().float().cpu()
    if iou.ndim != 2 or iou.shape[1] != len(names):
        raise InputError(f"iou must be (units, concepts) with one column per name: got "
                         f"{tuple(iou.shape)} for {len(names)} names")
    rows = []
    for unit, row in enumerate(iou):
        order = row.argsort(descending=True, stable=True)
        above = [int(c) for c in order if row[c] > threshold and names[int(c)] != "none"]
        values = row[above] if above else torch.zeros(0)
        rows.append({"unit": unit, "concepts": ", ".join(names[c] for c in above),
                     "ious": ", ".join(f"{float(v):.3f}" for v in values),
                     "count": len(above), "score": effective_concepts(values),
                     "polysemantic": len(above) > 1,
                     **({"categories": len({categories[c] for c in above})}
                        if categories is not None else {})})
    frame = pd.DataFrame(rows)
    return frame.sort_values(["score", "unit"], ascending=[False, True], kind="stable") \
        .reset_index(drop=True)


def concept_coverage(sample: dict, box: tuple[int, int, int, int],
                     concepts: Sequence[tuple[str, int]]) -> torch.Tensor:
    """Share of the pixels of ``box`` (top, left, bottom, right) labelled with each concept
    ``(category, label)`` in a concept-dataset sample: its ``masks`` ``{category: (H, W) or
    (L, H, W)}``, or for an image-level category (a key of the sample, e.g. ``scene``) 1 or 0."""
    top, left, bottom, right = box
    shares = []
    for category, label in concepts:
        if category not in sample.get("masks", {}):
            shares.append(float(label in torch.as_tensor(sample.get(category, -1)).flatten()))
            continue
        mask = torch.as_tensor(sample["masks"][category])[..., top:bottom, left:right]
        hit = (mask == label).any(0) if mask.ndim == 3 else mask == label
        shares.append(float(hit.float().mean()) if hit.numel() else 0.0)
    return torch.tensor(shares)


def group_by_concept(patches: Patches, row: int, data, fields: FieldMap,
                     concepts: Sequence[tuple[str, int, str]], *, k: int = 6
                     ) -> dict[str, torch.Tensor]:
    """The top patches of unit row ``row`` grouped by the concept most present in each one's
    receptive field (among ``concepts``: ``(category, label, name)``); at most ``k`` each, in
    order of activation. Patches showing none of the concepts are left out."""
    if not concepts:
        raise InputError("name at least one concept to group the patches by")
    groups: dict[str, list[torch.Tensor]] = {name: [] for _, _, name in concepts}
    pairs = [(category, label) for category, label, _ in concepts]
    for rank, index in enumerate(patches.indices[row].tolist()):
        position = tuple(int(p) for p in patches.positions[row, rank])
        coverage = concept_coverage(data[index], fields.box(position), pairs)
        if float(coverage.max()) <= 0:
            continue
        name = concepts[int(coverage.argmax())][2]
        if len(groups[name]) < k:
            groups[name].append(patches.crops[row, rank])
    return {name: torch.stack(crops) for name, crops in groups.items() if crops}

"""What a generated image shows, read by the classifiers the GAN family measures with.

An attribute is ``"category:name"``: ``shape:circle`` (ConceptNet's probability that the main
object is a circle), ``colour:red`` and ``texture:dots`` (the share of the image's pixels the
segmenter gives that label), ``scene:sky`` (the segmenter's scene probability). Each gives one
score per image, continuous, so that InterFaceGAN's boundaries can be fitted on the extremes and
a walk along a direction can be measured as a curve.

Example:
    >>> parse_attribute("colour:red")
    ('colour', 'red', 1)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seethrough.errors import InputError

#: the attribute categories and what reads each
READERS = {"shape": "conceptnet", "colour": "segmenter", "texture": "segmenter", "scene": "segmenter"}


def parse_attribute(attribute: str) -> tuple[str, str, int]:
    """``(category, name, label)`` of ``"category:name"`` (label as in ConceptWorld's masks;
    for ``shape``, ConceptNet's class index + 1, the same numbering)."""
    from seethrough.data import ConceptWorld

    category, _, name = attribute.partition(":")
    if category not in READERS or name not in ConceptWorld.categories.get(category, [])[1:]:
        examples = "shape:circle, colour:red, texture:dots, scene:sky"
        raise InputError(f"unknown attribute {attribute!r}: use category:name with category one of "
                         f"{', '.join(READERS)} and a ConceptWorld name (e.g. {examples})")
    return category, name, ConceptWorld.categories[category].index(name)


@torch.no_grad()
def attribute_scores(images: torch.Tensor, attributes: list[str], *, segmenter: nn.Module,
                     classifier: nn.Module, batch_size: int = 250) -> dict[str, torch.Tensor]:
    """Scores (N,) in [0, 1] of each attribute on images (N, 3, 64, 64) in [0, 1]."""
    parsed = {attribute: parse_attribute(attribute) for attribute in attributes}
    scores: dict[str, list[torch.Tensor]] = {attribute: [] for attribute in attributes}
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size]
        shapes = F.softmax(classifier(batch), 1) if any(
            c == "shape" for c, _, _ in parsed.values()) else None
        logits = segmenter(batch) if any(c != "shape" for c, _, _ in parsed.values()) else None
        for attribute, (category, _, label) in parsed.items():
            if category == "shape":
                value = shapes[:, label - 1]
            elif category == "scene":
                value = F.softmax(logits["scene"], 1)[:, label]
            else:
                value = (logits[category].argmax(1) == label).float().mean(dim=(1, 2))
            scores[attribute].append(value)
    return {attribute: torch.cat(values) for attribute, values in scores.items()}


__all__ = ["READERS", "attribute_scores", "parse_attribute"]

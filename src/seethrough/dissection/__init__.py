"""Network Dissection: which concept does each unit detect, and are concepts held by units?

Example:
    >>> from seethrough.dissection import dissect, QuantileSketch, IoUCounter   # doctest: +SKIP
"""
from seethrough.dissection.counts import IoUCounter, TopImages
from seethrough.dissection.labels import LabelBatch, Vocabulary
from seethrough.dissection.quantile import QuantileSketch
from seethrough.dissection.result import Dissection, LayerDissection
from seethrough.dissection.run import dissect, layer_activations, unit_masks

__all__ = [
           "Dissection",
           "IoUCounter",
           "LabelBatch",
           "LayerDissection",
           "QuantileSketch",
           "TopImages",
           "Vocabulary",
           "dissect",
           "layer_activations",
           "unit_masks",
]

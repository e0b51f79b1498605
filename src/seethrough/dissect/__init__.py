"""Network Dissection: which concept does each unit detect, and are concepts held by units?

Example:
    >>> from seethrough.dissect import dissect, QuantileSketch, IoUCounter   # doctest: +SKIP
"""
from seethrough.callable_package import make_callable
from seethrough.dissect.counts import IoUCounter, TopImages
from seethrough.dissect.labels import LabelBatch, Vocabulary
from seethrough.dissect.quantile import QuantileSketch
from seethrough.dissect.result import Dissection, LayerDissection
from seethrough.dissect.run import dissect, layer_activations, unit_masks

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

make_callable(__name__, "dissect")

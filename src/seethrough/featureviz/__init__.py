"""Feature visualization by optimization, and the image synthesis built on the same machinery.

Example:
    >>> import seethrough
    >>> from seethrough import objectives as obj
    >>> model = seethrough.load_model("mobilenet_v2")                        # doctest: +SKIP
    >>> result = seethrough.visualize(model, obj.channel("features.6", [0, 1, 2]))  # doctest: +SKIP
    >>> result.images.shape                                                  # doctest: +SKIP
    torch.Size([3, 3, 224, 224])
"""
from __future__ import annotations

from seethrough.featureviz import objectives, regularizers
from seethrough.featureviz.atlas import Atlas, activation_atlas
from seethrough.featureviz.objectives import Objective
from seethrough.featureviz.params import ImageParam, color_correlation_sqrt
from seethrough.featureviz.regularizers import yosinski
from seethrough.featureviz.render import Probe, RawPixelParam, Renderer, Visualization, visualize
from seethrough.featureviz.transforms import Transforms
from seethrough.featureviz.views import NeuronGroups, neuron_groups

__all__ = [
           "Atlas",
           "ImageParam",
           "NeuronGroups",
           "Objective",
           "Probe",
           "RawPixelParam",
           "Renderer",
           "Transforms",
           "Visualization",
           "activation_atlas",
           "color_correlation_sqrt",
           "neuron_groups",
           "objectives",
           "regularizers",
           "visualize",
           "yosinski",
]

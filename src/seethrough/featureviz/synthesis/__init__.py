"""Image synthesis on the feature-visualization machinery: DeepDream, feature inversion,
texture synthesis and style transfer; and the non-parametric texture baseline (Efros & Leung).

Example:
    >>> from seethrough.featureviz.synthesis import deepdream, invert, synthesize_texture, transfer_style

Texture synthesis, style transfer and inversion take ``preset="paper"`` (the default: the papers'
losses, constants and optimizers, see each module) or ``preset="fast"`` (the earlier defaults:
normalized losses, Adam, Fourier or sigmoid parameterizations).
"""
from __future__ import annotations

from seethrough.core.layer_table import stage_layers
from seethrough.featureviz.synthesis.deepdream import deepdream
from seethrough.featureviz.synthesis.inversion import invert
from seethrough.featureviz.synthesis.nonparametric import synthesize_texture_nonparametric
from seethrough.featureviz.synthesis.style import transfer_style
from seethrough.featureviz.synthesis.texture import LBFGS_OPTIONS, synthesize_texture

__all__ = ["LBFGS_OPTIONS", "deepdream", "invert", "stage_layers", "synthesize_texture",
           "synthesize_texture_nonparametric", "transfer_style"]

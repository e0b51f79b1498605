"""Image synthesis on the feature-visualization machinery: DeepDream, feature inversion,
texture synthesis and style transfer.

Example:
    >>> from seethrough.featureviz.synthesis import deepdream, invert, synthesize_texture, transfer_style
"""
from __future__ import annotations

from seethrough.core.layer_table import stage_layers
from seethrough.featureviz.synthesis.deepdream import deepdream
from seethrough.featureviz.synthesis.inversion import invert
from seethrough.featureviz.synthesis.style import transfer_style
from seethrough.featureviz.synthesis.texture import synthesize_texture

__all__ = ["deepdream", "invert", "stage_layers", "synthesize_texture", "transfer_style"]

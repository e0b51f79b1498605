"""Feed-forward style transfer: one forward pass instead of an optimisation per image.

Johnson, Alahi & Fei-Fei (2016) train a transformation network on a perceptual loss; Ulyanov,
Vedaldi & Lempitsky (2016) show instance norm beats batch norm there; Dumoulin, Shlens & Kudlur
(2017) learn N styles in one network with conditional instance norm (a scale and shift per
style) and mix them by interpolation. Two trained stylizers ship with seethrough.

Example:
    >>> import torch
    >>> stylizer = load_stylizer("eight_styles")
    >>> stylize(stylizer, torch.rand(1, 3, 64, 64), style=[0.5, 0.5, 0, 0, 0, 0, 0, 0]).shape
    torch.Size([1, 3, 64, 64])
"""
from __future__ import annotations

from seethrough.featureviz.stylizers.network import ConditionalInstanceNorm, TransformNet
from seethrough.featureviz.stylizers.perceptual import PerceptualLoss
from seethrough.featureviz.stylizers.shipped import list_stylizers, load_stylizer, save_stylizer
from seethrough.featureviz.stylizers.styles import STYLES, style_images
from seethrough.featureviz.stylizers.training import (
    Stylizer,
    add_style,
    compare_norms,
    stylize,
    train_stylizer,
)

__all__ = [
    "STYLES", "ConditionalInstanceNorm", "PerceptualLoss", "Stylizer", "TransformNet", "add_style",
    "compare_norms", "list_stylizers", "load_stylizer", "save_stylizer", "style_images", "stylize",
    "train_stylizer",
]

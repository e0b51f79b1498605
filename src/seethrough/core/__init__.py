"""The spine every family stands on: one run scope, one target, one input check, one capture of
activations and gradients, one blur, one device lookup and one registry shape.

Example:
    >>> from seethrough.core import Target, check_images, model_device, run_scope
"""
from seethrough.core.blur import gaussian_blur
from seethrough.core.capture import layer_gradients
from seethrough.core.device import model_device
from seethrough.core.inputs import check_images, check_latents, expected_channels
from seethrough.core.registry import Registry
from seethrough.core.scope import run_scope
from seethrough.core.targets import Target, TargetSpec, unit

__all__ = [
    "Registry", "Target", "TargetSpec", "check_images", "check_latents", "expected_channels",
    "gaussian_blur", "layer_gradients", "model_device", "run_scope", "unit",
]

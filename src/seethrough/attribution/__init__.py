"""Attribution: where in an image is the evidence for a model's output.

``attribute(model, images, target, method=...)`` runs any method of the registry ``METHODS``
and returns an ``Attribution`` with ``maps`` of shape (N, 1, H, W) at input resolution (raw,
sign kept; ``.normalized()`` for display) and the method's own ``raw`` map where it has one.

Example:
    >>> import torch, torchvision
    >>> model = torchvision.models.resnet18(num_classes=10).eval()
    >>> result = attribute(model, torch.rand(2, 3, 64, 64), method="gradcam")
    >>> result.maps.shape, result.options["layer"]
    (torch.Size([2, 1, 64, 64]), 'layer4')
"""
from __future__ import annotations

import torch
from torch import nn

from seethrough.attribution import (  # noqa: F401  (each module adds its methods to METHODS)
    cam_variants,
    cams,
    conductance,
    excitation,
    fullgrad,
    gradients,
    optimized_masks,
    perturbation,
    propagation,
    reference,
    scorecam,
    smoothgrad,
    surrogates,
)
from seethrough.attribution.layers import default_layer
from seethrough.attribution.registry import METHODS, register
from seethrough.attribution.result import Attribution
from seethrough.core import Target, TargetSpec
from seethrough.errors import InputError

__all__ = ["METHODS", "Attribution", "Target", "attribute", "default_layer", "register"]


def attribute(
    model: nn.Module, images: torch.Tensor, target: TargetSpec = "predicted", *,
    method: str = "saliency", batch_size: int = 32, **options,
) -> Attribution:
    """Explain ``model``'s output for ``images`` with one attribution method.

    Args:
        model: any ``nn.Module`` taking (N, C, H, W) images; it runs in the mode you left it
            in (call ``model.eval()`` first) and is left exactly as it was.
        images: (N, C, H, W) float tensor (models from ``load_model`` take [0, 1] pixels).
        target: class index (int, list or tensor, one per image), ``"predicted"`` (default),
            or a function ``output -> (N,) scores`` for any other output (multi-output,
            segmentation, detection).
        method: a name in ``METHODS``: saliency, input_x_gradient, integrated_gradients,
            smoothgrad, guided_backprop, deconvnet, cam, gradcam, gradcam_plus_plus,
            hirescam, xgradcam, layercam, eigencam, ablationcam, scorecam, guided_gradcam,
            occlusion, rise, meaningful_perturbation, extremal_perturbation.
        batch_size: most images (or perturbed copies, or path points) per forward pass.
        **options: the method's own options (see its docstring), e.g. ``layer="layer3"``,
            ``n_steps=50``, ``base="integrated_gradients"``.
    """
    if method not in METHODS:
        import difflib

        close = difflib.get_close_matches(str(method), METHODS, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise InputError(f"unknown attribution method {method!r}{hint} (known: {', '.join(METHODS)})")
    return METHODS[method](model, images, target, batch_size=batch_size, **options)

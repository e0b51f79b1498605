"""Several attribution methods on one batch: which to run, with what settings, and how long each
took. The building blocks of the attribution section, the ranking in ``evaluation`` and
``seethrough attribute``.

Expensive methods run with smaller settings than the papers' so a CPU report takes minutes:
``report_options(quick)`` lists them (they are recorded in the sections' notes).

Example:
    >>> import torch, torchvision
    >>> model = torchvision.models.resnet18(num_classes=4).eval()
    >>> results = run_methods(model, torch.rand(1, 3, 32, 32), ["saliency", "gradcam"], progress=False)
    >>> sorted(results), results["gradcam"][0].maps.shape
    (['gradcam', 'saliency'], torch.Size([1, 1, 32, 32]))
"""
from __future__ import annotations

import inspect
import time
from collections.abc import Sequence

import torch
from torch import nn

from seethrough.errors import InputError
from seethrough.progress import progress_bar

#: methods that optimise a mask for hundreds of steps: left out unless asked for by name
SLOW_METHODS = ("meaningful_perturbation", "extremal_perturbation")


def report_options(quick: bool = False, image_size: int = 64) -> dict[str, dict]:
    """Per-method options for a CPU report, reduced from the papers' defaults.

    Perturbation methods cost one forward pass per mask, window or channel, so at ImageNet
    size (``image_size`` > 128) they get fewer masks, non-overlapping occlusion windows and
    Score-CAM on the 128 most active channels.
    """
    large = image_size > 128
    options = {
        "integrated_gradients": {"n_steps": 16 if quick else 50},
        "smoothgrad": {"n_samples": 8 if quick else 25},
        "rise": {"n_masks": 500 if quick else 2000},
        "meaningful_perturbation": {"iterations": 60 if quick else 150},
        "extremal_perturbation": {"iterations": 100 if quick else 200},
    }
    if large:
        window = image_size // 7
        options["rise"] = {"n_masks": 250 if quick else 1000}
        options["occlusion"] = {"window": window, "stride": window}
        options["scorecam"] = {"top_channels": 64 if quick else 128}
    return options


def method_names(methods: str | Sequence[str] | None) -> list[str]:
    """Resolve ``"all"`` / ``None`` (every method but the slow ones) / a comma list / a list."""
    from seethrough.attribution import METHODS

    if methods is None or methods == "fast":
        return [name for name in METHODS if name not in SLOW_METHODS]
    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    if list(methods) == ["all"]:
        return list(METHODS)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise InputError(f"unknown method(s) {', '.join(unknown)}; choose from all, {', '.join(METHODS)}")
    return list(methods)


def accepts(method: str, option: str) -> bool:
    """Whether a registered method takes ``option`` (e.g. ``layer``)."""
    from seethrough.attribution import METHODS

    return option in inspect.signature(METHODS[method]).parameters


def run_methods(model: nn.Module, images: torch.Tensor, methods: Sequence[str], *,
                target="predicted", layer: str | None = None, options: dict | None = None,
                batch_size: int = 32, progress: bool | None = None) -> dict[str, tuple]:
    """``{method: (Attribution, seconds)}`` for one batch; ``layer`` goes to the layer methods."""
    from seethrough.attribution import attribute

    options = options or {}
    results = {}
    for name in progress_bar(methods, "attribution methods", unit="method", progress=progress):
        extra = dict(options.get(name, {}))
        if layer is not None and accepts(name, "layer"):
            extra["layer"] = layer
        if name == "smoothgrad" and layer is not None:
            extra.pop("layer", None)
        start = time.perf_counter()
        result = attribute(model, images, target, method=name, batch_size=batch_size, **extra)
        results[name] = (result, time.perf_counter() - start)
    return results

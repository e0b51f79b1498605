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

#: method -> (family, when to use it): the report's guide and the README's method table
GUIDE = {
    "saliency": ("gradients", "the cheapest first look: one backward pass"),
    "input_x_gradient": ("gradients", "the gradient weighted by the pixel: first-order contribution"),
    "integrated_gradients": ("gradients", "contributions that add up to f(x) - f(baseline)"),
    "smoothgrad": ("gradients", "a less noisy version of any gradient method"),
    "guided_backprop": ("gradients", "sharp pictures of the input's edges; not class-specific"),
    "deconvnet": ("gradients", "what a unit's pattern looks like in the input; not class-specific"),
    "deeplift": ("reference", "exact contributions against a reference image, one backward pass"),
    "deeplift_shap": ("reference", "DeepLIFT averaged over several reference images"),
    "gradient_shap": ("reference", "expected gradients over random references"),
    "layer_conductance": ("reference", "which units of a layer carry the decision"),
    "neuron_conductance": ("reference", "which pixels drive one unit's share of the decision"),
    "lrp": ("propagation", "conserved relevance; sharp and class-specific on CNNs"),
    "excitation_backprop": ("propagation", "top-down attention as probabilities"),
    "contrastive_excitation_backprop": ("propagation", "attention that separates the class from the others"),
    "fullgrad": ("propagation", "input gradients plus every layer's bias gradients: complete"),
    "cam": ("CAM", "nets ending in global pooling + linear: the exact evidence per location"),
    "gradcam": ("CAM", "coarse, class-specific map of any conv layer: where the object is"),
    "gradcam_plus_plus": ("CAM", "Grad-CAM that covers several instances of the class"),
    "hirescam": ("CAM", "Grad-CAM without averaging the gradients: faithful to the layer"),
    "xgradcam": ("CAM", "Grad-CAM weights that satisfy sensitivity and conservation"),
    "layercam": ("CAM", "fine maps from early layers too (positive gradients per location)"),
    "eigencam": ("CAM", "class-agnostic: the dominant pattern of a layer"),
    "scorecam": ("CAM", "gradient-free channel weights: the score of each masked image"),
    "ablationcam": ("CAM", "gradient-free channel weights: the drop when a channel is removed"),
    "guided_gradcam": ("CAM", "Grad-CAM's localization with guided backprop's detail"),
    "occlusion": ("perturbation", "what the output loses when a patch is hidden; model-agnostic"),
    "rise": ("perturbation", "random masks: black-box saliency"),
    "meaningful_perturbation": ("perturbation", "the smallest blur that destroys the class"),
    "extremal_perturbation": ("perturbation", "the region of a set area that keeps the class best"),
    "lime": ("superpixels", "a local linear model of the output over superpixels"),
    "kernel_shap": ("superpixels", "Shapley values of superpixels by weighted regression"),
    "shapley_sampling": ("superpixels", "Shapley values of superpixels by sampled orders"),
    "feature_ablation": ("superpixels", "each superpixel removed in turn: deterministic, cheap"),
}

#: a quick report's methods: the classics and one of each newer family
QUICK_METHODS = ("saliency", "input_x_gradient", "integrated_gradients", "smoothgrad",
                 "guided_backprop", "deconvnet", "deeplift", "lrp", "cam", "gradcam",
                 "gradcam_plus_plus", "scorecam", "guided_gradcam", "occlusion", "rise",
                 "kernel_shap")


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
        "layer_conductance": {"n_steps": 16 if quick else 50},
        "neuron_conductance": {"n_steps": 8 if quick else 25},
        "lime": {"n_samples": 100 if quick else 500},
        "kernel_shap": {"n_samples": 100 if quick else 500},
        "shapley_sampling": {"n_samples": 2 if quick else 5},
    }
    if large:
        window = image_size // 7
        options["rise"] = {"n_masks": 250 if quick else 1000}
        options["occlusion"] = {"window": window, "stride": window}
        options["scorecam"] = {"top_channels": 64 if quick else 128}
    return options


def method_names(methods: str | Sequence[str] | None, *, quick: bool = False) -> list[str]:
    """Resolve ``"all"`` / ``None`` (every method but the slow ones; ``QUICK_METHODS`` when
    ``quick``) / a comma list / a list."""
    from seethrough.attribution import METHODS

    if methods is None and quick:
        return [name for name in QUICK_METHODS if name in METHODS]
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


def with_family(frame, *, group: bool = False):
    """``frame`` (a ``method`` column) with each method's family before it; ``group``: rows
    grouped by family in ``GUIDE``'s order (stable within a family)."""
    families = list(dict.fromkeys(family for family, _ in GUIDE.values()))
    family = frame["method"].map(lambda m: GUIDE.get(m, ("other", ""))[0])
    frame = frame.assign(family=family)
    if group:
        order = family.map(lambda f: families.index(f) if f in families else len(families))
        frame = frame.iloc[order.argsort(kind="stable")].reset_index(drop=True)
    return frame[["family", *[c for c in frame.columns if c != "family"]]]


def guide_frame(methods: Sequence[str]):
    """The guide for ``methods``: family, method and when to use it, grouped by family."""
    import pandas as pd

    frame = pd.DataFrame({"method": list(methods),
                          "when to use": [GUIDE.get(m, ("other", ""))[1] for m in methods]})
    return with_family(frame, group=True)


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

"""Scores for explanations: are the maps faithful to the model, and do they find the object?

Each score is a function returning one value per image:

* faithfulness: ``deletion``, ``insertion`` (RISE), ``model_randomization`` (sanity check)
* localization against ground truth: ``pointing_game``, ``energy_pointing_game``, ``mask_iou``

``evaluate`` runs several at once and returns a ``Scores`` table (``.to_frame()``, ``.mean()``);
``seethrough.evaluate`` is that function.

Example:
    >>> import seethrough                                                     # doctest: +SKIP
    >>> model = seethrough.load_model("conceptnet")                           # doctest: +SKIP
    >>> world = seethrough.data.ConceptWorld("val", length=16)                # doctest: +SKIP
    >>> x = torch.stack([s["image"] for s in world])                          # doctest: +SKIP
    >>> masks = torch.stack([s["object_mask"] for s in world])                # doctest: +SKIP
    >>> maps = seethrough.attribute(model, x, method="gradcam", layer="features")  # doctest: +SKIP
    >>> evaluate(model, x, maps, masks=masks).mean()                          # doctest: +SKIP
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from seethrough.core import Registry, Target, TargetSpec, check_images, run_scope
from seethrough.core.inputs import as_maps
from seethrough.core.ranks import spearman
from seethrough.errors import InputError
from seethrough.evaluation.complexity import complexity, sparseness
from seethrough.evaluation.data_randomization import DataRandomization, data_randomization
from seethrough.evaluation.faithfulness import (
    faithfulness_correlation,
    infidelity,
    noisy_linear_imputation,
    road,
    road_curve,
)
from seethrough.evaluation.localization import (
    energy_pointing_game,
    iou,
    mask_iou,
    pointing_game,
)
from seethrough.evaluation.perturbation import (
    area_under_curve,
    deletion,
    deletion_curve,
    insertion,
    insertion_curve,
)
from seethrough.evaluation.robustness_metrics import (
    local_lipschitz_estimate,
    max_sensitivity,
    random_logit,
    ssim,
)
from seethrough.evaluation.sanity import Randomization, model_randomization
from seethrough.results import Result

#: metric name -> (needs masks, higher is better)
METRICS: Registry[tuple[bool, bool]] = Registry("metric", {
    "deletion": (False, False),
    "insertion": (False, True),
    "pointing_game": (True, True),
    "energy_pointing_game": (True, True),
    "mask_iou": (True, True),
    "faithfulness_correlation": (False, True),
    "infidelity": (False, False),
    "road_morf": (False, False),
    "road_lerf": (False, True),
    "sparseness": (False, True),
    "complexity": (False, False),
    "max_sensitivity": (False, False),
    "local_lipschitz_estimate": (False, False),
    "random_logit": (False, False),
})
#: what ``evaluate`` runs when no ``metrics`` are named (the others cost many passes each)
DEFAULT_METRICS = ("deletion", "insertion", "pointing_game", "energy_pointing_game", "mask_iou")
#: metrics that re-explain perturbed inputs: they need the attribution method (``method=``)
EXPLAINING_METRICS = ("max_sensitivity", "local_lipschitz_estimate", "random_logit")


@dataclass
class Scores(Result):
    """Scores per image: ``values[metric]`` is a tensor ``(N,)``; ``targets`` the classes scored
    (``None`` for a callable or unit target)."""

    values: dict[str, torch.Tensor]
    targets: torch.Tensor | None
    method: str = ""
    higher_is_better: dict[str, bool] = field(default_factory=dict)

    def mean(self) -> dict[str, float]:
        """Mean of each metric over the images (images without an object are skipped)."""
        return {name: float(value.nanmean()) for name, value in self.values.items()}

    def to_frame(self):
        """One row per image: ``image``, ``target``, ``method`` and a column per metric."""
        import pandas as pd

        frame = pd.DataFrame({name: value.tolist() for name, value in self.values.items()})
        if self.targets is not None:
            frame.insert(0, "target", self.targets.tolist())
        frame.insert(0, "image", range(len(frame)))
        if self.method:
            frame.insert(1, "method", self.method)
        return frame

    def plot(self):
        """Bar chart of the mean of each metric (arrows: which direction is better)."""
        from seethrough.results import bar_figure

        means = self.mean()
        arrows = {True: " \u2191", False: " \u2193"}
        labels = [name + arrows.get(self.higher_is_better.get(name), "") for name in means]
        return bar_figure(labels, list(means.values()), ylabel="mean over images",
                          title=f"scores of {self.method}" if self.method else "scores")

    def _settings(self) -> dict:
        return {"method": self.method, "metrics": list(self.values),
                "higher_is_better": self.higher_is_better}

    def _tensors(self) -> dict[str, torch.Tensor]:
        tensors = {f"values/{name}": value for name, value in self.values.items()}
        if self.targets is not None:
            tensors["targets"] = self.targets
        return tensors

    @classmethod
    def _from_saved(cls, settings: dict, tensors: dict[str, torch.Tensor]) -> Scores:
        values = {name: tensors[f"values/{name}"] for name in settings["metrics"]}
        return cls(values, tensors.get("targets"), settings.get("method", ""),
                   dict(settings.get("higher_is_better", {})))


def evaluate(model: nn.Module, images: torch.Tensor, maps, target: TargetSpec = "predicted", *,
             masks=None, metrics: Sequence[str] | None = None, batch_size: int = 64,
             step: int | None = None, tolerance: int | None = None, top: float = 0.2,
             progress: bool | None = None, method: str | None = None,
             method_options: dict | None = None) -> Scores:
    """Score maps (a tensor ``(N, 1, H, W)`` or an ``Attribution``) with several metrics.

    Args:
        target: what the maps explain; by default the target of the ``Attribution`` given as
            ``maps`` (its classes, or its callable or unit), else the predicted class.
        masks: ground-truth object masks ``(N, H, W)``; needed by the localization metrics.
        metrics: names from ``METRICS``; default: deletion and insertion, plus the localization
            metrics when ``masks`` are given.
        batch_size, step: for deletion / insertion; ``tolerance`` for the pointing game; ``top``
            (fraction of pixels kept) for ``mask_iou``. The other metrics run with their defaults.
        method, method_options: the attribution method (a name in ``METHODS``) and its options,
            for the metrics that re-explain perturbed inputs (``EXPLAINING_METRICS``); by default
            those of the ``Attribution`` given as ``maps``.
    """
    images = check_images(images, model)
    goal = getattr(maps, "goal", None)
    if not (isinstance(target, str) and target == "predicted" and goal is not None):
        goal = Target.of(target, len(images))
    if metrics is None:
        metrics = [name for name in DEFAULT_METRICS
                   if masks is not None or not METRICS.get(name)[0]]
    needs_masks = [METRICS.get(name)[0] for name in metrics]  # unknown names raise here
    if masks is None and any(needs_masks):
        raise InputError("pointing_game, energy_pointing_game and mask_iou need masks=(N, H, W)")
    maps_method = getattr(maps, "method", "") or ""
    explainer = method or maps_method
    if method_options is None:
        method_options = (dict(getattr(maps, "options", None) or {})
                          if explainer == maps_method else {})
    if not explainer and any(metric in EXPLAINING_METRICS for metric in metrics):
        raise InputError(f"{', '.join(EXPLAINING_METRICS)} re-explain perturbed inputs: pass "
                         "method= (an attribution method name) or maps as an Attribution")
    maps = as_maps(maps, size=images.shape[-2:], count=len(images))
    if goal.is_class and not goal.known:
        with run_scope(model):
            goal.resolve(model, images, batch_size)
    functions = {
        "deletion": lambda: deletion(model, images, maps, goal, step=step, batch_size=batch_size,
                                     progress=progress),
        "insertion": lambda: insertion(model, images, maps, goal, step=step,
                                       batch_size=batch_size, progress=progress),
        "pointing_game": lambda: pointing_game(maps, masks, tolerance=tolerance),
        "energy_pointing_game": lambda: energy_pointing_game(maps, masks),
        "mask_iou": lambda: mask_iou(maps, masks, top=top),
        "faithfulness_correlation": lambda: faithfulness_correlation(
            model, images, maps, goal, batch_size=batch_size),
        "infidelity": lambda: infidelity(model, images, maps, goal, batch_size=batch_size),
        "road_morf": lambda: road(model, images, maps, goal, order="morf", batch_size=batch_size),
        "road_lerf": lambda: road(model, images, maps, goal, order="lerf", batch_size=batch_size),
        "sparseness": lambda: sparseness(maps),
        "complexity": lambda: complexity(maps),
        **{metric: (lambda function=function: function(
            model, images, goal, method=explainer, batch_size=batch_size,
            method_options=method_options))
           for metric, function in (("max_sensitivity", max_sensitivity),
                                    ("local_lipschitz_estimate", local_lipschitz_estimate),
                                    ("random_logit", random_logit))},
    }
    values = {name: functions[name]().cpu() for name in metrics}
    return Scores(values=values, targets=goal.classes.clone() if goal.is_class else None,
                  method=maps_method, higher_is_better={name: METRICS.get(name)[1] for name in metrics})


__all__ = [
    "DEFAULT_METRICS", "EXPLAINING_METRICS", "METRICS", "DataRandomization", "Randomization",
    "Scores", "area_under_curve", "complexity", "data_randomization", "deletion",
    "deletion_curve", "energy_pointing_game", "evaluate", "faithfulness_correlation",
    "infidelity", "insertion", "insertion_curve", "iou", "local_lipschitz_estimate", "mask_iou",
    "max_sensitivity", "model_randomization", "noisy_linear_imputation", "pointing_game",
    "random_logit", "road", "road_curve", "sparseness", "spearman", "ssim",
]

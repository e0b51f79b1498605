"""Model-randomization sanity check (Adebayo et al., 2018, "Sanity Checks for Saliency Maps").

Cascading randomization (``mode="cascading"``, the paper's main test): re-initialise the
model's layers one by one from the top (logits) down, and after each step compare the new maps
with the original ones by Spearman rank correlation. Independent randomization
(``mode="independent"``, the paper's second test): re-initialise one layer at a time, the others
keeping their trained weights. A map that explains the *model* must change as its weights are
destroyed; a map that stays the same (correlation near 1) is an edge detector of the input, not
an explanation. The paper's data randomization test is ``data_randomization``.

The randomization runs on a deep copy: the user's model is never touched. Re-initialising a
module calls its ``reset_parameters()`` (PyTorch's default initialisation; for BatchNorm this
also resets the running statistics); parameters of modules without one get ``N(0, 0.02)``.
Targets are fixed by the original model ("predicted" means the original prediction), and the
random generator is seeded identically before each attribution so that stochastic methods
(SmoothGrad, RISE) compare like with like. The caller's random state is left untouched.

Example:
    >>> import torch, torchvision
    >>> model = torchvision.models.resnet18(num_classes=4).eval()
    >>> result = model_randomization(model, torch.rand(2, 3, 64, 64), "saliency",
    ...                              layers=["fc", "layer4", "layer3"])   # doctest: +SKIP
    >>> result.mean()                  # first entry: nothing randomized, ~1.0   # doctest: +SKIP
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from seethrough.core import Target, TargetSpec, check_images, run_scope
from seethrough.core.inputs import as_maps
from seethrough.core.ranks import spearman
from seethrough.errors import InputError
from seethrough.progress import progress_bar
from seethrough.results import Result
from seethrough.trace import resolve_layer

Explain = Callable[[nn.Module, torch.Tensor, TargetSpec], torch.Tensor]


def parameter_layers(model: nn.Module) -> list[str]:
    """Names of modules that own parameters, from the output back to the input (cascade order)."""
    return [name for name, module in model.named_modules()
            if any(True for _ in module.parameters(recurse=False))][::-1]


@torch.no_grad()
def reinitialize(module: nn.Module) -> None:
    """Re-initialise every parameter under ``module`` (``reset_parameters`` or ``N(0, 0.02)``)."""
    for sub in module.modules():
        if hasattr(sub, "reset_parameters"):
            sub.reset_parameters()
        else:
            for parameter in sub.parameters(recurse=False):
                nn.init.normal_(parameter, std=0.02)


MODES = ("cascading", "independent")


@dataclass
class Randomization(Result):
    """Rank correlations ``(L+1, N)``: row 0 with nothing randomized, row ``i`` with
    ``layers[:i]`` (``mode="cascading"``) or with ``layers[i - 1]`` alone (``"independent"``)."""

    layers: list[str]
    correlations: torch.Tensor
    method: str
    mode: str = "cascading"

    def mean(self) -> torch.Tensor:
        """Mean correlation per cascade step ``(L+1,)`` (NaNs ignored)."""
        return self.correlations.nanmean(dim=1)

    def to_frame(self):
        """One row per step: the layer randomized last (cascading) or alone (independent), and
        the mean / std correlation."""
        import pandas as pd

        values = self.correlations
        mean = values.nanmean(1)
        std = (values - mean[:, None]).pow(2).nanmean(1).sqrt()
        return pd.DataFrame({
            "step": range(len(values)),
            "randomized_down_to" if self.mode == "cascading" else "randomized": ["(none)",
                                                                              *self.layers],
            "method": self.method,
            "mode": self.mode,
            "spearman_mean": mean.tolist(),
            "spearman_std": std.tolist(),
        })

    def plot(self):
        """Mean Spearman correlation per step, the layers randomized as ticks."""
        from matplotlib.figure import Figure

        labels = ["(none)", *self.layers]
        fig = Figure(figsize=(min(12.0, 2.0 + 0.45 * len(labels)), 3.2))
        ax = fig.add_subplot()
        ax.plot(range(len(labels)), self.mean().cpu().tolist(), marker="o", color="#d62728")
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=7)
        ax.axhline(0, color="black", linewidth=0.5)
        ax.set_ylim(-1.05, 1.05)
        ax.set_xlabel("randomized down to" if self.mode == "cascading" else "randomized alone")
        ax.set_ylabel("mean Spearman")
        ax.set_title(f"{self.mode} model randomization of {self.method}", fontsize=10)
        fig.tight_layout()
        return fig

    def _settings(self) -> dict:
        return {"layers": self.layers, "method": self.method, "mode": self.mode}

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {"correlations": self.correlations}

    @classmethod
    def _from_saved(cls, settings: dict, tensors: dict[str, torch.Tensor]) -> Randomization:
        return cls(list(settings["layers"]), tensors["correlations"], settings["method"],
                   settings.get("mode", "cascading"))


def randomization_figure(checks: Sequence[Randomization]):
    """Several randomizations of one method over the same layers (e.g. cascading and
    independent) as lines on one plot."""
    from matplotlib.figure import Figure

    labels = ["(none)", *checks[0].layers]
    fig = Figure(figsize=(min(12.0, 2.0 + 0.45 * len(labels)), 3.2))
    ax = fig.add_subplot()
    for check, color in zip(checks, ("#d62728", "#1f77b4", "#2ca02c")):
        ax.plot(range(len(labels)), check.mean().cpu().tolist(), marker="o", color=color,
                label=check.mode)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=7)
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_ylim(-1.05, 1.05)
    ax.set_xlabel("randomized (cascading: down to this layer; independent: this layer alone)")
    ax.set_ylabel("mean Spearman")
    ax.set_title(f"model randomization of {checks[0].method}", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _explainer(explain: str | Explain, options: dict) -> tuple[Explain, str]:
    if callable(explain):
        return explain, getattr(explain, "__name__", "custom")
    if not isinstance(explain, str):
        raise InputError("explain must be a method name (see seethrough.attribution.METHODS) or a "
                         "function (model, images, targets) -> maps")
    from seethrough.attribution import attribute

    def run(model, images, target):
        return attribute(model, images, target=target, method=explain, **options).maps

    return run, explain


def model_randomization(model: nn.Module, images: torch.Tensor, explain: str | Explain,
                        target: TargetSpec = "predicted", *, layers: Sequence[str] | None = None,
                        mode: str = "cascading", absolute: bool = True, seed: int = 0,
                        progress: bool | None = None, batch_size: int = 32,
                        **options) -> Randomization:
    """Model randomization, top layer first; Spearman correlation per step and image.

    Args:
        explain: a method name for ``seethrough.attribute`` (``options`` are passed on) or a
            function ``(model, images, target) -> maps (N, 1, H, W)``; ``target`` is the class
            per image fixed by the original model, or the callable or unit given.
        layers: cascade order, top first; each name may be a block (all its parameters are
            re-initialised). Default: every module owning parameters, output to input.
        mode: "cascading" (each step re-initialises one more layer) or "independent" (each
            step re-initialises its layer alone; the others keep their trained weights).
        absolute: correlate ``|map|`` (Adebayo et al. report both; absolute is their main figure).
    """
    if mode not in MODES:
        raise InputError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    images = check_images(images, model).detach()
    run, name = _explainer(explain, {**options, "batch_size": batch_size})
    goal = Target.of(target, len(images))
    if goal.is_class:
        with run_scope(model):
            goal.resolve(model, images, batch_size)
        target = goal.classes.to(images.device)
    if layers is None:
        layers = parameter_layers(model)
    names = [resolve_layer(model, layer)[0] for layer in layers]
    if not names:
        raise InputError("the model has no parameters to randomize")
    devices = [images.device.index or 0] if images.device.type == "cuda" else []

    def maps_of(net):
        torch.manual_seed(seed)
        maps = as_maps(run(net, images, target), size=images.shape[-2:], count=len(images)).cpu()
        return maps.abs() if absolute else maps

    with torch.random.fork_rng(devices=devices):
        original = maps_of(model)
        randomized = copy.deepcopy(model)
        modules = dict(randomized.named_modules())
        rows = [spearman(original, maps_of(randomized))]
        for step, layer in enumerate(progress_bar(names, f"randomize ({name})", unit="layer",
                                                  progress=progress)):
            trained = ({key: value.clone() for key, value in modules[layer].state_dict().items()}
                       if mode == "independent" else None)
            torch.manual_seed(seed + 1 + step)
            reinitialize(modules[layer])
            rows.append(spearman(original, maps_of(randomized)))
            if trained is not None:
                modules[layer].load_state_dict(trained)
    return Randomization(layers=names, correlations=torch.stack(rows), method=name, mode=mode)

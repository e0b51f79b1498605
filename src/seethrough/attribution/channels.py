"""Which channels of a layer carry the decision.

* ``channel_attribution``: gradient x activation per channel, summed over space. For a network
  that ends in global average pooling and one linear layer, the scores at the last conv layer
  are exactly each channel's share of the logit (they sum to logit minus bias).
* ``channel_extremal``: extremal perturbation applied to a layer's channels (Fong, Patrick and
  Vedaldi, ICCV 2019, sec. 5): learn a mask ``m`` in [0, 1] over the channels that preserves the
  target's score while keeping only a fraction ``area`` of the channels. The area is enforced by
  their rank constraint ``||sort(m) - r_a||^2`` (``r_a``: ones on the top ``area`` fraction), with
  a weight that grows geometrically, as in TorchRay (mask starts at 1; SGD, momentum 0.9,
  lr 0.01, weight 300 ramped by 1.0035 per step; ties in the sort share their gradient). The mask multiplies the layer's output through ``Trace(edit=...)``;
  the model is left as it was.

Example:
    >>> import torch, torchvision
    >>> model = torchvision.models.resnet18(num_classes=4).eval()
    >>> scores = channel_attribution(model, torch.rand(2, 3, 64, 64), "layer4", target=1)
    >>> scores.scores.shape, scores.top(3).shape
    (torch.Size([2, 512]), torch.Size([2, 3]))
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from seethrough.core import Target, TargetSpec, check_images, layer_gradients, run_scope
from seethrough.core.batching import chunks
from seethrough.errors import InputError
from seethrough.progress import progress_bar
from seethrough.results import Result
from seethrough.trace import Trace, resolve_layer


@dataclass
class ChannelScores(Result):
    """Per-image, per-channel scores ``(N, C)`` at ``layer`` for the classes ``target``;
    ``maps``, when kept, the scores before the sum over space ``(N, C, h, w)``."""

    scores: torch.Tensor
    layer: str
    target: torch.Tensor | None
    method: str = "gradient_x_activation"
    maps: torch.Tensor | None = None

    def top(self, k: int = 5) -> torch.Tensor:
        """Indices ``(N, k)`` of the channels with the highest scores per image."""
        return self.scores.topk(min(k, self.scores.shape[1]), dim=1).indices

    def to_frame(self):
        """One row per channel: mean score over the images, its rank and how often it is top-5."""
        import pandas as pd

        mean = self.scores.mean(0)
        top5 = torch.zeros(self.scores.shape[1])
        top5.index_add_(0, self.top(5).flatten().cpu(), torch.ones(self.top(5).numel()))
        frame = pd.DataFrame({"channel": range(len(mean)), "mean_score": mean.tolist(),
                              "mean_abs_score": self.scores.abs().mean(0).tolist(),
                              "top5_count": top5.long().tolist()})
        frame = frame.sort_values("mean_score", ascending=False, ignore_index=True)
        frame.insert(0, "rank", range(1, len(frame) + 1))
        return frame

    def plot(self):
        """Bar chart of the mean score of the 20 highest-scoring channels."""
        from seethrough.results import bar_figure

        top = self.to_frame().head(20)
        return bar_figure([str(c) for c in top.channel], top.mean_score.tolist(),
                          ylabel="mean score", title=f"{self.layer}: top channels ({self.method})")

    def _title(self) -> str:
        return f"ChannelScores: {self.method} at {self.layer}"

    def _settings(self) -> dict:
        return {"layer": self.layer, "method": self.method}

    def _tensors(self) -> dict[str, torch.Tensor]:
        tensors = {"scores": self.scores}
        if self.target is not None:
            tensors["target"] = self.target
        if self.maps is not None:
            tensors["maps"] = self.maps
        return tensors

    @classmethod
    def _from_saved(cls, settings: dict, tensors: dict[str, torch.Tensor]) -> ChannelScores:
        return cls(tensors["scores"], settings["layer"], tensors.get("target"), settings["method"],
                   tensors.get("maps"))


def _check_channels(output: torch.Tensor, layer: str) -> None:
    if output.dim() < 2:
        raise InputError(f"layer {layer!r} outputs shape {tuple(output.shape)}: channel methods need "
                         "(N, C, ...) outputs")


def channel_attribution(model: nn.Module, images: torch.Tensor, layer: str,
                        target: TargetSpec = "predicted", *, batch_size: int = 32,
                        keep_maps: bool = False) -> ChannelScores:
    """Gradient x activation summed over space: ``sum_{h,w} A_c(h,w) dS/dA_c(h,w)``, ``(N, C)``.

    ``A`` is the layer's output before any in-place op after it (a following in-place ReLU does
    not change what is scored). The model's parameters get no gradients. ``keep_maps`` keeps
    ``A * dS/dA`` per position (``ChannelScores.maps``: where each channel's share comes from).
    """
    images = check_images(images, model)
    name, _ = resolve_layer(model, layer)
    goal = Target.of(target, len(images))
    with run_scope(model), goal.attached(model):
        acts, grads = layer_gradients(model, images, goal, name, batch_size=batch_size)
    _check_channels(acts, name)
    product = acts * grads
    scores = product.flatten(2).sum(2) if product.dim() > 2 else product
    classes = goal.classes.clone() if goal.is_class else None
    kept = product.detach() if keep_maps and product.dim() == 4 else None
    return ChannelScores(scores, name, classes, maps=kept)


@dataclass
class ChannelMask:
    """A learned channel mask: ``mask`` soft ``(N, C)`` in [0, 1], ``keep`` its top ``area`` as bool.

    ``score`` is the target's score of the intact model, ``score_kept`` with only the ``keep``
    channels left (the others zeroed), ``score_deleted`` with the ``keep`` channels zeroed.
    """

    mask: torch.Tensor
    keep: torch.Tensor
    layer: str
    area: float
    target: torch.Tensor | None
    score: torch.Tensor
    score_kept: torch.Tensor
    score_deleted: torch.Tensor


def _area_reference(channels: int, area: float, device) -> torch.Tensor:
    kept = round(area * channels)
    reference = torch.zeros(channels, device=device)
    if kept:
        reference[-kept:] = 1.0
    return reference


def _area_targets(mask: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per channel, the value of ``reference`` at the channel's rank in the sorted mask.

    This is the target of TorchRay's ``||sort(m) - r||^2`` without the arbitrary tie-break of
    ``sort``: channels with equal values share the mean reference of the ranks they span, so
    from a flat start every channel feels the same area pressure and the reward decides.
    """
    values, order = mask.detach().sort(dim=1)
    targets = torch.empty_like(mask)
    for row in range(len(mask)):
        _, group, counts = torch.unique_consecutive(values[row], return_inverse=True,
                                                    return_counts=True)
        mean = torch.zeros(len(counts), device=mask.device).index_add_(0, group, reference)
        targets[row, order[row]] = (mean / counts)[group]
    return targets


def channel_extremal(model: nn.Module, images: torch.Tensor, layer: str,
                     target: TargetSpec = "predicted", *, area: float = 0.1, steps: int = 800,
                     learning_rate: float = 0.01, regul_weight: float = 300.0,
                     regul_growth: float = 1.0035, batch_size: int = 32,
                     progress: bool | None = None) -> ChannelMask:
    """Learn, per image, the fraction ``area`` of channels at ``layer`` that preserves the target.

    Defaults follow TorchRay's extremal perturbation (800 steps); a few hundred steps are usually
    enough for the hard mask (``keep``) to settle.
    """
    images = check_images(images, model)
    name, _ = resolve_layer(model, layer)
    if not 0.0 < area < 1.0:
        raise InputError(f"area must be a fraction of the channels in (0, 1), not {area}")
    if steps < 1:
        raise InputError(f"steps must be positive, not {steps}")
    goal = Target.of(target, len(images))
    masks, scores = [], []
    with run_scope(model), goal.attached(model):
        goal.resolve(model, images, batch_size)
        for part in chunks(len(images), batch_size):
            x = images[part].detach()
            current = {}

            def apply(output, current=current):
                _check_channels(output, name)
                mask = current["mask"]
                if mask is None:  # first pass: learn the channel count
                    current["channels"] = output.shape[1]
                    return output
                return output * mask.view(*mask.shape, *([1] * (output.dim() - 2)))

            with Trace(model, name, retain_output=False, edit=apply):
                current["mask"] = None
                with torch.no_grad():
                    full = goal.scores(model(x), part)
                channels = current["channels"]
                reference = _area_reference(channels, area, x.device)
                mask = torch.ones((len(x), channels), device=x.device, requires_grad=True)
                optimizer = torch.optim.SGD([mask], lr=learning_rate, momentum=0.9, dampening=0.9)
                current["mask"] = mask
                for step in progress_bar(range(steps), "channel extremal", progress=progress,
                                         unit="step"):
                    with torch.enable_grad():
                        reward = goal.scores(model(x), part)
                        regul = (mask - _area_targets(mask, reference)).pow(2).mean(1)
                        energy = (-reward + regul_weight * regul_growth**step * regul).sum()
                        optimizer.zero_grad()
                        energy.backward(inputs=[mask])
                    optimizer.step()
                    with torch.no_grad():
                        mask.clamp_(0, 1)
                soft = mask.detach()
                keep = torch.zeros_like(soft, dtype=torch.bool)
                kept = int(reference.sum().item())
                keep.scatter_(1, soft.topk(kept, dim=1).indices, True)
                with torch.no_grad():
                    current["mask"] = keep.float()
                    kept_score = goal.scores(model(x), part)
                    current["mask"] = (~keep).float()
                    deleted_score = goal.scores(model(x), part)
            masks.append((soft, keep))
            scores.append((full, kept_score, deleted_score))
    soft = torch.cat([m[0] for m in masks])
    keep = torch.cat([m[1] for m in masks])
    full, kept_score, deleted_score = (torch.cat(s) for s in zip(*scores))
    classes = goal.classes.clone() if goal.is_class else None
    return ChannelMask(soft, keep, name, area, classes, full, kept_score, deleted_score)

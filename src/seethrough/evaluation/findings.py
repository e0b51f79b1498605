"""What extremal perturbations find, measured: Fong's four findings as experiments.

Fong, Patrick & Vedaldi (2019) close with what extremal perturbations show about networks:

1. *foreground evidence is usually sufficient*: a small mask, mostly on the object, keeps the
   class score (``ExtremalSweep.sufficient_area``, ``ExtremalSweep.object_share``);
2. *large objects are recognized by their details*: that area grows more slowly than the
   object (``object_sizes`` on ConceptWorld scenes of set object sizes, ``zoom_sweep`` on
   photos: the same photo cropped closer);
3. *multiple objects contribute cumulatively*: preserving instances one by one raises the
   score each time (``cumulative_objects``; ``instance_scenes``, ``photo_mosaics``);
4. *suppressing the background may overdrive the network*: a preserved image scores higher
   than the whole image (``ExtremalSweep.overdrive``).

``extremal_sweep`` is the measurement behind 1, 2 and 4: extremal perturbation (``preserve``,
the paper's defaults unless options say otherwise) at every area in ``AREAS`` (2.5 % to 80 %),
then the target's score of each preserved image (the image under the mask, the rest perturbed
by the same blur pyramid the masks were learned with). Scores are logits by default (what the
method maximizes, TorchRay's ``simple_reward``); ``score="probability"`` reads softmax
probabilities instead. A ratio ``preserved / original`` is only defined for a positive
original score: images whose target score is not positive get NaN.

Speed: 800 iterations per mask (the paper's) take minutes per image on a CPU. Every area of
every image is one row of the batched optimization (``batch_size``). The named speed-up is
``compressed_schedule(n)``: the paper's schedule in ``n`` steps (the report's quick mode uses
``QUICK_ITERATIONS``); fewer ``iterations`` alone leave the masks unfinished.

Example:
    >>> import torch, torchvision
    >>> model = torchvision.models.resnet18(num_classes=4).eval()
    >>> sweep = extremal_sweep(model, torch.rand(2, 3, 32, 32), 0, areas=(0.1, 0.4),
    ...                        iterations=2)
    >>> sweep.preserved.shape, list(sweep.to_frame().columns)[:3]
    (torch.Size([2, 2]), ['image', 'group', 'target'])
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from seethrough.attribution import attribute
from seethrough.attribution.extremal import blur_pyramid, perturb
from seethrough.core import Target, TargetSpec, check_images, run_scope
from seethrough.core.batching import chunks
from seethrough.errors import InputError
from seethrough.results import Result

#: the areas of the sweep, 2.5 % to 80 % of the image (as in Fong et al.'s area plots)
AREAS = (0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8)
#: a preserved image "keeps" the class when its score is at least this share of the original
THRESHOLD = 0.9
SCORES = ("logit", "probability")
#: extremal perturbation's iterations in the paper, and in a quick look (``compressed_schedule``)
PAPER_ITERATIONS, QUICK_ITERATIONS = 800, 100
#: ConceptWorld object radii (fraction of the side) of ``object_sizes``: ConceptNet, trained on
#: 0.2-0.3, recognizes all of them (radius 0.15: half the scenes)
RADII = (0.2, 0.27, 0.34, 0.4)
#: how much closer ``zoom_sweep`` crops the photos (side of the crop = 1 / zoom)
ZOOMS = (1.0, 1.5, 2.0)


def compressed_schedule(iterations: int) -> dict:
    """Extremal perturbation options that run the paper's 800-step schedule in ``iterations``
    steps: the learning rate times ``800 / iterations`` and the area weight's growth per step
    to the power ``800 / iterations`` (so it ends 16.4 times its start, as the paper's does).
    The named speed-up of these experiments: with the paper's learning rate, 150 steps leave
    the masks far from their areas (measured on ConceptNet: masks of area 2.5 % still had
    a mean of 0.38).

    Example:
        >>> compressed_schedule(200)["lr"]
        0.04
    """
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise InputError(f"iterations must be a positive integer, not {iterations!r}")
    factor = PAPER_ITERATIONS / iterations
    return {"iterations": iterations, "lr": 0.01 * factor, "growth": 1.0035 ** factor}


def _ratio(values: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """``values / original`` per image (rows), NaN where the original is not positive."""
    base = original.reshape(-1, *([1] * (values.dim() - 1)))
    return torch.where(base > 0, values / base.clamp(min=1e-12), torch.nan)


@dataclass
class ExtremalSweep(Result):
    """Extremal perturbation at several areas and the score of each preserved image.

    Attributes:
        areas: the areas, ascending.
        masks: ``(N, A, H, W)`` the mask of each area.
        original: ``(N,)`` the target's score on the image.
        preserved: ``(N, A)`` its score on the image preserved by each mask.
        blurred: ``(N,)`` its score with nothing preserved (the whole image perturbed).
        targets: the classes scored, ``None`` for a callable or unit target.
        objects: ``(N, H, W)`` bool true object masks, when known.
        groups: a label per image (e.g. the object's size), for experiments over groups.
        score: ``"logit"`` or ``"probability"``; ``threshold``: the share of the original
            score that counts as kept.
    """

    areas: tuple[float, ...]
    masks: torch.Tensor
    original: torch.Tensor
    preserved: torch.Tensor
    blurred: torch.Tensor
    targets: torch.Tensor | None = None
    objects: torch.Tensor | None = None
    groups: list[str] | None = None
    score: str = "logit"
    threshold: float = THRESHOLD
    options: dict = field(default_factory=dict)

    def ratio(self) -> torch.Tensor:
        """``(N, A)`` preserved score / original score (NaN where the original is <= 0)."""
        return _ratio(self.preserved, self.original)

    def sufficient(self) -> torch.Tensor:
        """``(N,)`` index of the smallest area whose preserved image keeps ``threshold`` of
        the score, -1 where none does."""
        kept = self.ratio() >= self.threshold  # NaN compares False
        first = kept.float().argmax(1)
        return torch.where(kept.any(1), first, torch.full_like(first, -1))

    def sufficient_area(self) -> torch.Tensor:
        """``(N,)`` the smallest area that keeps ``threshold`` of the score (NaN: none does)."""
        index = self.sufficient()
        areas = torch.tensor(self.areas, dtype=torch.float32)
        return torch.where(index >= 0, areas[index.clamp(min=0)], torch.nan)

    def sufficient_masks(self) -> torch.Tensor:
        """``(N, H, W)`` the mask of the sufficient area (zeros where no area suffices)."""
        index = self.sufficient()
        picked = self.masks[torch.arange(len(index)), index.clamp(min=0)]
        return picked * (index >= 0).to(picked.dtype)[:, None, None]

    def object_share(self) -> torch.Tensor:
        """``(N,)`` share of the sufficient mask (its soft values) inside the true object
        mask (NaN without objects or without a sufficient area)."""
        if self.objects is None:
            return torch.full((len(self.original),), torch.nan)
        masks = self.sufficient_masks().float()
        inside = (masks * self.objects.float()).flatten(1).sum(1)
        total = masks.flatten(1).sum(1)
        return torch.where((self.sufficient() >= 0) & (total > 0), inside / total.clamp(min=1e-12),
                           torch.nan)

    def object_coverage(self) -> torch.Tensor:
        """``(N,)`` share of the true object covered by the sufficient mask (its soft values;
        NaN without objects or without a sufficient area)."""
        if self.objects is None:
            return torch.full((len(self.original),), torch.nan)
        objects = self.objects.float()
        inside = (self.sufficient_masks().float() * objects).flatten(1).sum(1)
        total = objects.flatten(1).sum(1)
        return torch.where((self.sufficient() >= 0) & (total > 0), inside / total.clamp(min=1),
                           torch.nan)

    def object_area(self) -> torch.Tensor:
        """``(N,)`` share of the image the true objects cover (NaN without objects)."""
        if self.objects is None:
            return torch.full((len(self.original),), torch.nan)
        return self.objects.float().flatten(1).mean(1)

    def overdrive(self) -> torch.Tensor:
        """``(N,)`` the best preserved score over the areas divided by the original, minus 1:
        positive where suppressing part of the image raises the score above the original."""
        return self.ratio().amax(1) - 1

    def summary(self) -> dict:
        """The headline numbers (JSON values): the median sufficient area and how often one
        exists, the mean share of its mask on the object and of the object under it, the
        objects' mean area, the share of images overdriven and their median excess."""
        area, share, over = self.sufficient_area(), self.object_share(), self.overdrive()
        valid = ~over.isnan()
        driven = over[valid] > 0
        return {
            "images": len(self.original),
            "kept_share": float((~area.isnan()).float().mean()),
            "median_sufficient_area": float(area.nanmedian()),
            "mean_object_share": float(share.nanmean()),
            "mean_object_coverage": float(self.object_coverage().nanmean()),
            "mean_object_area": float(self.object_area().nanmean()),
            "overdriven_share": float(driven.float().mean()) if valid.any() else math.nan,
            "median_overdrive": float(over[valid][driven].median()) if driven.any() else math.nan,
        }

    def to_frame(self):
        """One row per image: ``image``, ``group``, ``target``, the scores, the sufficient
        area, the share of its mask on the object and of the object under it, the object's
        area, the overdrive, and the ratio at each area (``ratio@A``)."""
        import pandas as pd

        columns = {
            "image": list(range(len(self.original))),
            "group": self.groups or [""] * len(self.original),
            "target": self.targets.tolist() if self.targets is not None else [None] * len(
                self.original),
            "original": self.original.tolist(),
            "blurred": self.blurred.tolist(),
            "sufficient_area": self.sufficient_area().tolist(),
            "object_share": self.object_share().tolist(),
            "object_coverage": self.object_coverage().tolist(),
            "object_area": self.object_area().tolist(),
            "overdrive": self.overdrive().tolist(),
        }
        for index, area in enumerate(self.areas):
            columns[f"ratio@{area:g}"] = self.ratio()[:, index].tolist()
        return pd.DataFrame(columns)

    def by_group(self):
        """One row per group: images, how many keep the score at some area, the median
        sufficient area, the mean object area and the median sufficient area / object area."""
        frame = self.to_frame()
        frame["area_per_object"] = frame["sufficient_area"] / frame["object_area"]
        grouped = frame.groupby("group", sort=False)
        return grouped.agg(images=("image", "size"),
                           kept=("sufficient_area", lambda s: int(s.notna().sum())),
                           object_area=("object_area", "mean"),
                           sufficient_area=("sufficient_area", "median"),
                           area_per_object=("area_per_object", "median")).reset_index()

    def select(self, group: str) -> ExtremalSweep:
        """The images of one group, as a sweep of their own (without groups)."""
        rows = [i for i, g in enumerate(self.groups or []) if g == group]
        if not rows:
            raise InputError(f"no images in group {group!r}; groups: "
                             f"{', '.join(dict.fromkeys(self.groups or [])) or 'none'}")
        index = torch.tensor(rows)
        return ExtremalSweep(
            self.areas, self.masks[index], self.original[index], self.preserved[index],
            self.blurred[index], None if self.targets is None else self.targets[index],
            None if self.objects is None else self.objects[index], None, self.score,
            self.threshold, self.options)

    def preserved_images(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)``: each of the sweep's ``images`` preserved by its sufficient mask,
        the rest perturbed as the method perturbs it (fully where no area suffices)."""
        masks = self.sufficient_masks().to(images)[:, None]
        with torch.no_grad():
            return perturb(_pyramid(images, self.options), masks)

    def plot(self, names: Sequence[str] | None = None):
        """The preserved score / original score against the area, one line per image (or the
        median per group), with the threshold and the original's level marked."""
        from matplotlib.figure import Figure

        ratio = self.ratio()
        fig = Figure(figsize=(5.2, 3.4))
        ax = fig.add_subplot()
        if self.groups:
            for group in dict.fromkeys(self.groups):
                rows = [i for i, g in enumerate(self.groups) if g == group]
                ax.plot(self.areas, ratio[rows].nanmedian(0).values.tolist(), marker="o",
                        label=f"{group} (median)")
        else:
            names = names or [f"image {i}" for i in range(len(ratio))]
            for row, name in zip(ratio, names):
                ax.plot(self.areas, row.tolist(), marker="o", label=name)
        ax.axhline(self.threshold, color="gray", linestyle="--", linewidth=0.8)
        ax.axhline(1.0, color="black", linewidth=0.6)
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(self.areas, [f"{a:.1%}".replace(".0%", "%") for a in self.areas],
                      fontsize=7)
        ax.set_xlabel("area preserved (extremal perturbation)")
        ax.set_ylabel(f"preserved {self.score} / original")
        ax.legend(fontsize=7)
        fig.tight_layout()
        return fig

    def _settings(self) -> dict:
        return {"areas": list(self.areas), "groups": self.groups, "score": self.score,
                "threshold": self.threshold, "options": self.options}

    def _tensors(self) -> dict[str, torch.Tensor]:
        tensors = {"masks": self.masks, "original": self.original, "preserved": self.preserved,
                   "blurred": self.blurred}
        if self.targets is not None:
            tensors["targets"] = self.targets
        if self.objects is not None:
            tensors["objects"] = self.objects
        return tensors

    @classmethod
    def _from_saved(cls, settings: dict, tensors: dict[str, torch.Tensor]) -> ExtremalSweep:
        return cls(tuple(settings["areas"]), tensors["masks"], tensors["original"],
                   tensors["preserved"], tensors["blurred"], tensors.get("targets"),
                   tensors.get("objects"), settings.get("groups"), settings["score"],
                   settings["threshold"], settings.get("options", {}))


def _check_score(score: str) -> None:
    if score not in SCORES:
        raise InputError(f"score must be one of {', '.join(SCORES)}, not {score!r}")


def _pyramid(images: torch.Tensor, options: dict) -> torch.Tensor:
    """The blur pyramid extremal perturbation used, from its recorded options."""
    scale = options["pixel_scale"]
    return blur_pyramid(images, options["num_levels"], options["max_blur"] * scale,
                        options["perturbation"], options["blur_padding"])


def _scores(model: nn.Module, images: torch.Tensor, goal: Target, masks: torch.Tensor,
            options: dict, score: str, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Target scores of the clean images ``(N,)`` and of the images preserved by each of the
    ``(N, K, H, W)`` masks ``(N, K)`` (perturbed by the method's blur pyramid)."""
    count, kinds = masks.shape[:2]
    original, preserved = [], []
    per = max(1, batch_size // (kinds + 1))
    probabilities = score == "probability"
    with run_scope(model), goal.attached(model), torch.no_grad():
        for part in chunks(count, per):
            rows = torch.arange(part.start, part.stop)
            original.append(goal.scores(model(images[part]), rows, clean=True,
                                        probabilities=probabilities).float().cpu())
            pyramid = _pyramid(images[part], options)
            mask = masks[part].to(images).flatten(0, 1)[:, None]
            perturbed = perturb(pyramid.repeat_interleave(kinds, 0), mask)
            many = rows.repeat_interleave(kinds)
            preserved.append(goal.scores(model(perturbed), many, probabilities=probabilities)
                             .float().cpu().view(len(rows), kinds))
    return torch.cat(original), torch.cat(preserved)


def extremal_sweep(model: nn.Module, images: torch.Tensor, target: TargetSpec = "predicted", *,
                   objects: torch.Tensor | None = None, areas: Sequence[float] = AREAS,
                   score: str = "logit", threshold: float = THRESHOLD,
                   groups: Sequence[str] | None = None, batch_size: int = 32,
                   **options) -> ExtremalSweep:
    """Extremal perturbation (``preserve``) at every area, and the score each mask keeps.

    Args:
        target: what to explain (class indices, ``"predicted"``, a callable).
        objects: ``(N, H, W)`` true object masks, for ``object_share`` and ``object_area``.
        areas: the areas, ascending (default ``AREAS``, 2.5 % to 80 %).
        score: ``"logit"`` (default) or ``"probability"``; ``threshold``: the share of the
            original score an area must keep to count as sufficient.
        groups: a label per image (kept in the table; ``plot`` draws a median per group).
        batch_size: rows (image x area) per forward pass.
        **options: options of ``extremal_perturbation`` (``iterations``, ``generator``...;
            ``variant`` is ``"preserve"``); its defaults are the paper's.
    """
    _check_score(score)
    areas = tuple(float(a) for a in areas)
    if list(areas) != sorted(areas):
        raise InputError(f"areas must be ascending, not {areas}")
    if options.get("variant", "preserve") != "preserve":
        raise InputError("the findings are about preserved regions: variant must be 'preserve'")
    images = check_images(images, model)
    if objects is not None and tuple(objects.shape) != (len(images), *images.shape[-2:]):
        raise InputError(f"objects must be (N, H, W) masks matching the images "
                         f"{tuple(images.shape)}, not {tuple(objects.shape)}")
    if groups is not None and len(groups) != len(images):
        raise InputError(f"{len(groups)} group labels for {len(images)} images")
    result = attribute(model, images, target, method="extremal_perturbation", areas=areas,
                       batch_size=batch_size, **options)
    settings = dict(result.options)
    masks = result.raw.detach()
    nothing = torch.zeros_like(masks[:, :1])
    original, preserved = _scores(model, images, result.goal, torch.cat([masks, nothing], 1),
                                  settings, score, batch_size)
    return ExtremalSweep(areas, masks.cpu(), original, preserved[:, :-1], preserved[:, -1],
                         result.target, None if objects is None else objects.bool().cpu(),
                         list(groups) if groups is not None else None, score, float(threshold),
                         {k: v for k, v in settings.items() if not isinstance(v, torch.Tensor)})


def object_sizes(model: nn.Module, *, radii: Sequence[float] = RADII, per_size: int = 8,
                 seed: int = 0, size: int | None = None, **options) -> ExtremalSweep:
    """Finding 2 on ConceptWorld: ``extremal_sweep`` on scenes of one object of each radius
    (``seethrough.data.scenes``; classes in turn, ``per_size`` scenes per radius), grouped
    by radius. ``by_group()`` gives the sufficient area against the object's area.

    ``model`` must classify ConceptWorld's shapes (class ``k`` = ``ConceptWorld.class_names[k]``).
    """
    from seethrough.data.conceptworld import SHAPES
    from seethrough.data.scenes import object_scenes

    size = size or int(getattr(model, "input_size", (3, 64, 64))[-1])
    images, labels, objects, groups = [], [], [], []
    for radius in radii:
        scenes = object_scenes([i % len(SHAPES) for i in range(per_size)], radius=radius,
                               seed=seed, size=size)
        images.append(scenes["image"])
        labels.append(scenes["label"])
        objects.append(scenes["object_mask"])
        groups += [f"radius {radius:g}"] * per_size
    return extremal_sweep(model, torch.cat(images), torch.cat(labels),
                          objects=torch.cat(objects), groups=groups, **options)


def zoomed(images: torch.Tensor, zoom: float) -> torch.Tensor:
    """The centre ``1 / zoom`` of each image, resized back to the full size (bilinear,
    antialiased): whatever is in the middle looks ``zoom`` times larger."""
    if zoom < 1:
        raise InputError(f"zoom must be >= 1, not {zoom!r}")
    height, width = images.shape[-2:]
    h, w = round(height / zoom), round(width / zoom)
    top, left = (height - h) // 2, (width - w) // 2
    crop = images[..., top:top + h, left:left + w]
    return F.interpolate(crop, size=(height, width), mode="bilinear", antialias=True,
                         align_corners=False).clamp(0, 1)


def zoom_sweep(model: nn.Module, images: torch.Tensor, target: TargetSpec = "predicted", *,
               zooms: Sequence[float] = ZOOMS, **options) -> ExtremalSweep:
    """Finding 2 on photos without object masks: ``extremal_sweep`` on each image cropped
    ``zoom`` times closer (``zoomed``), grouped by zoom. The object grows by ``zoom^2`` in
    area; a network that recognizes it by its details keeps about the same area (or less).

    The target is settled on the unzoomed images (``"predicted"``: the class predicted
    there) and explained at every zoom.
    """
    images = check_images(images, model)
    goal = Target.of(target, len(images))
    with run_scope(model):
        goal.resolve(model, images, 32)
    stacked = torch.cat([zoomed(images, z) for z in zooms])
    classes = goal.classes.repeat(len(zooms)) if goal.is_class else goal.function
    groups = [f"zoom {z:g}" for z in zooms for _ in range(len(images))]
    return extremal_sweep(model, stacked, classes, groups=groups, **options)


@dataclass
class InstanceCurves(Result):
    """Finding 3: the target's score as the instances of a scene are preserved one by one.

    Attributes:
        scores: ``(N, K + 1)``: column ``j`` is the score with the first ``j`` instances
            preserved and the rest of the image perturbed (column 0: everything perturbed).
        original: ``(N,)`` the score of the whole image.
        counts: ``(N,)`` how many instances each scene has (columns past it repeat the last).
        targets: the classes scored (``None`` for a callable target).
    """

    scores: torch.Tensor
    original: torch.Tensor
    counts: torch.Tensor
    targets: torch.Tensor | None = None
    score: str = "logit"

    def increments(self) -> torch.Tensor:
        """``(N, K)`` the score each further instance adds (NaN past a scene's count)."""
        steps = self.scores.diff(dim=1)
        past = torch.arange(1, self.scores.shape[1])[None] > self.counts[:, None]
        return steps.masked_fill(past, torch.nan)

    def cumulative(self) -> torch.Tensor:
        """``(N,)`` whether every instance preserved raised the score."""
        return (self.increments().nan_to_num(1.0) > 0).all(1)

    def summary(self) -> dict:
        """Per count of instances: scenes, the share where every instance adds, the mean score
        with 0, 1, ... instances preserved."""
        out = {}
        for count in sorted(set(self.counts.tolist())):
            rows = self.counts == count
            out[int(count)] = {
                "scenes": int(rows.sum()),
                "cumulative_share": float(self.cumulative()[rows].float().mean()),
                "mean_scores": self.scores[rows, :count + 1].mean(0).tolist(),
                "mean_original": float(self.original[rows].mean()),
            }
        return out

    def to_frame(self):
        """One row per scene and number preserved: ``scene``, ``instances``, ``preserved``,
        ``score``, ``original``."""
        import pandas as pd

        rows = []
        for index, (line, count) in enumerate(zip(self.scores.tolist(), self.counts.tolist())):
            for preserved in range(int(count) + 1):
                rows.append({"scene": index, "instances": int(count), "preserved": preserved,
                             "score": line[preserved],
                             "original": float(self.original[index])})
        return pd.DataFrame(rows)

    def plot(self, names: Sequence[str] | None = None):
        """The score against the instances preserved: the mean per number of instances."""
        from matplotlib.figure import Figure

        fig = Figure(figsize=(4.6, 3.2))
        ax = fig.add_subplot()
        for count, values in self.summary().items():
            ax.plot(range(count + 1), values["mean_scores"], marker="o",
                    label=f"{count} instance{'s' * (count > 1)} ({values['scenes']} "
                    f"scene{'s' * (values['scenes'] > 1)})")
        ax.set_xticks(range(int(self.counts.max()) + 1))
        ax.set_xlabel("instances preserved (the rest blurred)")
        ax.set_ylabel(f"class {self.score}")
        ax.legend(fontsize=7)
        fig.tight_layout()
        return fig

    def _settings(self) -> dict:
        return {"score": self.score}

    def _tensors(self) -> dict[str, torch.Tensor]:
        tensors = {"scores": self.scores, "original": self.original, "counts": self.counts}
        if self.targets is not None:
            tensors["targets"] = self.targets
        return tensors

    @classmethod
    def _from_saved(cls, settings: dict, tensors: dict[str, torch.Tensor]) -> InstanceCurves:
        return cls(tensors["scores"], tensors["original"], tensors["counts"],
                   tensors.get("targets"), settings["score"])


def cumulative_objects(model: nn.Module, images: torch.Tensor, instances: torch.Tensor,
                       target: TargetSpec = "predicted", *, counts: torch.Tensor | None = None,
                       score: str = "logit", batch_size: int = 32, max_blur: float = 20.0,
                       num_levels: int = 8, blur_padding: str = "zeros",
                       pixel_scale: float | None = None) -> InstanceCurves:
    """Finding 3: the score as the true instances are preserved one by one, in order.

    ``instances`` ``(N, K, H, W)`` bool holds each scene's instance masks (scenes with fewer,
    ``counts``, have empty masks after theirs). Preserving ``j`` instances keeps the pixels of
    the first ``j`` and perturbs the rest with extremal perturbation's blur pyramid (its
    defaults: ``max_blur`` 20 px at 224 px scaled by ``pixel_scale``, zero padding).
    """
    _check_score(score)
    images = check_images(images, model)
    if instances.dim() != 4 or tuple(instances.shape[-2:]) != tuple(images.shape[-2:]) or \
            len(instances) != len(images):
        raise InputError(f"instances must be (N, K, H, W) masks for the {tuple(images.shape)} "
                         f"images, not {tuple(instances.shape)}")
    if counts is None:
        counts = instances.flatten(2).any(2).sum(1)
    goal = Target.of(target, len(images))
    scale = min(images.shape[-2:]) / 224 if pixel_scale is None else float(pixel_scale)
    settings = {"pixel_scale": scale, "num_levels": num_levels, "max_blur": max_blur,
                "perturbation": "blur", "blur_padding": blur_padding}
    steps = instances.to(torch.float32).cumsum(1).clamp(max=1)
    masks = torch.cat([torch.zeros_like(steps[:, :1]), steps], 1)
    with run_scope(model):
        goal.resolve(model, images, batch_size)
    original, scores = _scores(model, images, goal, masks.to(images.device), settings, score,
                               batch_size)
    return InstanceCurves(scores, original, counts.cpu(),
                          goal.classes.clone() if goal.is_class else None, score)


def instance_scenes(counts: Sequence[int] = (1, 2, 3), *, per_count: int = 8,
                    radius: float = 0.2, seed: int = 0, size: int = 64) -> dict:
    """ConceptWorld scenes with 1, 2, 3 instances of a class (``seethrough.data.scenes``),
    ``per_count`` of each (classes in turn): ``image``, ``label``, ``instances``
    (N, max count, H, W; empty past a scene's count) and ``counts``."""
    from seethrough.data.conceptworld import SHAPES
    from seethrough.data.scenes import object_scenes

    most = max(counts)
    images, labels, instances, numbers = [], [], [], []
    for count in counts:
        made = object_scenes([i % len(SHAPES) for i in range(per_count)], count=count,
                             radius=radius, seed=seed, size=size)
        masks = made["instance_masks"]
        images.append(made["image"])
        labels.append(made["label"])
        instances.append(F.pad(masks, (0, 0, 0, 0, 0, most - count)))
        numbers += [count] * per_count
    return {"image": torch.cat(images), "label": torch.cat(labels),
            "instances": torch.cat(instances), "counts": torch.tensor(numbers)}


def photo_mosaics(images: torch.Tensor, counts: Sequence[int] = (1, 2, 3)) -> dict:
    """Scenes of 1, 2, 3 instances from photos: each photo at half size in the first
    ``count`` quadrants of a 2 x 2 grid (top left, bottom right, top right), the other
    quadrants mid-grey. Returns ``image`` (len(images) * len(counts), C, H, W), ``instances``
    (the quadrant masks), ``counts`` and ``source`` (the photo of each scene)."""
    height, width = images.shape[-2:]
    half = F.interpolate(images, size=(height // 2, width // 2), mode="bilinear",
                         antialias=True, align_corners=False).clamp(0, 1)
    corners = [(0, 0), (height // 2, width // 2), (0, width // 2)]
    if max(counts) > len(corners):
        raise InputError(f"photo mosaics hold at most {len(corners)} instances")
    scenes, instances, numbers, sources = [], [], [], []
    for count in counts:
        for index, small in enumerate(half):
            canvas = images.new_full(images.shape[1:], 0.5)
            masks = torch.zeros(max(counts), height, width, dtype=torch.bool)
            for k, (top, left) in enumerate(corners[:count]):
                canvas[:, top:top + height // 2, left:left + width // 2] = small
                masks[k, top:top + height // 2, left:left + width // 2] = True
            scenes.append(canvas)
            instances.append(masks)
            numbers.append(count)
            sources.append(index)
    return {"image": torch.stack(scenes), "instances": torch.stack(instances),
            "counts": torch.tensor(numbers), "source": torch.tensor(sources)}


__all__ = ["AREAS", "ExtremalSweep", "InstanceCurves", "compressed_schedule", "cumulative_objects",
           "extremal_sweep",
           "instance_scenes", "object_sizes", "photo_mosaics", "zoom_sweep", "zoomed"]

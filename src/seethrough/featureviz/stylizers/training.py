"""Train feed-forward stylizers (Johnson et al. 2016) with instance, batch or conditional norm.

``train_stylizer`` fits a ``TransformNet`` to the perceptual loss on random crops of content
photos; with several styles and conditional instance norm one network learns them all, each
batch drawing one style (Dumoulin et al. 2017). ``add_style`` teaches a trained conditional
network one more style by learning only its new scales and shifts; ``stylize`` applies a
stylizer, mixing styles by interpolating their scales and shifts; ``compare_norms`` runs the
same training with batch and with instance norm (Ulyanov et al. 2016).

Example:
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3))
    >>> style = torch.rand(1, 3, 32, 32)
    >>> s = train_stylizer(style, torch.rand(4, 3, 48, 48), extractor=net, content_layer="2",
    ...                    style_layers=["0", "2"], size=32, batch=2, steps=2, channels=(4, 8, 8),
    ...                    blocks=1)
    >>> stylize(s, torch.rand(1, 3, 40, 40)).shape, len(s.history)
    (torch.Size([1, 3, 40, 40]), 2)
"""
from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from seethrough.core.device import model_device
from seethrough.core.scope import run_scope
from seethrough.errors import InputError
from seethrough.featureviz.stylizers.network import ConditionalInstanceNorm, TransformNet
from seethrough.featureviz.stylizers.perceptual import PerceptualLoss
from seethrough.preserve import preserve
from seethrough.progress import progress_bar

if TYPE_CHECKING:
    from pandas import DataFrame

#: the settings of a ``PerceptualLoss`` that a stylizer records
LOSS_SETTINGS = ("content_layer", "style_layers", "content_weight", "style_weight")
#: the bundled photos trained on (``coffee`` is held out for the benchmark, with ``camera``)
TRAINING_PHOTOS = ("astronaut", "cat", "rocket")


class Stylizer(nn.Module):
    """A trained ``TransformNet`` with its style names, settings (loss layers and weights,
    extractor, data, steps, seed...) and the loss ``history`` (one dict per step).

    ``stylizer(images, style)`` is ``stylize(stylizer, images, style)``.
    """

    def __init__(self, net: TransformNet, styles: Sequence[str], settings: dict,
                 history: list[dict]):
        super().__init__()
        self.net, self.styles = net, list(styles)
        self.settings, self.history = dict(settings), list(history)

    def final_losses(self, fraction: float = 0.1) -> dict[str, float]:
        """Mean content, style and total loss over the last ``fraction`` of the steps."""
        history = [row for row in self.history if not row.get("skipped")] or self.history
        tail = history[-max(1, math.ceil(fraction * len(history))):]
        keys = ("content", "style", "total")
        return {key: sum(row[key] for row in tail) / len(tail) for key in keys}

    def forward(self, images: torch.Tensor, style=0) -> torch.Tensor:
        return stylize(self, images, style)


def style_weights(stylizer: Stylizer, style, count: int) -> torch.Tensor:
    """(count, styles) mixing weights from a style index, name, or weights over the styles."""
    styles = len(stylizer.styles)
    if isinstance(style, str):
        if style not in stylizer.styles:
            raise InputError(f"no style {style!r} in this stylizer; it has "
                             f"{', '.join(stylizer.styles)}")
        style = stylizer.styles.index(style)
    if isinstance(style, int):
        if not 0 <= style < styles:
            raise InputError(f"style index {style} out of range: this stylizer has {styles} styles")
        return F.one_hot(torch.full((count,), style), styles).float()
    weights = torch.as_tensor(style, dtype=torch.float32)
    if weights.shape[-1] != styles or weights.dim() > 2:
        raise InputError(f"style weights must have {styles} entries (one per style), "
                         f"got {tuple(weights.shape)}")
    return weights.expand(count, styles) if weights.dim() == 1 else weights


def stylize(stylizer: Stylizer, images: torch.Tensor, style=0) -> torch.Tensor:
    """``images`` (N, 3, H, W) in [0, 1] in a style: an index, a name, or weights over the
    styles (a conditional stylizer mixes their scales and shifts)."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise InputError(f"images must be an (N, 3, H, W) tensor in [0, 1], got {shape}")
    weights = style_weights(stylizer, style, images.shape[0]).to(images)
    with preserve(stylizer.net), torch.no_grad():
        return stylizer.net.eval()(images, weights)


def content_pool(size: int) -> list[torch.Tensor]:
    """The default content: the training photos at 2x ``size`` and 32 ConceptWorld images."""
    from seethrough.data.conceptworld import ConceptWorld
    from seethrough.data.photos import sample_photos

    photos, _ = sample_photos(TRAINING_PHOTOS, size=2 * size)
    world = ConceptWorld("train", length=32, size=max(size, 64))
    return [*photos, *(world[i]["image"] for i in range(len(world)))]


def random_crops(pool: Sequence[torch.Tensor], count: int, size: int,
                 generator: torch.Generator) -> torch.Tensor:
    """``count`` random crops (a third to all of the shorter side, square), resized to ``size``
    and mirrored half of the time."""
    crops = []
    for _ in range(count):
        image = pool[int(torch.randint(len(pool), (), generator=generator))]
        height, width = image.shape[-2:]
        fraction = 1 / 3 + 2 / 3 * float(torch.rand((), generator=generator))
        side = max(8, int(min(height, width) * fraction))
        top = int(torch.randint(height - side + 1, (), generator=generator))
        left = int(torch.randint(width - side + 1, (), generator=generator))
        crop = F.interpolate(image[None, :, top:top + side, left:left + side], size=(size, size),
                             mode="bilinear", antialias=True, align_corners=False)[0]
        crops.append(crop.flip(-1) if float(torch.rand((), generator=generator)) < 0.5 else crop)
    return torch.stack(crops).clamp(0, 1)


def _as_batch(images, what: str) -> torch.Tensor:
    if isinstance(images, torch.Tensor) and images.dim() == 3:
        images = images[None]
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise InputError(f"{what} must be (3, H, W) or (N, 3, H, W) in [0, 1], got {shape}")
    return images.float()


def _pool(content_images: torch.Tensor | None, size: int) -> list[torch.Tensor]:
    if content_images is None:
        return content_pool(size)
    return list(_as_batch(content_images, "content_images"))


def _extractor(extractor: nn.Module | None, name: str | None = None) -> tuple[nn.Module, str]:
    if extractor is not None:
        return extractor, getattr(extractor, "card", {}).get("name", type(extractor).__name__)
    if name not in (None, "mobilenet_v2"):
        raise InputError(f"this stylizer was trained on {name!r}: pass it as extractor=")
    from seethrough.models import load_model

    return load_model("mobilenet_v2"), "mobilenet_v2"


def _fit(net: TransformNet, parameters: list[nn.Parameter], loss: PerceptualLoss,
         grams: list[dict], pool: Sequence[torch.Tensor], *, size: int, batch: int, steps: int,
         lr: float, generator: torch.Generator, pick_style, styles: int,
         progress: bool | None, max_seconds: float | None = None) -> list[dict]:
    """Adam on ``parameters``; each step one style (``pick_style()``) for a batch of crops
    (drawn on the CPU, so a seed gives the same crops on every device, then moved to the net's);
    a step with non-finite gradients is skipped; stops once ``max_seconds`` have passed."""
    device = model_device(net)
    deadline = time.perf_counter() + (math.inf if max_seconds is None else max_seconds)
    optimizer = torch.optim.Adam(parameters, lr=lr)
    history = []
    with run_scope(loss.extractor, mode="eval"), preserve(net):
        net.train()
        bar = progress_bar(range(steps), "stylizer", progress=progress, unit="step")
        for step in bar:
            index = pick_style()
            content = random_crops(pool, batch, size, generator).to(device)
            weights = F.one_hot(torch.full((batch,), index), styles).float().to(device)
            terms = loss(net(content, weights), content, grams[index])
            optimizer.zero_grad(set_to_none=True)
            terms["total"].mean().backward()
            finite = all(bool(p.grad.isfinite().all()) for p in parameters if p.grad is not None)
            if finite:  # a rare non-finite batch is skipped, not learned from
                optimizer.step()
            row = {"step": step + 1, "style_index": index, "skipped": not finite,
                   **{key: float(value.detach().mean()) for key, value in terms.items()}}
            history.append(row)
            bar.set_postfix(total=f"{row['total']:.3f}")
            if time.perf_counter() > deadline:
                break
    return history


def train_stylizer(style_images, content_images: torch.Tensor | None = None, *,
                   styles: Sequence[str] | None = None, extractor: nn.Module | None = None,
                   content_layer: str | None = None, style_layers: Sequence[str] | None = None,
                   content_weight: float = 1.0, style_weight: float = 10.0, size: int = 128,
                   batch: int = 4, steps: int = 1000, lr: float = 1e-3, norm: str | None = None,
                   channels: Sequence[int] = (16, 32, 64), blocks: int = 5, seed: int = 0,
                   max_seconds: float | None = None, progress: bool | None = None) -> Stylizer:
    """Train a stylizer for ``style_images`` ((3, H, W) or (S, 3, H, W), resized to ``size``).

    Args:
        content_images: (N, 3, H, W) photos to crop from; default ``content_pool(size)``.
        styles: a name per style image (default ``style0``, ``style1``...).
        extractor: the loss network (default ``load_model("mobilenet_v2")``); its state is restored.
            Training runs on its device (move it to a GPU to train there).
        norm: ``"instance"`` (default for one style), ``"batch"`` or ``"conditional"`` (default
            and required for several styles).
        seed: network initialisation, crops and style order; the same seed gives the same weights.
        max_seconds: a time budget: training stops after the step that passes it, and
            ``settings["steps"]`` records the steps done (rerun with those steps, no budget, to
            reproduce the weights bit for bit).
    """
    started = time.perf_counter()
    style = _as_batch(style_images, "style_images")
    count = style.shape[0]
    names = list(styles or [f"style{i}" for i in range(count)])
    if len(names) != count:
        raise InputError(f"{len(names)} style names for {count} style images")
    norm = norm or ("conditional" if count > 1 else "instance")
    extractor, extractor_name = _extractor(extractor)
    device = model_device(extractor)
    loss = PerceptualLoss(extractor, content_layer=content_layer, style_layers=style_layers,
                          content_weight=content_weight, style_weight=style_weight, size=size)
    style = F.interpolate(style.to(device), size=(size, size), mode="bilinear", antialias=True,
                          align_corners=False)
    with run_scope(extractor, mode="eval"):
        grams = [loss.style_grams(style[i:i + 1]) for i in range(count)]
    pool = _pool(content_images, size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = TransformNet(channels=channels, blocks=blocks, norm=norm, styles=count).to(device)
    generator = torch.Generator().manual_seed(seed)
    history = _fit(net, list(net.parameters()), loss, grams, pool, size=size, batch=batch,
                   steps=steps, lr=lr, generator=generator, styles=count, progress=progress,
                   max_seconds=max_seconds,
                   pick_style=lambda: int(torch.randint(count, (), generator=generator)))
    settings = {**loss.settings, "extractor": extractor_name, "size": size, "batch": batch,
                "steps": len(history), "lr": lr, "norm": norm, "channels": list(channels),
                "blocks": blocks, "seed": seed,
                "content": "content_pool" if content_images is None else "given",
                "seconds": round(time.perf_counter() - started, 1)}
    return Stylizer(net, names, settings, history)


def add_style(stylizer: Stylizer, new_style_image: torch.Tensor, *, name: str | None = None,
              steps: int = 200, lr: float = 1e-2, content_images: torch.Tensor | None = None,
              extractor: nn.Module | None = None, seed: int = 0,
              progress: bool | None = None) -> Stylizer:
    """A copy of a conditional ``stylizer`` with one more style: only the new scales and shifts
    are trained (every other parameter stays bit-identical)."""
    if stylizer.net.norm_kind != "conditional":
        raise InputError("add_style needs a conditional-norm stylizer, this one has "
                         f"{stylizer.net.norm_kind} norm")
    settings = stylizer.settings
    style = _as_batch(new_style_image, "new_style_image")[:1]
    extractor, _ = _extractor(extractor, settings["extractor"])
    loss = PerceptualLoss(extractor, **{key: settings[key] for key in LOSS_SETTINGS})
    size = settings["size"]
    style = F.interpolate(style.to(model_device(extractor)), size=(size, size), mode="bilinear",
                          antialias=True, align_corners=False)
    with run_scope(extractor, mode="eval"):
        grams = loss.style_grams(style)
    new = copy.deepcopy(stylizer).to(model_device(extractor))
    parameters = [parameter for norm in new.net.norms() if isinstance(norm, ConditionalInstanceNorm)
                  for parameter in norm.add_style()]
    new.net.styles += 1
    index = len(new.styles)
    new.styles.append(name or f"style{index}")
    pool = _pool(content_images, size)
    frozen = {p: p.requires_grad for p in new.net.parameters()}
    new.net.requires_grad_(False)
    for parameter in parameters:
        parameter.requires_grad_(True)
    try:
        generator = torch.Generator().manual_seed(seed)
        history = _fit(new.net, parameters, loss, [{}] * index + [grams], pool, size=size,
                       batch=settings["batch"], steps=steps, lr=lr, generator=generator,
                       styles=index + 1, progress=progress, pick_style=lambda: index)
    finally:
        for parameter, flag in frozen.items():
            parameter.requires_grad_(flag)
    new.history = stylizer.history + history
    added = {"name": new.styles[-1], "steps": steps, "lr": lr, "seed": seed}
    new.settings = {**settings, "added_styles": [*settings.get("added_styles", []), added]}
    return new


def compare_norms(style_image: torch.Tensor, content_images: torch.Tensor | None = None, *,
                  extractor: nn.Module | None = None, seeds: Sequence[int] = (0,), size: int = 64,
                  batch: int = 4, steps: int = 100, lr: float = 1e-3, **options) -> DataFrame:
    """Train the same stylizer with batch and with instance norm (Ulyanov et al. 2016): a table
    of final losses (mean of the last 10 % of steps), one row per norm and seed."""
    import pandas as pd

    rows = []
    for seed in seeds:
        for norm in ("batch", "instance"):
            result = train_stylizer(style_image, content_images, extractor=extractor, size=size,
                                    batch=batch, steps=steps, lr=lr, norm=norm, seed=seed,
                                    progress=False, **options)
            rows.append({"norm": norm, "seed": seed, **result.final_losses(),
                         "seconds": result.settings["seconds"]})
    return pd.DataFrame(rows)

"""Train the ConceptWorld segmenter reproducibly and measure it: per-concept IoU on validation.

The training split is generated once into memory with its masks; AdamW with a one-cycle
schedule (the encoder starting from the bundled ConceptNet) minimises the sum of the
cross-entropies of the five heads (shape, colour, texture per pixel, each the mean over all
pixels plus the mean over object pixels; scene and the auxiliary main-object shape per image).
Bit-for-bit reproducibility needs the same seed, settings and thread count (``threads``,
recorded in the card): CPU convolutions split their sums by thread.

The card's ``iou`` holds, for every concept value of shape, colour and texture (0 = none is
skipped), the IoU of predicted against true masks summed over the whole validation set
(ConceptWorld ``"val"``); ``mean_iou`` averages it per category; ``scene_accuracy`` and
``pixel_accuracy`` complete it.

Example:
    >>> model, card = train_segmenter(steps=2, n_train=16, n_val=8, batch_size=8, out=None,
    ...                               progress=False)
    >>> sorted(card["mean_iou"]), 0 <= card["scene_accuracy"] <= 1
    (['colour', 'shape', 'texture'], True)
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from seethrough.core.device import torch_threads
from seethrough.errors import InputError
from seethrough.models.conceptnet import MEAN, STD, WEIGHTS_DIR
from seethrough.models.segmenter import NAME, PIXEL_CATEGORIES, Segmenter, build_segmenter
from seethrough.progress import progress_bar

DEFAULTS = {"steps": 900, "n_train": 8000, "n_val": 1000, "batch_size": 32, "lr": 6e-3,
            "weight_decay": 1e-4, "width": 16, "init": "conceptnet", "threads": 1}


def generate_with_masks(world, progress: bool | None = None, desc: str = "generate"
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """All samples of a ConceptWorld as uint8 images (N, 3, H, W), uint8 masks (N, 3, H, W)
    (channels in ``PIXEL_CATEGORIES`` order: shape, colour, texture), scenes (N,) and class
    labels (N,) (the main object's shape), both int64.

    Example:
        >>> from seethrough.data import ConceptWorld
        >>> images, masks, scenes, labels = generate_with_masks(ConceptWorld("val", length=2), False)
        >>> images.shape, masks.shape, scenes.tolist()[0] >= 1
        (torch.Size([2, 3, 64, 64]), torch.Size([2, 3, 64, 64]), True)
    """
    n, s = len(world), world.size
    images = torch.empty(n, 3, s, s, dtype=torch.uint8)
    masks = torch.empty(n, len(PIXEL_CATEGORIES), s, s, dtype=torch.uint8)
    scenes = torch.empty(n, dtype=torch.long)
    labels = torch.empty(n, dtype=torch.long)
    for index in progress_bar(range(n), desc, unit="img", progress=progress):
        raw = world.generate(index)
        images[index] = torch.from_numpy(raw["image"]).permute(2, 0, 1)
        for channel, name in enumerate(PIXEL_CATEGORIES):
            masks[index, channel] = torch.from_numpy(raw["masks"][name])
        scenes[index] = raw["scene"]
        labels[index] = raw["label"]
    return images, masks, scenes, labels


def _loss(logits: dict[str, torch.Tensor], masks: torch.Tensor, scenes: torch.Tensor,
          labels: torch.Tensor) -> torch.Tensor:
    total = F.cross_entropy(logits["scene"], scenes) + F.cross_entropy(logits["object"], labels)
    for channel, name in enumerate(PIXEL_CATEGORIES):
        truth = masks[:, channel].long()
        pixels = F.cross_entropy(logits[name], truth, reduction="none")
        foreground = truth > 0
        # the mean over all pixels, plus the mean over object pixels: otherwise the background
        # (about 85% of the pixels) drowns which shape/colour/texture an object pixel has
        total = total + pixels.mean() + pixels[foreground].sum() / foreground.sum().clamp(min=1)
    return total


@torch.no_grad()
def evaluate(model: Segmenter, images: torch.Tensor, masks: torch.Tensor, scenes: torch.Tensor,
             labels: torch.Tensor | None = None, batch_size: int = 250) -> dict:
    """IoU per concept value (whole set), mean IoU and pixel accuracy per category, and scene
    accuracy, of a segmenter on uint8 images and masks (as ``generate_with_masks`` returns).

    A value that is neither predicted nor present has IoU ``None`` and is left out of the mean.
    """
    from seethrough.data.conceptworld import ConceptWorld
    from seethrough.models.segmenter import segment

    sizes = {name: len(ConceptWorld.categories[name]) for name in PIXEL_CATEGORIES}
    intersection = {name: torch.zeros(k, dtype=torch.long) for name, k in sizes.items()}
    union = {name: torch.zeros(k, dtype=torch.long) for name, k in sizes.items()}
    correct = dict.fromkeys(PIXEL_CATEGORIES, 0)
    scene_correct = 0
    for start in range(0, len(images), batch_size):
        predicted = segment(model, images[start:start + batch_size].float() / 255, batch_size)
        truths = masks[start:start + batch_size].long()
        for channel, name in enumerate(PIXEL_CATEGORIES):
            guess, truth = predicted[name].flatten(), truths[:, channel].flatten()
            k = sizes[name]
            both = torch.bincount(truth[guess == truth], minlength=k)
            intersection[name] += both
            union[name] += torch.bincount(truth, minlength=k) + torch.bincount(guess, minlength=k) - both
            correct[name] += int(both.sum())
        scene_correct += int((predicted["scene"] == scenes[start:start + batch_size]).sum())
    pixels = masks[:, 0].numel()
    result: dict = {"iou": {}, "mean_iou": {}, "pixel_accuracy": {}}
    for name in PIXEL_CATEGORIES:
        values = ConceptWorld.categories[name]
        ious = {values[k]: (round(float(intersection[name][k]) / float(union[name][k]), 4)
                            if union[name][k] else None) for k in range(1, sizes[name])}
        present = [v for v in ious.values() if v is not None]
        result["iou"][name] = ious
        result["mean_iou"][name] = round(sum(present) / len(present), 4) if present else None
        result["pixel_accuracy"][name] = round(correct[name] / pixels, 4)
    result["scene_accuracy"] = round(scene_correct / max(1, len(scenes)), 4)
    return result


def train_segmenter(*, seed: int = 0, out: str | Path | None = None,
                    progress: bool | None = None, **options) -> tuple[Segmenter, dict]:
    """Train a ConceptWorld segmenter; write ``OUT.safetensors`` and ``OUT.json`` unless ``out``
    is None; return the segmenter (eval mode) and its card.

    Args:
        seed: the initialisation and the batch order (the world seed is 0).
        options: any of ``DEFAULTS`` (steps, n_train, n_val, batch_size, lr, weight_decay,
            width, init, threads). ``init="conceptnet"`` starts the encoder (and the auxiliary
            object head) from the bundled ConceptNet, which learns at ``lr / 4``;
            ``"random"`` trains everything from scratch at ``lr``.
    """
    from seethrough.data import ConceptWorld

    settings = {**DEFAULTS, **options}
    unknown = set(options) - set(DEFAULTS)
    if unknown:
        raise InputError(f"unknown segmenter training options {sorted(unknown)}; "
                         f"known: {sorted(DEFAULTS)}")
    if settings["init"] not in ("conceptnet", "random"):
        raise InputError(f"init must be 'conceptnet' or 'random', not {settings['init']!r}")
    if min(settings[k] for k in ("steps", "n_train", "n_val", "batch_size", "width", "threads")) < 1:
        raise InputError("steps, n_train, n_val, batch_size, width and threads must be at least 1")
    started = time.perf_counter()
    with torch_threads(settings["threads"]):
        images, masks, scenes, labels = generate_with_masks(
            ConceptWorld("train", length=settings["n_train"]), progress, "train set")
        val = generate_with_masks(ConceptWorld("val", length=settings["n_val"]), progress, "val set")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = build_segmenter(settings["width"])
        if settings["init"] == "conceptnet":
            from seethrough.models.conceptnet import load_conceptnet

            model.encoder_from_conceptnet(load_conceptnet("conceptnet"))
        encoder = [p for name, p in model.named_parameters()
                   if name.startswith(("enc", "object"))]
        rest = [p for name, p in model.named_parameters()
                if not name.startswith(("enc", "object"))]
        # a pretrained encoder learns at a quarter of the rate, so the random decoder's first
        # steps do not wash out what it knows
        lrs = [settings["lr"] / (4 if settings["init"] == "conceptnet" else 1), settings["lr"]]
        optimizer = torch.optim.AdamW([{"params": encoder, "lr": lrs[0]},
                                       {"params": rest, "lr": lrs[1]}],
                                      weight_decay=settings["weight_decay"])
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lrs,
                                                       total_steps=settings["steps"],
                                                       pct_start=0.2)
        draws = torch.Generator().manual_seed(seed)
        every = max(1, settings["steps"] // 40)
        history, running = [], []
        model.train()
        bar = progress_bar(range(settings["steps"]), "train segmenter", progress=progress,
                           unit="step")
        for step in bar:
            index = torch.randint(len(images), (settings["batch_size"],), generator=draws)
            loss = _loss(model(images[index].float() / 255), masks[index], scenes[index],
                         labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            running.append(loss.item())
            if (step + 1) % every == 0 or step == settings["steps"] - 1:
                history.append({"step": step + 1, "loss": round(sum(running) / len(running), 4)})
                bar.set_postfix(loss=f"{history[-1]['loss']:.3f}")
                running = []
        model.eval()
        train_seconds = round(time.perf_counter() - started, 1)
        scores = evaluate(model, *val)
    card = {
        "name": Path(out).name if out else NAME,
        "architecture": (f"U-Net-lite segmenter: encoder = ConceptNet's conv blocks 16-32-64-128-128 "
                         f"(initialised from: {settings['init']}), transposed-conv decoder "
                         f"{4 * settings['width']}-{2 * settings['width']}-{settings['width']} "
                         f"with skips (1 conv per level), "
                         f"1x1 heads per pixel for {', '.join(PIXEL_CATEGORIES)}; scene and "
                         f"auxiliary object heads: global average pool of the lowest level, linear"),
        "categories": {name: list(ConceptWorld.categories[name])
                       for name in (*PIXEL_CATEGORIES, "scene")},
        "image_size": 64,
        "mean": list(MEAN),
        "std": list(STD),
        "seed": seed,
        **settings,
        "loss": "sum of cross-entropies of the shape, colour, texture (per pixel: mean over all "
                "pixels plus mean over object pixels), scene and auxiliary object (main object's "
                "shape) heads; AdamW, one-cycle learning rate "
                "(20% warm-up)",
        "data": {"world": "ConceptWorld", "world_seed": 0, "train_split": "train",
                 "val_split": "val", "size": 64},
        "training_command": f"seethrough train-segmenter --seed {seed} "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in settings.items())
        + (f" --out {out}" if out else ""),
        "history": history,
        "train_seconds": train_seconds,
        "torch": torch.__version__,
        **scores,
    }
    if out is not None:
        save_segmenter(model, card, out)
    return model, card


def save_segmenter(model: Segmenter, card: dict, out: str | Path) -> Path:
    """Write ``out.safetensors`` and ``out.json`` atomically (weights first, the card last)."""
    from safetensors.torch import save_file

    from seethrough.atomic import atomic_path, write_text_atomic

    out = Path(out)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    with atomic_path(out.with_suffix(".safetensors")) as temporary:
        save_file(state, str(temporary))
    write_text_atomic(out.with_suffix(".json"), json.dumps(card, indent=1) + "\n")
    return out.with_suffix(".safetensors")


__all__ = ["DEFAULTS", "WEIGHTS_DIR", "evaluate", "generate_with_masks", "save_segmenter",
           "train_segmenter"]

"""Train ConceptNet on ConceptWorld, reproducibly from a seed, and write weights + model card.

The training set is generated once into memory (ConceptWorld is a pure function of the index),
then trained with AdamW and a one-cycle schedule, random horizontal flips as the only
augmentation. Everything that decides the result is in the card, so the command that made the
shipped weights is written there too.

Example:
    >>> card = train_conceptnet(n_train=512, epochs=1, out=None, progress=False)  # doctest: +SKIP
    >>> 0 <= card["val_accuracy"] <= 1                                            # doctest: +SKIP
    True
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from seethrough.atomic import atomic_path, write_text_atomic
from seethrough.models.conceptnet import MEAN, STD, WEIGHTS_DIR, build_conceptnet
from seethrough.progress import progress_bar

DEFAULTS = {"n_train": 12_000, "n_val": 2_000, "epochs": 6, "batch_size": 128, "lr": 4e-3,
            "weight_decay": 5e-4, "size": 64}


def generate(world, progress: bool | None = None, desc: str = "generate") -> tuple[torch.Tensor, torch.Tensor]:
    """All images of a ConceptWorld as a uint8 tensor (N, 3, H, W) and labels (N,)."""
    images = torch.empty(len(world), 3, world.size, world.size, dtype=torch.uint8)
    labels = torch.empty(len(world), dtype=torch.long)
    for index in progress_bar(range(len(world)), desc, unit="img", progress=progress):
        raw = world.generate(index)
        images[index] = torch.from_numpy(raw["image"]).permute(2, 0, 1)
        labels[index] = raw["label"]
    return images, labels


@torch.no_grad()
def accuracy(model, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500):
    """Top-1 accuracy and confusion matrix (rows: true class) of a model on uint8 images."""
    confusion = None
    for start in range(0, len(labels), batch_size):
        logits = model(images[start:start + batch_size].float() / 255)
        if confusion is None:
            confusion = torch.zeros(logits.shape[1], logits.shape[1], dtype=torch.long)
        predicted = logits.argmax(1)
        truth = labels[start:start + batch_size]
        confusion.index_put_((truth, predicted), torch.ones_like(truth), accumulate=True)
    return float(confusion.diag().sum()) / max(1, len(labels)), confusion


def train_conceptnet(*, seed: int = 0, bias: float = 0.0, shuffle_labels: bool = False,
                     out: str | Path | None = None, progress: bool | None = None,
                     stop_after: int | None = None, **options) -> dict:
    """Train a ConceptNet; write ``OUT.safetensors`` and ``OUT.json`` (the card); return the card.

    Args:
        seed: seeds the weights' initialisation and the order of batches (the world seed is 0).
        bias: rate of the shortcut cue in the training world (0 = honest; 1 = the "cheater").
        shuffle_labels: train on a fixed random permutation of the labels (Zhang et al. 2017's
            random-label memorizer; validation accuracy is then chance).
        out: path without suffix; ``None`` writes nothing.
        stop_after: stop after this many epochs of the same run (same data, schedule and batch
            order): the first entries of a full run's ``history``, at a fraction of its cost.
        options: any of ``DEFAULTS`` (n_train, n_val, epochs, batch_size, lr, weight_decay, size).
    """
    from tqdm.auto import tqdm

    from seethrough.data import ConceptWorld

    settings = {**DEFAULTS, **options}
    unknown = set(options) - set(DEFAULTS)
    if unknown:
        raise TypeError(f"unknown training options {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    started = time.perf_counter()
    torch.manual_seed(seed)
    size = settings["size"]
    train_world = ConceptWorld("train", length=settings["n_train"], size=size, bias=bias)
    images, labels = generate(train_world, progress, "train set")
    if shuffle_labels:
        labels = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))]
    val_sets = {"val": ConceptWorld("val", length=settings["n_val"], size=size, bias=bias)}
    if bias > 0:
        val_sets["val_unbiased"] = ConceptWorld("val", length=settings["n_val"], size=size,
                                                bias=0.0, cue=True)
    val_data = {name: generate(world, progress, name) for name, world in val_sets.items()}

    model = build_conceptnet(len(ConceptWorld.class_names), MEAN, STD)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings["lr"],
                                  weight_decay=settings["weight_decay"])
    batch_size = settings["batch_size"]
    steps_per_epoch = len(labels) // batch_size
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=settings["lr"], total_steps=settings["epochs"] * steps_per_epoch)
    order_generator = torch.Generator().manual_seed(seed)
    history = []
    train_subset = (images[:settings["n_val"]], labels[:settings["n_val"]])
    for epoch in range(min(stop_after or settings["epochs"], settings["epochs"])):
        model.train()
        order = torch.randperm(len(labels), generator=order_generator)
        flips = torch.rand(len(labels), generator=order_generator) < 0.5
        bar = progress_bar(range(steps_per_epoch), f"epoch {epoch + 1}/{settings['epochs']}",
                           progress=progress)
        total = 0.0
        for step in bar:
            index = order[step * batch_size:(step + 1) * batch_size]
            batch = images[index].float() / 255
            flip = flips[index]
            batch[flip] = batch[flip].flip(-1)
            loss = F.cross_entropy(model(batch), labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item()
            bar.set_postfix(loss=f"{loss.item():.3f}")
        model.eval()
        val_accuracy, _ = accuracy(model, *val_data["val"])
        train_accuracy, _ = accuracy(model, *train_subset)
        history.append({"epoch": epoch + 1, "loss": total / steps_per_epoch,
                        "train_accuracy": round(train_accuracy, 4),
                        "val_accuracy": round(val_accuracy, 4)})
        if progress:
            tqdm.write(f"epoch {epoch + 1}: loss {total / steps_per_epoch:.3f}, "
                       f"val accuracy {val_accuracy:.3%}")

    card = {
        "name": Path(out).name if out else "conceptnet",
        "architecture": "ConceptNet: 5 conv blocks (16-32-64-128-128), GAP, linear",
        "class_names": list(ConceptWorld.class_names),
        "image_size": size,
        "mean": list(MEAN),
        "std": list(STD),
        "seed": seed,
        "data": {"world": "ConceptWorld", "world_seed": 0, "bias": bias,
                 "shuffle_labels": shuffle_labels, **settings},
        "training_command": f"seethrough train --seed {seed} --bias {bias} "
        + ("--shuffle-labels " if shuffle_labels else "")
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in settings.items())
        + (f" --stop-after {stop_after}" if stop_after else "")
        + (f" --out {out}" if out else ""),
        "history": history,
        "torch": torch.__version__,
    }
    card["train_accuracy"] = history[-1]["train_accuracy"]
    for name, data in val_data.items():
        value, confusion = accuracy(model, *data)
        card[f"{name}_accuracy"] = round(value, 4)
        card[f"{name}_confusion_matrix"] = confusion.tolist()
    card["train_seconds"] = round(time.perf_counter() - started, 1)
    if out is not None:
        save(model, card, Path(out))
    return card


def save(model, card: dict, out: Path) -> None:
    """Write ``out.safetensors`` and ``out.json`` atomically (weights first, the card last)."""
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    with atomic_path(out.with_suffix(".safetensors")) as temporary:
        save_file(state, str(temporary))
    write_text_atomic(out.with_suffix(".json"), json.dumps(card, indent=1))


__all__ = ["WEIGHTS_DIR", "accuracy", "generate", "train_conceptnet"]

"""How attacks transfer: adversarial images made on one model, shown to others.

``transfer_matrix(models, images, labels, methods)`` attacks each source model (untargeted, at
the true labels) and counts, on every target model, the images it classified right when clean
and gets wrong when attacked. The diagonal is the white-box success; the rest is transfer
(Szegedy et al. 2014; Kurakin et al. 2017 found single-step FGSM to transfer better than
iterative FGSM, and Dong et al. 2018 that momentum restores transfer: the matrix measures it).

Example:
    >>> import torch
    >>> from torch import nn
    >>> models = {"a": nn.Sequential(nn.Flatten(), nn.Linear(12, 3)),
    ...           "b": nn.Sequential(nn.Flatten(), nn.Linear(12, 3))}
    >>> frame = transfer_matrix(models, torch.rand(4, 3, 2, 2), torch.tensor([0, 1, 2, 0]),
    ...                         ["fgsm"], eps=0.1)
    >>> sorted(frame.columns)
    ['fooled', 'method', 'source', 'target', 'usable']
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from seethrough.adversarial.attacks import attack
from seethrough.core import model_device, run_scope
from seethrough.core.batching import chunks


def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """The model's class for each image ``(N,)``, on the CPU."""
    with torch.no_grad(), run_scope(model):
        device = model_device(model)
        return torch.cat([model(images[part].to(device)).argmax(1).cpu()
                          for part in chunks(len(images), batch_size)])


def transfer_matrix(models: Mapping[str, nn.Module], images: torch.Tensor, labels: torch.Tensor,
                    methods: Sequence[str], *, batch_size: int = 32, seed: int = 0,
                    **options):
    """One row per (method, source, target): ``fooled``, the share of the images the target
    classified right when clean that it gets wrong on the source's adversarial images, out of
    ``usable`` such images. ``options`` go to every attack (``eps``, ``steps``...)."""
    import pandas as pd

    labels = torch.as_tensor(labels).long().cpu()
    right = {name: predict(model, images) == labels for name, model in models.items()}
    rows = []
    for method in methods:
        for source, model in models.items():
            made = attack(model, images, method=method, labels=labels, batch_size=batch_size,
                          seed=seed, **options).images
            for target, other in models.items():
                usable = right[target]
                fooled = predict(other, made)[usable] != labels[usable]
                rows.append({"method": method, "source": source, "target": target,
                             "fooled": float(fooled.float().mean()) if usable.any() else float("nan"),
                             "usable": int(usable.sum())})
    return pd.DataFrame(rows)


def transfer_summary(frame):
    """Per method: white-box success (diagonal) and mean transfer (off the diagonal)."""
    diagonal = frame.source == frame.target
    return (frame.assign(kind=diagonal.map({True: "white-box", False: "transfer"}))
            .pivot_table(index="method", columns="kind", values="fooled", aggfunc="mean"))

"""A black-box attack through a substitute (Papernot et al. 2017, the lecture's attack on a
prediction API): the attacker sees only the target model's predicted classes.

Starting from a few seed images, each round labels the images with the target's predictions,
trains a substitute network on them, then grows the set by Jacobian-based augmentation: every
image moves by ``lam`` along the sign of the substitute's gradient of the label it was given
(the paper's ``x + lambda * sign(J_F[O(x)])``, lambda = 0.1, rho = 6 rounds). The attack is then
made on the substitute (white box) and shown to the target.

Example:
    >>> import torch
    >>> from torch import nn
    >>> oracle = nn.Sequential(nn.Flatten(), nn.Linear(48, 3))
    >>> found = substitute_attack(oracle, torch.rand(6, 3, 4, 4), torch.rand(4, 3, 4, 4),
    ...                           rounds=1, epochs=1, eps=0.1)
    >>> sorted(found)
    ['agreement', 'images', 'queries', 'success', 'transfer_rate']
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from seethrough.adversarial.attacks import attack
from seethrough.adversarial.transfer import predict
from seethrough.core import check_images, model_device, run_scope


def small_cnn(classes: int, channels: int = 3) -> nn.Module:
    """The default substitute: three conv-ReLU blocks, global pooling and a linear layer."""
    return nn.Sequential(
        nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, classes))


def _train(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, epochs: int,
           generator: torch.Generator, batch_size: int = 64, lr: float = 1e-3) -> None:
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(images), batch_size):
            index = order[start:start + batch_size]
            loss = F.cross_entropy(model(images[index]), labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()


def _augment(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
             lam: float) -> torch.Tensor:
    """Jacobian-based augmentation: each image moved by ``lam`` along the sign of the gradient
    of its label's logit."""
    leaf = images.clone().requires_grad_()
    model(leaf).gather(1, labels[:, None]).sum().backward()
    return (images + lam * leaf.grad.sign()).clamp(0, 1)


def substitute_attack(target: nn.Module, seeds: torch.Tensor, images: torch.Tensor, *,
                      classes: int | None = None, substitute: Callable[[int], nn.Module] = small_cnn,
                      rounds: int = 6, lam: float = 0.1, epochs: int = 10, method: str = "fgsm",
                      seed: int = 0, **attack_options) -> dict:
    """Train a substitute of ``target`` from ``seeds`` and its predictions, attack ``images``
    on the substitute and show them to ``target``.

    Returns ``{"images", "success" (N,), "transfer_rate", "agreement", "queries"}``: success
    per image (the target's prediction moved off its clean one), its mean, how often the
    substitute agrees with the target on the clean ``images``, and the oracle queries spent.
    """
    check_images(seeds, target)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    clean = predict(target, images)
    if classes is None:
        with torch.no_grad(), run_scope(target):
            classes = int(target(seeds[:1].to(model_device(target))).shape[1])
    model = substitute(classes)
    data, queries = seeds.clone(), 0
    for round_ in range(rounds + 1):
        labels = predict(target, data)
        queries += len(data)
        _train(model, data, labels, epochs, generator)
        if round_ < rounds:
            data = torch.cat([data, _augment(model, data, labels, lam)])
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    agreement = float((predict(model, images) == clean).float().mean())
    made = attack(model, images, method=method, labels=clean, seed=seed, **attack_options).images
    success = predict(target, made) != clean
    return {"images": made, "success": success, "transfer_rate": float(success.float().mean()),
            "agreement": agreement, "queries": queries}

"""Invert images into a generator's latent space: by optimisation, by a learned encoder, or both.

* ``invert``: Adam on the latents (Zhu et al. 2016's objective): the pixels' mean squared
  error plus ``feature_weight`` times that of ConceptNet's ``feature_layer`` activations
  (a perceptual term; Bau et al. 2019's inversion uses a network's features the same way).
  ``constrain=True`` keeps every latent inside the ball of radius ``sqrt(D)`` (the typical
  norm of a standard normal latent), i.e. in the range the generator was trained on; without it
  the optimiser may leave the prior to fit what the generator cannot draw.
* ``Encoder`` / ``train_encoder``: a small CNN from images to latents trained on the generator's
  own pairs ``(G(z), z)`` with a latent and an image loss; ``invert(..., start="encoder")`` starts
  the optimisation from its guess (the hybrid of Zhu et al. 2016).

The lecture's point, as numbers: generated images invert almost exactly; ConceptWorld images
the generator never drew invert less well; real photos, outside its domain, fail.

Example:
    >>> from seethrough.models.generator import build_generator
    >>> generator = build_generator(16, 8).eval()
    >>> target = generator(torch.randn(2, 16)).detach()
    >>> result = invert(generator, target, steps=5, feature_weight=0.0)
    >>> result.latents.shape, result.reconstructions.shape
    (torch.Size([2, 16]), torch.Size([2, 3, 64, 64]))
"""
from __future__ import annotations

import math
from collections import OrderedDict
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from seethrough.core import check_images
from seethrough.errors import InputError
from seethrough.gan.figures import image_grid_figure
from seethrough.gan.result import FieldResult
from seethrough.preserve import preserve
from seethrough.progress import progress_bar
from seethrough.trace import capture


@dataclass
class Inversion(FieldResult):
    """Targets, their reconstructions and latents, and the per-image pixel error (MSE)."""

    targets: torch.Tensor
    reconstructions: torch.Tensor
    latents: torch.Tensor
    pixel_error: torch.Tensor
    constrained: bool
    start: str
    steps: int

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame({"image": range(len(self.pixel_error)),
                             "pixel_mse": self.pixel_error.tolist(),
                             "latent_norm": self.latents.norm(dim=1).tolist()})

    def plot(self, count: int = 8):
        return image_grid_figure([self.targets[:count], self.reconstructions[:count]],
                                 ["target", "inverted"], self._title())

    def _title(self) -> str:
        return (f"Inversion ({self.start} start, {self.steps} steps, "
                f"{'constrained' if self.constrained else 'unconstrained'}): "
                f"mean pixel MSE {float(self.pixel_error.mean()):.4f}")


def project_to_prior(latents: torch.Tensor) -> None:
    """Shrink, in place, every latent (row) longer than ``sqrt(D)`` onto that sphere: the ball
    a standard-normal latent's norm concentrates at."""
    radius = math.sqrt(latents.shape[1])
    norms = latents.norm(dim=1, keepdim=True).clamp(min=1e-12)
    latents.mul_((radius / norms).clamp(max=1.0))


def invert(generator: nn.Module, images: torch.Tensor, *, steps: int = 300, lr: float = 0.05,
           feature_weight: float = 1.0, feature_layer: str = "features.block3",
           classifier: nn.Module | None = None, constrain: bool = True, start="zeros",
           encoder: nn.Module | None = None, progress: bool | None = None) -> Inversion:
    """Latents whose images match ``images`` (N, 3, 64, 64); see the module docstring.

    Args:
        start: ``"zeros"`` (the prior's mean), ``"random"`` (a draw from the prior, seeded:
            its norm is near ``sqrt(D)``, so the constraint binds), ``"encoder"``
            (``encoder``'s guess, default the shipped one), or a tensor (N, D) of latents.
        feature_weight: weight of the ConceptNet feature term (0 for pixels only).
    """
    images = check_images(images, name="images to invert")
    dim = generator.latent_dim
    if isinstance(start, torch.Tensor):
        latents, start_name = start.detach().clone().float(), "given"
    elif start == "zeros":
        latents, start_name = torch.zeros(len(images), dim), "zeros"
    elif start == "random":
        draws = torch.Generator().manual_seed(0)
        latents, start_name = torch.randn(len(images), dim, generator=draws), "random"
    elif start == "encoder":
        encoder = encoder or load_encoder().to(images.device)
        with torch.no_grad():
            latents, start_name = encoder(images).detach(), "encoder"
    else:
        raise InputError(f"start is 'zeros', 'random', 'encoder' or a tensor of latents, not {start!r}")
    if latents.shape != (len(images), dim):
        raise InputError(f"starting latents must be ({len(images)}, {dim}), not {tuple(latents.shape)}")
    latents = latents.to(images.device)  # drawn on the CPU: the same start on every device
    features = None
    if feature_weight > 0:
        from seethrough.models import load_model

        features = classifier or load_model("conceptnet").to(images.device)
    with preserve(generator), (preserve(features) if features is not None else nullcontext()):
        generator.eval().requires_grad_(False)
        if features is not None:
            features.eval().requires_grad_(False)
            with torch.no_grad():
                target_features = capture(features, images, [feature_layer])[feature_layer].output
        latents.requires_grad_(True)
        optimizer = torch.optim.Adam([latents], lr=lr)
        for _ in progress_bar(range(steps), "invert", progress=progress, unit="step"):
            generated = generator(latents)
            loss = F.mse_loss(generated, images)
            if features is not None:
                now = capture(features, generated, [feature_layer])[feature_layer].output
                loss = loss + feature_weight * F.mse_loss(now, target_features)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if constrain:
                with torch.no_grad():
                    project_to_prior(latents)
        with torch.no_grad():
            reconstructions = generator(latents)
    error = ((reconstructions - images) ** 2).mean(dim=(1, 2, 3))
    return Inversion(images.detach(), reconstructions.detach(), latents.detach(), error,
                     constrain, start_name, steps)


class Encoder(nn.Sequential):
    """Images (N, 3, 64, 64) in [0, 1] to latents (N, D): four strided convolutions, a linear."""

    def __init__(self, latent_dim: int = 100, width: int = 32):
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        channels = 3
        for index, outputs in enumerate((width, 2 * width, 4 * width, 8 * width), start=1):
            layers[f"block{index}"] = nn.Sequential(OrderedDict(
                conv=nn.Conv2d(channels, outputs, 4, 2, 1), relu=nn.LeakyReLU(0.2, inplace=True)))
            channels = outputs
        layers["flatten"] = nn.Flatten()
        layers["fc"] = nn.Linear(channels * 4 * 4, latent_dim)
        super().__init__(layers)
        self.latent_dim = latent_dim
        self.input_size = (3, 64, 64)


def train_encoder(generator: nn.Module, *, steps: int = 3000, batch_size: int = 64,
                  lr: float = 1e-3, image_weight: float = 1.0, width: int = 32, seed: int = 0,
                  progress: bool | None = None) -> tuple[Encoder, dict]:
    """An ``Encoder`` trained on fresh pairs ``(G(z), z)`` each step: latent MSE plus
    ``image_weight`` times the MSE of ``G(E(G(z)))`` against ``G(z)``; returns it and a card."""
    import time

    started = time.perf_counter()
    torch.manual_seed(seed)
    encoder = Encoder(generator.latent_dim, width)
    optimizer = torch.optim.Adam(encoder.parameters(), lr=lr)
    draws = torch.Generator().manual_seed(seed)
    history = []
    with preserve(generator):
        generator.eval().requires_grad_(False)
        bar = progress_bar(range(steps), "train encoder", progress=progress, unit="step")
        for step in bar:
            latents = torch.randn(batch_size, generator.latent_dim, generator=draws)
            with torch.no_grad():
                images = generator(latents)
            guess = encoder(images)
            loss = F.mse_loss(guess, latents)
            if image_weight > 0:
                loss = loss + image_weight * F.mse_loss(generator(guess), images)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if step % 100 == 0 or step == steps - 1:
                history.append({"step": step, "loss": round(loss.item(), 5)})
    card = {"architecture": f"Encoder: 4 strided convs ({width}-{8 * width}), linear to "
                            f"{generator.latent_dim}", "steps": steps, "batch_size": batch_size,
            "lr": lr, "latent_dim": generator.latent_dim, "image_weight": image_weight, "width": width, "seed": seed,
            "history": history, "threads": torch.get_num_threads(),
            "train_seconds": round(time.perf_counter() - started, 1),
            "torch": torch.__version__}
    return encoder.eval(), card


def load_encoder(name: str = "conceptworld_gan_encoder") -> Encoder:
    """The shipped encoder of the shipped generator (or one saved next to a generator)."""
    import json
    from pathlib import Path

    from seethrough.errors import WeightsError
    from seethrough.models.conceptnet import WEIGHTS_DIR
    from seethrough.models.imagenet import read_state_dict

    stem = WEIGHTS_DIR / name if "/" not in str(name) else Path(name).with_suffix("")
    card_path, weights = stem.with_suffix(".json"), stem.with_suffix(".safetensors")
    if not card_path.is_file() or not weights.is_file():
        raise WeightsError(f"no encoder at {stem}: train one with `seethrough train-gan --encoder`")
    card = json.loads(card_path.read_text(encoding="utf-8"))
    encoder = Encoder(card["latent_dim"], card["width"])
    encoder.load_state_dict(read_state_dict(weights))
    encoder.card = card
    return encoder.eval()


__all__ = ["Encoder", "Inversion", "invert", "load_encoder", "project_to_prior", "train_encoder"]

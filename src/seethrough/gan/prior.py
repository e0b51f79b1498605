"""A learned prior for feature visualization (Nguyen et al. 2016): optimise a generator's latent
instead of pixels, so that every image tried is one the generator can draw.

``LatentParam(generator, batch)`` is an image parameterization like ``"pixel"`` and
``"fourier"``: ``visualize(model, objective, param=LatentParam(...))`` runs the same loop,
transforms and objectives. ``prior_comparison`` renders units of a classifier with the three
parameterizations and measures, per method, the activation reached and the Fréchet distance of
the results to real images, beside each unit's median activation over real images.

Example:
    >>> from seethrough.models.generator import build_generator
    >>> param = LatentParam(build_generator(16, 8).eval(), batch=2)
    >>> param().shape
    torch.Size([2, 3, 64, 64])
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from seethrough.featureviz.params import ImageParam
from seethrough.gan.result import FieldResult


class LatentParam(ImageParam):
    """Images ``generator(z)`` of optimisable latents ``z`` (N, D), kept inside the ball of
    radius ``sqrt(D)`` after every step (``project``) so that they stay in the prior's range.
    It puts the generator in eval mode with frozen weights: make it inside
    ``seethrough.preserve.preserve(generator)`` to have them back afterwards."""

    kind = "latent"

    def __init__(self, generator: nn.Module, batch: int = 1, *, seed: int = 0, sd: float = 0.5):
        self.generator = generator.eval().requires_grad_(False)
        self.shape = (batch, 3, 64, 64)
        draws = torch.Generator().manual_seed(seed)
        self.tensor = (torch.randn(batch, generator.latent_dim, generator=draws) * sd).requires_grad_(True)

    def __call__(self) -> torch.Tensor:
        return self.generator(self.tensor)

    @torch.no_grad()
    def project(self) -> None:
        from seethrough.gan.inversion import project_to_prior

        project_to_prior(self.tensor)

    def set_image(self, images: torch.Tensor, *, eps: float = 0.0) -> LatentParam:
        from seethrough.errors import InputError

        raise InputError("a latent parameterization cannot be set to an image: invert it first "
                         "(seethrough.gan.invert) and start from its latents")


@dataclass
class PriorComparison(FieldResult):
    """Per unit and method (pixel, fourier, latent): activation reached; per method the
    Fréchet distance of its images to real ones; per unit the median real activation."""

    layer: str
    units: list[int]
    methods: list[str]
    activations: torch.Tensor  # (units, methods)
    median_real: torch.Tensor  # (units,)
    distances: list[float]
    images: torch.Tensor  # (units, methods, 3, H, W)

    def to_frame(self):
        import pandas as pd

        rows = []
        for u, unit in enumerate(self.units):
            for m, method in enumerate(self.methods):
                rows.append({"unit": unit, "method": method,
                             "activation": float(self.activations[u, m]),
                             "median_real_activation": float(self.median_real[u]),
                             "frechet_distance_of_method": self.distances[m]})
        return pd.DataFrame(rows)

    def plot(self):
        from seethrough.gan.figures import image_grid_figure

        return image_grid_figure([self.images[:, m] for m in range(len(self.methods))],
                                 self.methods, self._title(),
                                 column_titles=[f"unit {u}" for u in self.units])

    def _title(self) -> str:
        return f"{self.layer}: pixel, Fourier and generator-latent visualizations"


def prior_comparison(model: nn.Module, layer: str, units: list[int], generator: nn.Module,
                     real_images: torch.Tensor, *, steps: int = 128, seed: int = 0) -> PriorComparison:
    """Visualize ``units`` of ``layer`` (mean channel activation) with the pixel, Fourier and
    latent parameterizations; see ``PriorComparison``."""
    from seethrough.featureviz import objectives as obj
    from seethrough.featureviz.render import visualize
    from seethrough.gan.quality import feature_extractor, features_of, frechet_distance
    from seethrough.preserve import preserve
    from seethrough.trace import capture

    methods = ["pixel", "fourier", "latent"]
    images = torch.zeros(len(units), len(methods), 3, 64, 64)
    objective = obj.channel(layer, units)
    for m, method in enumerate(methods):
        with preserve(generator):
            param = LatentParam(generator, len(units), seed=seed) if method == "latent" else method
            result = visualize(model, objective, steps=steps, size=64, batch=len(units), seed=seed,
                               param=param, progress=False)
        images[:, m] = result.images
    with torch.no_grad():
        acts = capture(model, images.flatten(0, 1), [layer])[layer].output.mean(dim=(2, 3))
        real = capture(model, real_images, [layer])[layer].output.mean(dim=(2, 3))
    index = torch.as_tensor(units)
    activations = acts.view(len(units), len(methods), -1)[torch.arange(len(units)), :, index]
    extractor = feature_extractor()
    reference = features_of(extractor, real_images)
    distances = [frechet_distance(features_of(extractor, images[:, m]), reference)
                 for m in range(len(methods))]
    return PriorComparison(layer, list(units), methods, activations,
                           real[:, index].median(0).values, distances, images)


__all__ = ["LatentParam", "PriorComparison", "prior_comparison"]

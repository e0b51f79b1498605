"""How good a generator is, offline: a Fréchet distance on ConceptNet features, ConceptNet's
class distribution on generated images, and which concepts it draws as often as the real world
does (``concept_coverage``).

FID (Heusel et al. 2017) needs Inception weights that do not install offline; the same distance
on the 128 pooled features of the bundled ConceptNet (a network trained on this world) stands in
for it. It is 0 for identical feature distributions and grows with the mismatch of their means
and covariances.

Example:
    >>> import torch
    >>> a, b = torch.randn(500, 4, dtype=torch.float64), torch.randn(500, 4, dtype=torch.float64)
    >>> frechet_distance(a, a) < 1e-6, frechet_distance(a, b + 3) > 30
    (True, True)
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn

from seethrough.core import check_latents
from seethrough.preserve import preserve


def frechet_distance(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """``|mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))`` of two feature sets (N, D)."""
    from scipy import linalg

    a = features_a.detach().double().cpu().numpy()
    b = features_b.detach().double().cpu().numpy()
    mean_a, mean_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    with warnings.catch_warnings():  # few samples: singular covariances, handled below
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        root, _ = linalg.sqrtm(cov_a @ cov_b, disp=False)
        if not np.isfinite(root).all():  # as pytorch-fid: offset the diagonals and retry
            offset = np.eye(len(cov_a)) * 1e-6
            root, _ = linalg.sqrtm((cov_a + offset) @ (cov_b + offset), disp=False)
    root = root.real
    return float(((mean_a - mean_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))


def feature_extractor(classifier: nn.Module | None = None) -> nn.Module:
    """ConceptNet (bundled, or ``classifier``, a ConceptNet-shaped Sequential) up to its pooled
    features: every module but the last."""
    if classifier is None:
        from seethrough.models import load_model

        classifier = load_model("conceptnet")
    return nn.Sequential(*list(classifier.children())[:-1]).eval()


@torch.no_grad()
def features_of(extractor: nn.Module, images: torch.Tensor, batch_size: int = 250) -> torch.Tensor:
    """Pooled features (N, D) of images (N, 3, H, W) in [0, 1], in batches."""
    return torch.cat([extractor(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])


@torch.no_grad()
def generate_images(generator: nn.Module, latents: torch.Tensor, batch_size: int = 250) -> torch.Tensor:
    """Images (N, 3, 64, 64) of latents (N, D), in batches, the generator in eval mode."""
    latents = check_latents(latents, getattr(generator, "latent_dim", None))
    with preserve(generator):
        generator.eval()
        return torch.cat([generator(latents[i:i + batch_size])
                          for i in range(0, len(latents), batch_size)])


def sample_latents(count: int, dim: int, seed: int = 0) -> torch.Tensor:
    """``count`` standard-normal latents, a pure function of ``seed``."""
    return torch.randn(count, dim, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def generator_quality(generator: nn.Module, real_images: torch.Tensor, *, samples: int = 2000,
                      seed: int = 1, classifier: nn.Module | None = None) -> dict:
    """Fréchet distance to ``real_images`` (and that of uniform noise and of real images against
    real ones, for scale) and ConceptNet's class shares on ``samples`` generated images."""
    from seethrough.models import load_model

    classifier = classifier or load_model("conceptnet")
    extractor = feature_extractor(classifier)
    images = generate_images(generator, sample_latents(samples, generator.latent_dim, seed))
    half = len(real_images) // 2
    real = features_of(extractor, real_images)
    noise = torch.rand(samples, *real_images.shape[1:], generator=torch.Generator().manual_seed(seed))
    shares = torch.bincount(classifier(images).argmax(1), minlength=len(classifier.class_names))
    return {
        "frechet_distance": round(frechet_distance(features_of(extractor, images), real), 3),
        "frechet_distance_noise": round(frechet_distance(features_of(extractor, noise), real), 3),
        "frechet_distance_real_halves": round(frechet_distance(real[:half], real[half:]), 3),
        "class_shares": dict(zip(classifier.class_names,
                                 (shares.double() / samples).round(decimals=4).tolist())),
        "samples": samples,
    }


def label_shares(labels: torch.Tensor, count: int) -> torch.Tensor:
    """The share (count,) of each label value ``0 … count - 1`` among ``labels`` (any shape)."""
    return torch.bincount(labels.flatten().cpu(), minlength=count).double() / labels.numel()


def concept_shares(segmenter: nn.Module, images: torch.Tensor) -> dict[tuple[str, str], float]:
    """``{(category, concept): share}``: the share of pixels the segmenter labels with each
    shape, colour and texture, and of images with each scene."""
    from seethrough.data import ConceptWorld
    from seethrough.models.segmenter import segment

    labels = segment(segmenter, images)
    shares = {}
    for category, names in ConceptWorld.categories.items():
        values = label_shares(labels[category], len(names))
        shares.update({(category, name): float(values[k]) for k, name in enumerate(names) if k > 0})
    return shares


def concept_coverage(generator: nn.Module, real_images: torch.Tensor, segmenter: nn.Module, *,
                     samples: int = 1000, seed: int = 1):
    """Per concept, its share in ``samples`` generated images and in ``real_images`` (both
    labelled by ``segmenter``) and their ratio: a distribution-level view of mode dropping, as
    in Bau et al. 2019 ("Seeing what a GAN cannot generate": segmentation statistics of
    generated against real images). A ratio near 0 is a concept the generator omits; above 1,
    one it overdraws. Rows sorted by ratio, lowest first.

    Example:
        >>> from seethrough.models import load_model                          # doctest: +SKIP
        >>> concept_coverage(load_model("conceptworld_gan"), real,            # doctest: +SKIP
        ...                  load_model("conceptworld_segmenter")).head(3)
    """
    import pandas as pd

    generated = concept_shares(segmenter, generate_images(
        generator, sample_latents(samples, generator.latent_dim, seed)))
    real = concept_shares(segmenter, real_images)
    rows = [{"category": key[0], "concept": key[1],
             "ratio": generated[key] / share if share else float("nan"),
             "generated": generated[key], "real": share} for key, share in real.items()]
    return pd.DataFrame(rows).sort_values("ratio", kind="stable").reset_index(drop=True)


__all__ = ["concept_coverage", "concept_shares", "feature_extractor", "features_of",
           "frechet_distance", "generate_images", "generator_quality", "label_shares",
           "sample_latents"]

"""Texture synthesis by non-parametric sampling (Efros & Leung 1999), the baseline neural texture
synthesis is measured against.

The output grows one pixel at a time. For each new pixel, the already filled pixels of the
window around it are compared with every window of the sample by a sum of squared differences,
weighted by a Gaussian of the window (sigma = window / 6.4) and by which pixels are filled;
among the windows within ``(1 + epsilon)`` of the best distance (epsilon = 0.1) one is drawn at
random, and its centre colour is copied, unless its distance exceeds ``max_error`` (0.3, of the
mean squared difference per filled value), in which case the best window is used. Constants are
the paper's and its published pseudo-code's. The synthesis starts from a random 3 x 3 seed
patch of the sample in the top-left corner and fills in scanline order (the paper grows the
image in layers around the seed, the pixel with the most filled neighbours first; in scanline
order every pixel's filled neighbours lie above and to its left, the order Wei & Levoy 2000 use).

No network is involved: every output pixel is a pixel of the sample, so the method copies
texture where a neural synthesis matches statistics.

Example:
    >>> stripes = torch.zeros(3, 24, 24); stripes[:, :, ::6] = 1.0
    >>> out = synthesize_texture_nonparametric(stripes, size=16, window=7, seed=0)
    >>> tuple(out.shape), bool(((out == 0) | (out == 1)).all())
    ((1, 3, 16, 16), True)
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from seethrough.errors import InputError
from seethrough.progress import progress_bar

#: the paper's constants: candidate band around the best match, and its Gaussian width
EPSILON = 0.1
SIGMA_PER_WINDOW = 1 / 6.4
#: the pseudo-code's cap on a match's error (mean squared difference per compared value)
MAX_ERROR = 0.3
SEED_PATCH = 3


def _gaussian_window(window: int) -> np.ndarray:
    sigma = window * SIGMA_PER_WINDOW
    offsets = np.arange(window) - window // 2
    line = np.exp(-(offsets ** 2) / (2 * sigma ** 2))
    return np.outer(line, line)


def _sample_windows(sample: torch.Tensor, window: int) -> np.ndarray:
    """Every full ``window`` x ``window`` patch of the sample, (patches, window, window, 3)."""
    patches = F.unfold(sample[None].double(), window)  # (1, 3 * window^2, patches)
    return patches[0].T.reshape(-1, 3, window, window).permute(0, 2, 3, 1).numpy()


def synthesize_texture_nonparametric(sample: torch.Tensor, *, size: int | tuple[int, int] = 64,
                                     window: int = 11, epsilon: float = EPSILON,
                                     max_error: float = MAX_ERROR, seed: int = 0,
                                     progress: bool | None = None) -> torch.Tensor:
    """A new (1, 3, H, W) texture grown pixel by pixel from ``sample`` ((3, h, w) or (1, 3, h, w)
    in [0, 1]); ``window`` is odd and smaller than the sample (the paper varies it with the
    texture's scale: 5 to 23)."""
    if sample.dim() == 4 and sample.shape[0] == 1:
        sample = sample[0]
    if sample.dim() != 3 or sample.shape[0] != 3:
        raise InputError(f"the sample must be one (3, H, W) image in [0, 1], got {tuple(sample.shape)}")
    if window < 3 or window % 2 == 0:
        raise InputError(f"window must be odd and at least 3, got {window}")
    if min(sample.shape[-2:]) <= window:
        raise InputError(f"the sample ({sample.shape[-2]} x {sample.shape[-1]}) must be larger than "
                         f"the window ({window}): pass a smaller window or a larger sample")
    height, width = (size, size) if isinstance(size, int) else size
    rng = np.random.default_rng(seed)
    patches = _sample_windows(sample.detach().cpu(), window)  # (P, w, w, 3)
    flat = patches.reshape(len(patches), -1)  # (P, 3 w^2)
    flat_squared = flat ** 2
    centres = patches[:, window // 2, window // 2]  # (P, 3)
    gaussian = np.repeat(_gaussian_window(window)[..., None], 3, axis=2)

    radius = window // 2
    canvas = np.zeros((height + 2 * radius, width + 2 * radius, 3))
    filled = np.zeros(canvas.shape[:2], dtype=bool)
    start = patches[rng.integers(len(patches)), radius - 1: radius + 2, radius - 1: radius + 2]
    seed_rows, seed_cols = min(SEED_PATCH, height), min(SEED_PATCH, width)
    canvas[radius: radius + seed_rows, radius: radius + seed_cols] = start[:seed_rows, :seed_cols]
    filled[radius: radius + seed_rows, radius: radius + seed_cols] = True

    for row in progress_bar(range(height), "efros-leung", progress=progress, unit="row"):
        for col in range(width):
            if filled[row + radius, col + radius]:
                continue
            template = canvas[row: row + window, col: col + window]
            weights = gaussian * filled[row: row + window, col: col + window, None]
            total = weights.sum()
            if total == 0:  # nothing known around: any sample pixel
                choice = rng.integers(len(patches))
            else:
                weighted = (weights * template).reshape(-1)
                distance = (flat_squared @ weights.reshape(-1) - 2 * flat @ weighted
                            + (weighted * template.reshape(-1)).sum()) / total
                best = distance.min()
                candidates = np.flatnonzero(distance <= best * (1 + epsilon) + 1e-12)
                choice = candidates[rng.integers(len(candidates))]
                if distance[choice] > max_error:
                    choice = int(distance.argmin())
            canvas[row + radius, col + radius] = centres[choice]
            filled[row + radius, col + radius] = True
    out = canvas[radius: radius + height, radius: radius + width]
    return torch.from_numpy(out).permute(2, 0, 1)[None].to(sample.dtype)

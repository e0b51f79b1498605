"""Scores cross-checked with Quantus 0.6.0 (a dev extra) on the same model, images and maps.

Like is compared with like, where the definitions differ:

* pointing game: Quantus has no tolerance (ours: 15 px at 224 px, Zhang et al.), so ours runs
  with ``tolerance=0``; Quantus counts a hit when any pixel tied for the maximum is on the
  object, ours takes the first in raster order, so the maps here have no ties.
* deletion: Quantus' ``PixelFlipping`` (Bach et al. 2015) removes ``features_in_step`` values
  of the (C, H, W) input at a time in the map's order, to ``perturb_baseline``; ours (RISE)
  removes ``step`` whole pixels to zeros. With a map broadcast over the channels, distinct per
  pixel, ``features_in_step = C * step`` removes the same pixels (it must divide H x W); its "black" baseline is each
  image's minimum, so it gets ``perturb_baseline=0.0``. Its curve starts after the first step,
  ours at the intact image: ours[1:] is compared.
* energy pointing game: Quantus' ``AttributionLocalisation`` (Kohlbrenner et al. 2020), the
  share of positive attribution inside the mask, is ours.
* model randomization: Quantus' ``MPRT`` re-initialises every module with ``reset_parameters``
  (top down: the order of our ``parameter_layers`` on these models), seeding each layer with
  ``seed + 1``; ours seeds step ``i`` with ``seed + 1 + i``. The first step and every layer
  randomized alone (``mode="independent"``, one layer at a time with our ``seed`` equal to
  theirs) draw the same weights and must agree exactly; the whole cascade agrees in the mean.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

import seethrough
from seethrough.evaluation import (
    deletion_curve,
    energy_pointing_game,
    model_randomization,
    pointing_game,
)
from seethrough.evaluation.sanity import parameter_layers

quantus = pytest.importorskip("quantus")


@pytest.fixture(scope="module")
def setting():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=6).eval()
    images = torch.rand(4, 3, 32, 32)
    targets = torch.tensor([0, 2, 3, 5])
    maps = seethrough.attribute(model, images, targets, method="saliency").maps  # no ties
    masks = torch.zeros(4, 32, 32, dtype=torch.bool)
    masks[:, 6:20, 10:28] = True
    return model, images, targets, maps, masks


def _np(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy()


def test_pointing_game_and_energy_agree_with_quantus(setting):
    model, images, targets, maps, masks = setting
    masks = masks.clone()
    masks[1] = ~masks[1]  # some hits, some misses
    ours = pointing_game(maps, masks, tolerance=0)
    theirs = quantus.PointingGame(disable_warnings=True)(
        model=model, x_batch=_np(images), y_batch=_np(targets), a_batch=_np(maps),
        s_batch=_np(masks[:, None]).astype(float), channel_first=True, device="cpu")
    assert 0 < ours.sum() < len(ours)
    assert ours.tolist() == [float(hit) for hit in theirs]
    energy = quantus.AttributionLocalisation(disable_warnings=True, abs=False, normalise=False)(
        model=model, x_batch=_np(images), y_batch=_np(targets), a_batch=_np(maps),
        s_batch=_np(masks[:, None]).astype(float), channel_first=True, device="cpu")
    np.testing.assert_allclose(_np(energy_pointing_game(maps, masks)), energy, rtol=1e-5)


def test_deletion_curve_agrees_with_quantus_pixel_flipping(setting):
    """At 48 px: Quantus asks that ``features_in_step`` divide H x W."""
    model, _, targets, _, _ = setting
    images = torch.rand(4, 3, 48, 48, generator=torch.Generator().manual_seed(1))
    maps = seethrough.attribute(model, images, targets, method="saliency").maps
    step = 64
    ours = deletion_curve(model, images, maps, targets, step=step)
    theirs = quantus.PixelFlipping(features_in_step=3 * step, perturb_baseline=0.0,
                                   normalise=False, abs=False, disable_warnings=True)(
        model=model, x_batch=_np(images), y_batch=_np(targets),
        a_batch=_np(maps.expand(-1, 3, -1, -1)), channel_first=True, device="cpu", softmax=True)
    np.testing.assert_allclose(_np(ours[:, 1:]), np.asarray(theirs), rtol=1e-4, atol=1e-6)


def _explain(model, inputs, targets, **kwargs):
    """Quantus' explain_func: seethrough's saliency, as numpy."""
    return _np(seethrough.attribute(model, torch.as_tensor(inputs), torch.as_tensor(targets),
                                    method="saliency").maps)


def _mprt(model, images, targets, order: str) -> dict[str, list[float]]:
    return quantus.MPRT(layer_order=order, seed=7, disable_warnings=True)(
        model=model, x_batch=_np(images), y_batch=_np(targets), a_batch=None,
        explain_func=_explain, channel_first=True, device="cpu")


def test_model_randomization_agrees_with_quantus_mprt(setting):
    """On a small CNN with BatchNorm (resnet18's 62 layers made this test slow)."""
    _, images, targets, *_ = setting
    torch.manual_seed(0)
    block = [torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.BatchNorm2d(8),
             torch.nn.ReLU(inplace=True)]
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(inplace=True),
        *block, torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(), torch.nn.Linear(128, 6)).eval()
    for module in model.modules():  # BatchNorm statistics that reset_parameters() changes
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    layers = parameter_layers(model)
    independent = _mprt(model, images, targets, "independent")
    assert sorted(k for k in independent if k != "original") == sorted(layers)
    for layer in layers:
        ours = model_randomization(model, images, "saliency", targets, layers=[layer], seed=7,
                                   mode="independent")
        np.testing.assert_allclose(_np(ours.correlations[1]), independent[layer], atol=1e-5,
                                   err_msg=layer)
    cascade = _mprt(model, images, targets, "top_down")
    ours = model_randomization(model, images, "saliency", targets, layers=layers, seed=7)
    np.testing.assert_allclose(_np(ours.correlations[1]), cascade[layers[0]], atol=1e-5)
    theirs = np.array([cascade[layer] for layer in layers]).mean(1)
    assert np.abs(_np(ours.mean()[1:]) - theirs).max() < 0.15

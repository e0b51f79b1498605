"""Faithfulness correlation, infidelity, ROAD, sparseness, complexity, max-sensitivity, local
Lipschitz estimate and the random-logit test: their math, their errors, and agreement with
Quantus 0.6.0 (a dev extra) on the same model, images and maps.

Where Quantus draws its perturbations from numpy's global generator, the comparison feeds both
sides the same draws: for faithfulness correlation a perturb function records Quantus' subsets
and ours replays them (``_subsets`` patched); for max-sensitivity and the local Lipschitz
estimate Quantus' perturb function adds our noise of draw ``k`` (``noise``) at its step ``k``.
Quantus ranks and perturbs single values of the (C, H, W) input, ours whole pixels: the
faithfulness correlation, infidelity and ROAD comparisons use a one-channel model, where the two
are the same. Other differences, each made equal here:

* infidelity: Quantus removes the 4 x 4 blocks of a grid one after another, cumulatively, and
  takes ``I^T a`` with ``I = x - x'``; ours (Yeh et al.'s square removal) takes random squares and
  ``I`` their indicator. Ours runs on Quantus' nested blocks (``_square_masks`` patched), and
  Quantus gets ``a / x`` so that its ``a (x - 0)`` is our map; ``scale=False`` (no optimal
  scaling, which Quantus does not do).
* ROAD: Quantus' default percentages are 1, 3, ..., 99 and it adds noise from numpy; both run
  with ``noise=0`` on the same percentages (the imputation is then deterministic).
* random logit: Quantus' SSIM runs on the flattened maps (a 1-D SSIM); ours on the 2-D maps, so
  Quantus gets scikit-image's 2-D SSIM as ``similarity_func``; with two classes the "random other
  class" is the same for both.
* Quantus normalises maps by their maximum by default in some metrics: ``normalise=False``.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from seethrough.attribution.gradients import input_x_gradient, saliency
from seethrough.core import Target
from seethrough.errors import InputError
from seethrough.evaluation import (
    METRICS,
    complexity,
    evaluate,
    faithfulness_correlation,
    infidelity,
    local_lipschitz_estimate,
    max_sensitivity,
    noisy_linear_imputation,
    random_logit,
    road_curve,
    sparseness,
    ssim,
)
from seethrough.evaluation import faithfulness as faithfulness_module
from seethrough.evaluation.robustness_metrics import noise

quantus = pytest.importorskip("quantus")
SIZE = 16


def _np(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy()


def _cnn(channels: int, classes: int = 4) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(channels, 6, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(6, 6, 3, padding=1, stride=2), nn.Tanh(), nn.Flatten(),
                         nn.Linear(6 * (SIZE // 2) ** 2, classes)).eval()


class Linear(nn.Module):
    """``f(x)_c = sign_c * (w . x)``: two classes, the gradient is ``+-w`` everywhere."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, channels, SIZE, SIZE,
                                               generator=torch.Generator().manual_seed(3)))

    def forward(self, x):
        evidence = (x * self.weight).flatten(1).sum(1)
        return torch.stack([evidence, -evidence], 1)


@pytest.fixture(scope="module")
def grey():
    """One channel: Quantus' single values are our pixels. Logits scaled up so that removing
    pixels changes some predictions (ROAD)."""
    model = _cnn(1)
    with torch.no_grad():
        model[-1].weight *= 10
        model[-1].bias.zero_()
    images = 0.1 + 0.9 * torch.rand(4, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        targets = model(images).argmax(1)
    maps = input_x_gradient(model, images, targets).maps  # signed, no ties
    return model, images, targets, maps


def _explain(model, inputs, targets, **kwargs):
    """Quantus' explain_func: our saliency without the [0, 1] check (noisy inputs leave it)."""
    inputs = torch.as_tensor(inputs, dtype=torch.float32)
    goal = Target.of(torch.as_tensor(targets).long(), len(inputs))
    return _np(saliency.__wrapped__(model, inputs, goal, batch_size=64).maps)


# -- complexity ----------------------------------------------------------------------------------
def test_sparseness_and_complexity_math_and_quantus():
    n = SIZE * SIZE
    one = torch.zeros(2, 1, SIZE, SIZE)
    one[0, 0, 3, 5] = 2.0
    one[1, 0, 9, 1] = -0.5
    torch.testing.assert_close(sparseness(one), torch.full((2,), 1 - 1 / n))
    torch.testing.assert_close(complexity(one), torch.zeros(2))
    flat = torch.full((2, 1, SIZE, SIZE), 0.3)
    torch.testing.assert_close(sparseness(flat), torch.zeros(2))
    torch.testing.assert_close(complexity(flat), torch.full((2,), float(np.log(n))))
    maps = torch.randn(5, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    assert (sparseness(maps) < 1 - 1 / n).all() and (complexity(maps) < np.log(n)).all()
    kwargs = {"disable_warnings": True, "normalise": False, "return_aggregate": False}
    x = _np(torch.rand(5, 1, SIZE, SIZE))
    y = np.zeros(5, dtype=int)
    theirs = quantus.Sparseness(**kwargs)(model=None, x_batch=x, y_batch=y,
                                          a_batch=_np(maps).copy(), channel_first=True)
    np.testing.assert_allclose(_np(sparseness(maps)), theirs, rtol=1e-4)
    theirs = quantus.Complexity(**kwargs)(model=None, x_batch=x, y_batch=y,
                                          a_batch=_np(maps).copy(), channel_first=True)
    np.testing.assert_allclose(_np(complexity(maps)), theirs, rtol=1e-5)


# -- faithfulness correlation --------------------------------------------------------------------
def test_faithfulness_correlation_is_one_for_a_linear_model():
    model = Linear(3).eval()
    images = torch.rand(3, 3, SIZE, SIZE)
    maps = input_x_gradient(model, images, 0).maps
    score = faithfulness_correlation(model, images, maps, 0, subset_size=20, n_runs=12)
    torch.testing.assert_close(score, torch.ones(3), atol=1e-5, rtol=0)
    worse = faithfulness_correlation(model, images, torch.rand(3, 1, SIZE, SIZE), 0,
                                     subset_size=20, n_runs=12)
    assert (worse < 0.99).all()
    again = faithfulness_correlation(model, images, torch.rand(3, 1, SIZE, SIZE,
                                     generator=torch.Generator().manual_seed(0)), 0,
                                     subset_size=20, n_runs=12, batch_size=5)
    same = faithfulness_correlation(model, images, torch.rand(3, 1, SIZE, SIZE,
                                    generator=torch.Generator().manual_seed(0)), 0,
                                    subset_size=20, n_runs=12, batch_size=64)
    torch.testing.assert_close(again, same)


def test_faithfulness_correlation_agrees_with_quantus(grey, monkeypatch):
    model, images, targets, maps = grey
    drawn = []

    def replace(arr, indices, **kwargs):
        drawn.append(indices.copy())
        out = arr.copy()
        out[np.arange(len(arr))[:, None], indices] = 0.0
        return out

    np.random.seed(0)
    theirs = quantus.FaithfulnessCorrelation(
        nr_runs=20, subset_size=32, perturb_func=replace, normalise=False, abs=False,
        return_aggregate=False, disable_warnings=True)(
        model=model, x_batch=_np(images), y_batch=_np(targets), a_batch=_np(maps),
        channel_first=True, device="cpu")
    recorded = torch.as_tensor(np.stack(drawn, axis=1))  # (images, runs, subset)
    monkeypatch.setattr(faithfulness_module, "_subsets", lambda *args: recorded)
    ours = faithfulness_correlation(model, images, maps, targets, subset_size=32, n_runs=20)
    np.testing.assert_allclose(_np(ours), theirs, atol=1e-4)
    assert np.corrcoef(_np(ours), theirs)[0, 1] > 0.99


# -- infidelity ----------------------------------------------------------------------------------
def test_infidelity_is_zero_for_a_linear_model():
    model = Linear(3).eval()
    images = torch.rand(3, 3, SIZE, SIZE)
    maps = input_x_gradient(model, images, 0).maps
    for scale in (True, False):
        value = infidelity(model, images, maps, 0, n_samples=30, scale=scale)
        assert value.abs().max() < 1e-6
    assert (infidelity(model, images, torch.rand(3, 1, SIZE, SIZE), 0, n_samples=30) > 1e-3).all()
    grey_model = Linear(1).eval()  # the Gaussian perturbation pairs with a gradient map
    grey_images = torch.rand(3, 1, SIZE, SIZE)
    gradient = grey_model.weight.detach().expand(3, -1, -1, -1)
    value = infidelity(grey_model, grey_images, gradient, 0, perturbation="gaussian",
                       n_samples=20)
    assert value.abs().max() < 1e-6


def test_infidelity_agrees_with_quantus_on_its_blocks(grey, monkeypatch):
    model, images, targets, maps = grey
    patch = 4
    blocks = torch.zeros(SIZE // patch, SIZE // patch, SIZE, SIZE, dtype=torch.bool)
    for row in range(SIZE // patch):
        for col in range(SIZE // patch):
            blocks[row, col, row * patch:(row + 1) * patch, col * patch:(col + 1) * patch] = True
    nested = blocks.flatten(0, 1).cumsum(0).bool()  # Quantus removes them one after another
    monkeypatch.setattr(faithfulness_module, "_square_masks", lambda *args: nested)
    ours = infidelity(model, images, maps, targets, n_samples=len(nested), scale=False)
    theirs = quantus.Infidelity(perturb_patch_sizes=[patch], n_perturb_samples=1,
                                perturb_baseline=0.0, normalise=False, abs=False,
                                disable_warnings=True)(
        model=model, x_batch=_np(images), y_batch=_np(targets), a_batch=_np(maps / images),
        channel_first=True, device="cpu")
    np.testing.assert_allclose(_np(ours), theirs, rtol=1e-4)


# -- ROAD ----------------------------------------------------------------------------------------
def test_imputation_keeps_kept_pixels_and_fills_from_neighbours():
    images = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(4))
    masks = torch.zeros(2, SIZE, SIZE, dtype=torch.bool)
    masks[0, 5, 7] = True  # one pixel: the weighted mean of its 8 neighbours
    masks[1, 2:9, 3:12] = True
    masks[1, 0, 0] = True
    filled = noisy_linear_imputation(images, masks, noise=0.0)
    torch.testing.assert_close(filled[~masks[:, None].expand_as(images)],
                               images[~masks[:, None].expand_as(images)])
    around = images[0, :, 4:7, 6:9]
    weights = torch.tensor([[1, 2, 1], [2, 0, 2], [1, 2, 1]]) / 12
    torch.testing.assert_close(filled[0, :, 5, 7], (around * weights).sum((1, 2)))
    for index in range(2):
        pixels = masks[index].flatten().nonzero()[:, 0].numpy()
        theirs = quantus.functions.perturb_func.noisy_linear_imputation(
            _np(images[index]), pixels, noise=0.0)
        np.testing.assert_allclose(_np(filled[index]), theirs, atol=1e-6)
    noisy = noisy_linear_imputation(images, masks, noise=0.01)
    assert torch.equal(noisy[~masks[:, None].expand_as(images)],
                       images[~masks[:, None].expand_as(images)])
    assert not torch.equal(noisy, filled)


def test_road_agrees_with_quantus(grey):
    model, images, predicted, maps = grey
    percentages = [10, 30, 50, 70, 90]
    ours = road_curve(model, images, maps, predicted, percentages=percentages, noise=0.0)
    assert 0 < ours.mean() < 1  # some predictions change
    theirs = quantus.ROAD(percentages=percentages, noise=0.0, normalise=False,
                          disable_warnings=True)(
        model=model, x_batch=_np(images), y_batch=_np(predicted), a_batch=_np(maps),
        channel_first=True, device="cpu")
    np.testing.assert_allclose(_np(ours.mean(0)), [theirs[p] for p in percentages])
    lerf = road_curve(model, images, maps, predicted, order="lerf", percentages=percentages,
                      measure="probability", batch_size=3)
    assert lerf.shape == (4, 5) and ((lerf >= 0) & (lerf <= 1)).all()
    torch.testing.assert_close(lerf, road_curve(model, images, maps, predicted, order="lerf",
                                                percentages=percentages, measure="probability"))


# -- robustness ----------------------------------------------------------------------------------
def _fed(kind: str, scale: float):
    """A Quantus perturb function adding our noise of draw k at its k-th call."""
    calls = []

    def perturb(arr, indices, **kwargs):
        draw = noise(kind, 0, len(calls), (3, SIZE, SIZE), scale).numpy().reshape(1, -1)
        calls.append(1)
        return arr + draw

    return perturb


@pytest.fixture(scope="module")
def colour():
    model = _cnn(3)
    images = torch.rand(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(5))
    return model, images, torch.tensor([0, 2, 3])


def test_max_sensitivity_and_lipschitz_agree_with_quantus(colour):
    model, images, targets = colour
    samples = 6
    ours = max_sensitivity(model, images, targets, method="saliency", n_samples=samples)
    theirs = quantus.MaxSensitivity(nr_samples=samples, perturb_func=_fed("uniform", 0.2),
                                    normalise=False, disable_warnings=True)(
        model=model, x_batch=_np(images), y_batch=_np(targets), a_batch=None,
        explain_func=_explain, channel_first=True, device="cpu")
    np.testing.assert_allclose(_np(ours), theirs, rtol=1e-4)
    ours = local_lipschitz_estimate(model, images, targets, method="saliency", n_samples=samples,
                                    batch_size=4)
    theirs = quantus.LocalLipschitzEstimate(nr_samples=samples,
                                            perturb_func=_fed("gaussian", 0.1),
                                            normalise=False, disable_warnings=True)(
        model=model, x_batch=_np(images), y_batch=_np(targets), a_batch=None,
        explain_func=_explain, channel_first=True, device="cpu")
    np.testing.assert_allclose(_np(ours), theirs, rtol=1e-4)


def test_max_sensitivity_of_a_constant_explanation_is_zero():
    model = Linear(3).eval()
    images = torch.rand(2, 3, SIZE, SIZE)
    assert torch.equal(max_sensitivity(model, images, 0, method="saliency", n_samples=5),
                       torch.zeros(2))
    assert local_lipschitz_estimate(model, images, 0, n_samples=5).abs().max() == 0


def test_ssim_and_random_logit_agree_with_quantus(colour):
    from skimage.metrics import structural_similarity

    a = torch.rand(3, SIZE, SIZE, generator=torch.Generator().manual_seed(6))
    b = a + 0.3 * torch.rand(3, SIZE, SIZE, generator=torch.Generator().manual_seed(7))

    def ssim_2d(a, b, batched=True, **kwargs):
        span = [float(max(x.max(), y.max()) - min(x.min(), y.min())) for x, y in zip(a, b)]
        return [structural_similarity(x.reshape(SIZE, SIZE), y.reshape(SIZE, SIZE), data_range=r)
                for x, y, r in zip(a, b, span)]

    np.testing.assert_allclose(_np(ssim(a, b)), ssim_2d(_np(a), _np(b)), rtol=1e-5)
    torch.testing.assert_close(ssim(a, a), torch.ones(3))
    model = _cnn(3, classes=2)
    _, images, _ = colour
    targets = torch.tensor([0, 1, 1])
    ours = random_logit(model, images, targets, method="saliency")
    theirs = quantus.RandomLogit(num_classes=2, similarity_func=ssim_2d, normalise=False,
                                 disable_warnings=True)(
        model=model, x_batch=_np(images), y_batch=_np(targets), a_batch=None,
        explain_func=_explain, channel_first=True, device="cpu")
    np.testing.assert_allclose(_np(ours), theirs, rtol=1e-4)


# -- evaluate and errors -------------------------------------------------------------------------
def test_evaluate_runs_the_new_metrics(colour):
    model, images, targets = colour
    attribution = saliency(model, images, targets)
    new = ["faithfulness_correlation", "infidelity", "road_morf", "road_lerf", "sparseness",
           "complexity", "max_sensitivity", "local_lipschitz_estimate", "random_logit"]
    first = saliency(model, images[:1], targets[:1])  # one image: the defaults take 200 samples
    scores = evaluate(model, images[:1], first, metrics=new)  # the method from the Attribution
    assert list(scores.values) == new
    assert all(value.shape == (1,) and value.isfinite().all() for value in scores.values.values())
    assert scores.higher_is_better == {name: METRICS.get(name)[1] for name in new}
    assert [name for name in new if scores.higher_is_better[name]] == [
        "faithfulness_correlation", "road_lerf", "sparseness"]
    torch.testing.assert_close(scores.values["random_logit"],
                               random_logit(model, images[:1], targets[:1], method="saliency"))
    with pytest.raises(InputError, match="pass method="):
        evaluate(model, images, attribution.maps, targets, metrics=["max_sensitivity"])
    assert {"faithfulness_correlation", "infidelity", "road_morf", "road_lerf",
            "local_lipschitz_estimate"} <= set(METRICS.names())
    assert list(evaluate(model, images, attribution).values) == ["deletion", "insertion"]


@pytest.mark.parametrize("call, message", [
    (lambda m, x, a: faithfulness_correlation(m, x, a, 0, subset_size=SIZE * SIZE),
     "subset_size must be"),
    (lambda m, x, a: faithfulness_correlation(m, x, a, 0, n_runs=1), "n_runs must be"),
    (lambda m, x, a: faithfulness_correlation(m, x, a, 0, baseline="grey"), "baseline must be"),
    (lambda m, x, a: infidelity(m, x, a, 0, perturbation="blur"), "perturbation must be"),
    (lambda m, x, a: infidelity(m, x, a, 0, max_side=SIZE + 1), "max_side must be"),
    (lambda m, x, a: infidelity(m, x, a, 0, perturbation="gaussian", sigma=-1), "sigma must be"),
    (lambda m, x, a: road_curve(m, x, a, 0, order="up"), "order must be"),
    (lambda m, x, a: road_curve(m, x, a, 0, percentages=[50, 100]), "percentages must be"),
    (lambda m, x, a: road_curve(m, x, a, lambda out: out[:, 0]), "needs class targets"),
    (lambda m, x, a: max_sensitivity(m, x, 0, method="saliancy"), "method must be"),
    (lambda m, x, a: max_sensitivity(m, x, 0, n_samples=0), "n_samples must be"),
    (lambda m, x, a: local_lipschitz_estimate(m, x, 0, sigma=0.0), "sigma must be"),
    (lambda m, x, a: max_sensitivity(m, x, 0, method_options={"layer": "x"}), "no option"),
    (lambda m, x, a: random_logit(m, x, lambda out: out[:, 0]), "needs class targets"),
    (lambda m, x, a: ssim(a[:, 0, :4, :4], a[:, 0, :4, :4]), "at least 7"),
])
def test_bad_options_raise_one_line(call, message):
    model = Linear(3).eval()
    images, maps = torch.rand(1, 3, SIZE, SIZE), torch.rand(1, 1, SIZE, SIZE)
    with pytest.raises(InputError, match=message) as error:
        call(model, images, maps)
    assert "\n" not in str(error.value)

"""LIME, Kernel SHAP, Shapley sampling, feature ablation: agreement with Captum, exact Shapley
values, efficiency, additive models, seeds, batching and errors."""
from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

import seethrough
from seethrough.attribution.superpixels import fill_for, superpixels
from seethrough.errors import InputError

SAMPLED = ("lime", "kernel_shap", "shapley_sampling")
ALL = (*SAMPLED, "feature_ablation")


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 4),
    ).eval()


class RegionSums(nn.Module):
    """Additive over regions: logit c = sum_r weight[c, r] * (sum of region r's pixels) + bias."""

    def __init__(self, regions: torch.Tensor, classes: int = 3):
        super().__init__()
        self.register_buffer("regions", nn.functional.one_hot(regions).permute(2, 0, 1).float())
        torch.manual_seed(1)
        self.weight = nn.Parameter(torch.randn(classes, len(self.regions)))
        self.bias = nn.Parameter(torch.randn(classes))

    def forward(self, x):
        return torch.einsum("nchw,rhw->nr", x, self.regions) @ self.weight.T + self.bias


@pytest.fixture(scope="module")
def net():
    return tiny_net()


@pytest.fixture(scope="module")
def images():
    """Blocks of colour plus a little noise, so that SLIC finds real segments."""
    generator = torch.Generator().manual_seed(0)
    blocks = torch.rand(2, 3, 4, 4, generator=generator).repeat_interleave(8, 2).repeat_interleave(8, 3)
    return (blocks + 0.05 * torch.rand(2, 3, 32, 32, generator=generator)).clamp(0, 1)


@pytest.fixture(scope="module")
def six():
    """A user's label mask with 6 regions (2 x 3 blocks), different numbering per image."""
    rows = torch.arange(32) // 16
    cols = torch.arange(32) * 3 // 32
    grid = rows[:, None] * 3 + cols[None, :]
    return torch.stack([grid, 10 * (5 - grid)])


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.corrcoef(torch.stack([a.flatten().double(), b.flatten().double()]))[0, 1].item()


def exact_shapley(model, image, label, regions, baseline=0.0) -> torch.Tensor:
    """Brute force: every coalition of the image's regions, the Shapley formula."""
    count = int(regions.max()) + 1
    coalitions = torch.tensor(list(itertools.product([0, 1], repeat=count)), dtype=torch.bool)
    on = coalitions[:, regions][:, None]
    with torch.no_grad():
        value = model(torch.where(on, image, torch.full_like(image, baseline)))[:, label].double()
    lookup = {tuple(c.tolist()): v for c, v in zip(coalitions, value)}
    phi = torch.zeros(count, dtype=torch.float64)
    for coalition, value in lookup.items():
        for player in (p for p in range(count) if not coalition[p]):
            size = sum(coalition)
            weight = math.factorial(size) * math.factorial(count - size - 1) / math.factorial(count)
            joined = tuple(1 if i == player else c for i, c in enumerate(coalition))
            phi[player] += weight * (lookup[joined] - value)
    return phi


# -- agreement with Captum -------------------------------------------------------------------
def test_feature_ablation_equals_captum_on_slic_superpixels(net, images):
    from captum.attr import FeatureAblation

    labels = superpixels(images, "slic", n_segments=16)
    assert (labels.amax((1, 2)) >= 5).all()
    ours = seethrough.attribute(net, images, [1, 2], method="feature_ablation", segments=labels,
                                baseline=0.0)
    theirs = FeatureAblation(net).attribute(images, target=torch.tensor([1, 2]), baselines=0.0,
                                            feature_mask=labels[:, None], perturbations_per_eval=32)
    torch.testing.assert_close(ours.maps, theirs[:, :1], rtol=1e-5, atol=1e-7)


def test_kernel_shap_and_sampling_give_exact_shapley_values_as_captum(net, images, six):
    from captum.attr import KernelShap, ShapleyValueSampling

    labels = superpixels(images, six)
    exact = torch.stack([exact_shapley(net, images[i:i + 1], t, labels[i]) for i, t in enumerate([1, 2])])
    ks = seethrough.attribute(net, images, [1, 2], method="kernel_shap", segments=six, baseline=0.0)
    torch.testing.assert_close(ks.raw.double(), exact, rtol=1e-4, atol=1e-6)  # 62 coalitions: all
    torch.manual_seed(0)
    captum_ks = torch.cat([
        KernelShap(net).attribute(images[i:i + 1], target=t, feature_mask=labels[i:i + 1, None],
                                  baselines=0.0, n_samples=300, perturbations_per_eval=64)
        for i, t in enumerate([1, 2])
    ])
    assert correlation(ks.maps, captum_ks[:, :1]) > 0.99  # Captum samples: 0.996 - 0.999
    # Captum draws its orders with torch.randperm from the global generator: seeded alike, the
    # orders are ours, and so are the values
    sampled = seethrough.attribute(net, images, [1, 2], method="shapley_sampling", segments=six,
                                   baseline=0.0, n_samples=20, seed=0)
    torch.manual_seed(0)
    captum_sv = ShapleyValueSampling(net).attribute(
        images, target=torch.tensor([1, 2]), feature_mask=labels[:, None], baselines=0.0,
        n_samples=20, perturbations_per_eval=64)
    torch.testing.assert_close(sampled.maps, captum_sv[:, :1], rtol=1e-4, atol=1e-7)
    assert correlation(sampled.raw, exact) > 0.99


def test_lime_equals_captum_lime_with_the_same_coalitions_kernel_and_ridge(net, images, six):
    """Captum's defaults differ (Lasso 0.01, a kernel on pixel-space distance, 50 samples);
    given the paper's kernel and ridge and the same seeded coalitions, the results coincide."""
    from captum._utils.models.linear_model import SkLearnRidge
    from captum.attr import Lime

    labels = superpixels(images, six)
    fill = fill_for("mean", images, labels)
    samples = 80

    def kernel(_, __, sample, **kwargs):  # the paper's: cosine distance of the 0/1 vector
        distance = 1 - (sample.double().sum() / sample.numel()).sqrt()
        return torch.exp(-distance**2 / 0.25**2).sqrt()

    def same_coalitions(_, **kwargs):
        rows = torch.randint(0, 2, (samples, kwargs["num_interp_features"]),
                             generator=torch.Generator().manual_seed(0))
        rows[0] = 1
        yield from rows[:, None]

    probabilities = nn.Sequential(net, nn.Softmax(1))
    theirs = torch.cat([
        Lime(probabilities, SkLearnRidge(alpha=1.0), kernel, same_coalitions).attribute(
            images[i:i + 1], target=t, feature_mask=labels[i:i + 1, None],
            baselines=fill[i:i + 1], n_samples=samples, perturbations_per_eval=32)
        for i, t in enumerate([1, 2])
    ])
    ours = seethrough.attribute(net, images, [1, 2], method="lime", segments=six, n_samples=samples)
    assert correlation(ours.maps, theirs[:, :1]) > 0.999
    torch.testing.assert_close(ours.maps, theirs[:, :1].to(ours.maps), rtol=1e-3, atol=1e-7)


# -- math ------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["kernel_shap", "shapley_sampling"])
def test_efficiency_values_sum_to_the_output_change(net, images, method):
    """Sampled (16 segments, 2^16 > n_samples coalitions): the sum is still exact."""
    result = seethrough.attribute(net, images, [0, 3], method=method, segments="grid",
                                  n_segments=16, n_samples=4, baseline=0.2)
    with torch.no_grad():
        change = net(images)[[0, 1], [0, 3]] - net(torch.full_like(images, 0.2))[[0, 1], [0, 3]]
    assert result.raw.shape == (2, 16)
    torch.testing.assert_close(result.raw.sum(1), change, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method", ALL)
def test_additive_model_recovers_each_regions_contribution(images, six, method):
    regions = superpixels(images, six)[0]
    model = RegionSums(regions).eval()
    truth = torch.einsum("nchw,rhw->nr", images, model.regions) * model.weight[2].detach()
    options = {"alpha": 0.0, "probabilities": False, "n_samples": 20} if method == "lime" else {}
    if method == "kernel_shap":
        options = {"n_samples": 20}  # fewer than the 62 coalitions: the sampled regression
    result = seethrough.attribute(model, images, 2, method=method, segments=regions, baseline=0.0,
                                  **options)
    torch.testing.assert_close(result.raw, truth, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(result.maps[:, 0], truth.gather(1, regions.flatten()[None].expand(2, -1))
                               .view(2, 32, 32), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("method", SAMPLED)
def test_same_seed_same_map_other_seed_other_map(net, images, method):
    count = 2 if method == "shapley_sampling" else 12  # orders cost 8 passes each
    options = {"segments": "grid", "n_segments": 9, "n_samples": count, "batch_size": 7}
    first = seethrough.attribute(net, images, [1, 2], method=method, seed=3, **options)
    again = seethrough.attribute(net, images, [1, 2], method=method, seed=3, **options)
    other = seethrough.attribute(net, images, [1, 2], method=method, seed=4, **options)
    assert torch.equal(first.maps, again.maps)
    assert not torch.allclose(first.maps, other.maps)
    alone = seethrough.attribute(net, images[1:], 2, method=method, seed=3, **options)
    torch.testing.assert_close(alone.maps, first.maps[1:], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("method", ALL)
def test_forward_passes_hold_at_most_batch_size_images(net, images, method):
    sizes = []
    handle = net.register_forward_pre_hook(lambda module, args: sizes.append(len(args[0])))
    try:
        result = seethrough.attribute(net, images, "predicted", method=method, segments="grid",
                                      n_segments=9, n_samples=10, batch_size=5) \
            if method != "feature_ablation" else \
            seethrough.attribute(net, images, "predicted", method=method, segments="grid",
                                 n_segments=9, batch_size=5, incremental=False)
    finally:
        handle.remove()
    assert max(sizes) <= 5 and len(sizes) > 2
    assert result.maps.shape == (2, 1, 32, 32) and result.raw.shape == (2, 9)
    assert result.options["segments"] == "grid" and result.target.tolist() == net(images).argmax(1).tolist()


def test_superpixels_are_consecutive_and_quickshift_runs(images):
    for how in ("slic", "quickshift"):
        labels = superpixels(images, how)
        assert labels.shape == (2, 32, 32) and labels.dtype == torch.long
        for label in labels:
            assert torch.equal(label.unique(), torch.arange(int(label.max()) + 1))


@pytest.mark.parametrize("options, message", [
    ({"segments": torch.zeros(2, 16, 16, dtype=torch.long)}, "segments mask has shape"),
    ({"segments": torch.zeros(2, 32, 32)}, "integer label tensor"),
    ({"segments": "watershed"}, "segments must be one of"),
    ({"baseline": "median"}, "baseline must be"),
    ({"n_segments": 0}, "n_segments must be a positive integer"),
])
def test_bad_options_raise_one_line_input_errors(net, images, options, message):
    for method in ALL:
        with pytest.raises(InputError, match=message) as error:
            seethrough.attribute(net, images, 0, method=method, **options)
        assert "\n" not in str(error.value)
    with pytest.raises(InputError, match="n_samples must be a positive integer"):
        seethrough.attribute(net, images, 0, method="lime", n_samples=0)

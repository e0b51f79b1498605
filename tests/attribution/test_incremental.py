"""Occlusion and feature ablation by incremental inference: the same maps as full recompute,
on every architecture."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import seethrough
from seethrough.attribution.incremental import IncrementalModel
from tests.conftest import ARCHITECTURES, small_vit


def images(count: int = 1, size: int = 64) -> torch.Tensor:
    return torch.rand(count, 3, size, size, generator=torch.Generator().manual_seed(0))


def both(model, x, target, **options):
    fast = seethrough.attribute(model, x, target, method="occlusion", **options)
    full = seethrough.attribute(model, x, target, method="occlusion", incremental=False, **options)
    return fast, full


def assert_same(fast, full):
    scale = full.raw.abs().max().clamp(min=1)
    torch.testing.assert_close(fast.raw / scale, full.raw / scale, atol=1e-5, rtol=0)
    torch.testing.assert_close(fast.maps / scale, full.maps / scale, atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", [*ARCHITECTURES, "vit"])
def test_the_same_map_as_full_recompute(arch, unchanged):
    """resnet18 (residual sums, max pool), vgg11_bn, densenet121 (concatenations: whole maps
    from there on), mobilenet_v3_small (hardswish, squeeze-excitation gates) and a ViT."""
    torch.manual_seed(0)
    model = (small_vit if arch == "vit" else ARCHITECTURES[arch])().eval()
    with unchanged(model):
        fast, full = both(model, images(2), [1, 2], window=16, stride=12, batch_size=8)
    assert fast.options["incremental"] is True and full.options["incremental"] is False
    assert_same(fast, full)


def test_conceptnet_border_windows_and_a_picture_baseline():
    """Windows that stop at the far edge (stride 5 does not divide 64 - 8), a baseline that is
    a picture (the blurred image), in-place ReLUs, and a model behind its ``normalize``."""
    model = seethrough.load_model("conceptnet")
    x = seethrough.ConceptWorld("val", length=2).batch()["image"]
    blurred = torch.nn.functional.avg_pool2d(x, 9, stride=1, padding=4)
    fast, full = both(model, x, "predicted", window=8, stride=5, baseline=blurred)
    assert_same(fast, full)
    assert fast.raw.abs().max() > 0.1


def test_only_the_reached_region_is_recomputed():
    """At 224 px a 16-px window reaches a small part of resnet18's first layers. Rows 104-119
    reach outputs 51-61 of the 7 x 7 stride-2 convolution (padding 3): 11 x 11 of its 112 x 112;
    those reach 25-31 of the max pool (3, stride 2, padding 1): 7; and 24-32 of the next
    3 x 3 convolution: 9. Only the global average pool sees whole maps."""
    import torchvision

    model = torchvision.models.resnet18(num_classes=3).eval()
    runner = IncrementalModel.trace(model)
    x = images(1, 224)
    runner.start(x)
    seen = {}
    original = runner._window_op

    def spy(node, source, *args):
        result = original(node, source, *args)
        seen[node.name] = result.size
        return result

    runner._window_op = spy
    with torch.no_grad():
        out = runner.occluded(torch.tensor([[104, 104], [0, 0]]), (16, 16), 0.5)
        expected = model(torch.where(_window(224, 104, 104), 0.5, x))
    torch.testing.assert_close(out[0], expected[0], atol=1e-5, rtol=1e-5)
    assert (seen["conv1"], seen["maxpool"], seen["layer1_0_conv1"]) == ((11, 11), (7, 7), (9, 9))
    assert runner.whole_nodes == ["avgpool"]


def _window(size, top, left, side=16):
    mask = torch.zeros(1, 1, size, size, dtype=torch.bool)
    mask[..., top:top + side, left:left + side] = True
    return mask


class Branchy(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.conv, self.head = nn.Conv2d(3, 4, 3), nn.Linear(4, 2)

    def forward(self, x):
        y = self.conv(x)
        if y.mean() > 0:
            y = y.relu()
        return self.head(y.mean((2, 3)))


def test_models_that_do_not_trace_and_unit_targets_run_in_full():
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="whole model for each perturbation: torch.fx cannot trace"):
        fast, full = both(Branchy().eval(), images(1, 32), 0, window=8)
    assert fast.options["incremental"] is False
    torch.testing.assert_close(fast.maps, full.maps)
    model = ARCHITECTURES["resnet18"]().eval()
    with pytest.warns(UserWarning, match="a unit target reads an inner layer"):
        unit = seethrough.attribute(model, images(1, 32), seethrough.unit("layer1", 3),
                                    method="occlusion", window=16)
    assert unit.options["incremental"] is False


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v3_small"])
def test_feature_ablation_the_same_values_as_full_recompute(arch, unchanged):
    """Each superpixel recomputes only its bounding box's reach: SLIC segments of every size,
    batches of 8 boxes of different sizes (each batch runs at its largest)."""
    torch.manual_seed(0)
    model = ARCHITECTURES[arch]().eval()
    x = seethrough.ConceptWorld("val", length=2).batch()["image"]
    with unchanged(model):
        fast = seethrough.attribute(model, x, [1, 2], method="feature_ablation", n_segments=30,
                                    batch_size=8)
        full = seethrough.attribute(model, x, [1, 2], method="feature_ablation", n_segments=30,
                                    batch_size=8, incremental=False)
    assert fast.options["incremental"] is True and full.options["incremental"] is False
    assert (fast.raw != 0).sum() > 20
    assert_same(fast, full)


def test_feature_ablation_user_segments_and_untraceable_models():
    """The user's labels (any values, renumbered) as in full recompute; an untraceable model
    runs in full."""
    model = ARCHITECTURES["resnet18"]().eval()
    labels = torch.zeros(1, 32, 32, dtype=torch.long)
    labels[:, :16] = 2  # label 1 is missing
    labels[:, 20:, 20:] = 3
    x = images(1, 32)
    fast = seethrough.attribute(model, x, 0, method="feature_ablation", segments=labels)
    full = seethrough.attribute(model, x, 0, method="feature_ablation", segments=labels,
                                incremental=False)
    assert fast.raw.shape == (1, 3) and (fast.raw != 0).all()
    assert_same(fast, full)
    with pytest.warns(UserWarning, match="feature_ablation recomputes the whole model"):
        branchy = seethrough.attribute(Branchy().eval(), x, 0, method="feature_ablation",
                                       segments=labels)
    assert branchy.options["incremental"] is False

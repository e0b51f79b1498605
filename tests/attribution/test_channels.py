"""Channel attribution: gradient x activation per channel, and extremal channel masks."""
from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from seethrough.attribution.channels import channel_attribution, channel_extremal
from seethrough.errors import InputError, LayerNotFoundError


def gap_linear(channels: int = 6, classes: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, channels, 3, padding=1), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, classes),
    ).eval()


def test_scores_match_hand_computation_with_inplace_relu(unchanged):
    model = gap_linear()
    images = torch.rand(4, 3, 8, 8)
    targets = torch.tensor([0, 1, 2, 1])
    with unchanged(model):
        result = channel_attribution(model, images, "0", target=targets)
    with torch.no_grad():
        pre = model[0](images)  # the scored activation: before the in-place ReLU
    weight = model[4].weight[targets]  # (N, C)
    # dS/dA = w_c / HW where A > 0 (ReLU), so sum(A * dS/dA) = w_c * mean(relu(A))
    expected = weight * pre.clamp(min=0).mean((2, 3))
    torch.testing.assert_close(result.scores, expected)
    assert result.layer == "0" and result.target.tolist() == targets.tolist()


def test_scores_sum_to_logit_minus_bias_after_relu():
    model = gap_linear()
    images = torch.rand(3, 3, 8, 8)
    result = channel_attribution(model, images, "1", target=2)  # the ReLU's output: GAP + linear
    with torch.no_grad():
        logits = model(images)[:, 2]
    torch.testing.assert_close(result.scores.sum(1), logits - model[4].bias[2])


def test_batched_equals_unbatched_on_resnet(unchanged):
    model = torchvision.models.resnet18(num_classes=5).eval()
    images = torch.rand(3, 3, 32, 32)
    with unchanged(model):
        together = channel_attribution(model, images, "layer3", batch_size=3)
        apart = channel_attribution(model, images, "layer3", batch_size=1)
    assert together.scores.shape == (3, 256)
    torch.testing.assert_close(together.scores, apart.scores, rtol=1e-4, atol=1e-6)
    frame = together.to_frame()
    assert list(frame["rank"][:3]) == [1, 2, 3]
    assert frame["mean_score"].is_monotonic_decreasing


def informative_channels_model() -> nn.Module:
    """20 positive channels; class 0 reads only channels 0-3."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 20, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(20, 2))
    with torch.no_grad():
        model[0].weight.abs_()
        model[0].bias.fill_(0.1)
        model[4].weight.zero_()
        model[4].weight[0, :4] = torch.tensor([1.0, 2.0, 3.0, 4.0])
        model[4].bias.zero_()
    return model.eval()


def test_extremal_channel_mask_meets_area_and_finds_the_channels(unchanged):
    model = informative_channels_model()
    images = torch.rand(2, 3, 8, 8)
    with unchanged(model):
        result = channel_extremal(model, images, "1", target=0, area=0.2, steps=150, progress=False)
    assert result.keep.shape == (2, 20)
    assert result.keep.sum(1).tolist() == [4, 4]
    assert result.keep[:, :4].all()  # exactly the four channels class 0 reads
    soft_on = (result.mask > 0.5).sum(1)
    assert ((soft_on - 4).abs() <= 1).all()  # the soft mask meets its area too
    torch.testing.assert_close(result.score_kept, result.score)
    assert (result.score_deleted.abs() < 1e-6).all()


def test_extremal_area_on_resnet():
    model = torchvision.models.resnet18(num_classes=4).eval()
    result = channel_extremal(model, torch.rand(1, 3, 32, 32), "layer4", area=0.05, steps=60,
                              progress=False)
    assert result.keep.sum().item() == round(0.05 * 512)


def test_bad_arguments():
    model = gap_linear()
    with pytest.raises(LayerNotFoundError):
        channel_attribution(model, torch.rand(1, 3, 8, 8), "conv9")
    with pytest.raises(InputError, match="area"):
        channel_extremal(model, torch.rand(1, 3, 8, 8), "0", area=1.5)

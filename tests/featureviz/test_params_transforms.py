import pytest
import torch

from seethrough.errors import InputError
from seethrough.featureviz.params import IMAGENET_COLOR_SQRT, ImageParam, color_correlation_sqrt
from seethrough.featureviz.transforms import Transforms, jitter, pad, random_rotate, random_scale


@pytest.mark.parametrize("kind", ["fourier", "pixel"])
@pytest.mark.parametrize("decorrelate", [True, False])
@pytest.mark.parametrize("shape", [(2, 3, 16, 16), (1, 3, 15, 21)])
def test_parameterization_round_trips(kind, decorrelate, shape):
    images = 0.02 + 0.96 * torch.rand(shape, generator=torch.Generator().manual_seed(1))
    param = ImageParam(shape, kind=kind, decorrelate=decorrelate)
    param.set_image(images)
    assert torch.allclose(param(), images, atol=1e-4)


def test_fourier_start_is_smooth_and_valid():
    image = ImageParam((1, 3, 64, 64), kind="fourier", sd=0.5)()
    assert 0 <= image.min() and image.max() <= 1
    # 1/f scaling: neighbouring pixels correlate far more than in white noise
    centred = image - image.mean()
    neighbour = (centred[..., 1:] * centred[..., :-1]).mean() / centred.pow(2).mean()
    assert neighbour > 0.5


def test_color_correlation_sqrt_squares_to_the_covariance():
    g = torch.Generator().manual_seed(0)
    base = torch.rand(6, 1, 12, 12, generator=g)
    images = torch.cat([base, 0.8 * base + 0.1, 0.5 * base + 0.2 * torch.rand(6, 1, 12, 12, generator=g)], 1)
    pixels = images.permute(1, 0, 2, 3).reshape(3, -1).double()
    for method in ("svd", "cholesky"):
        s = color_correlation_sqrt(images, method=method).double()
        assert torch.allclose(s @ s.T, torch.cov(pixels), atol=1e-5)
    # Lucid's ImageNet matrix has the same form: the first column is luminance (all positive)
    assert (IMAGENET_COLOR_SQRT[:, 0] > 0).all()
    assert (color_correlation_sqrt(images)[:, 0] > 0).all()


def test_transforms_keep_gradients_and_sizes():
    images = torch.rand(3, 3, 40, 40, requires_grad=True)
    for name in ("standard", "distill", "jitter"):
        transforms = Transforms.preset(name)
        out = transforms(images, torch.Generator().manual_seed(0))
        assert out.shape[-2:] == transforms.output_size(40, 40)
        (grad,) = torch.autograd.grad(out.pow(2).sum(), images)
        assert grad.abs().sum() > 0 and torch.isfinite(grad).all()
    assert Transforms.preset("standard").output_size(224, 224) == (236, 236)


def test_integer_jitter_is_an_exact_crop_and_each_item_draws_its_own():
    images = torch.rand(8, 3, 20, 20)
    out = Transforms([jitter(4)])(images, torch.Generator().manual_seed(3))
    offsets = set()
    for item in range(8):
        matches = [(y, x) for y in range(5) for x in range(5)
                   if torch.allclose(out[item], images[item, :, y:y + 16, x:x + 16], atol=1e-5)]
        assert len(matches) == 1
        offsets.add(matches[0])
    assert len(offsets) > 1


def test_pad_fills_with_the_constant_and_rotation_keeps_the_centre():
    images = torch.zeros(1, 3, 10, 10)
    out = Transforms([pad(3, value=0.5)])(images, torch.Generator())
    assert out.shape[-1] == 16 and torch.allclose(out[..., 0, :], torch.full((16,), 0.5))
    assert torch.allclose(out[..., 3:13, 3:13], images, atol=1e-5)
    smooth = torch.linspace(0, 1, 21).view(1, 1, 1, 21).expand(1, 3, 21, 21)
    rotated = Transforms([random_rotate([90]), random_scale([1.0])])(smooth, torch.Generator())
    assert torch.allclose(rotated[..., 10, 10], smooth[..., 10, 10], atol=1e-5)
    assert torch.allclose(rotated[0, 0, :, 10], smooth[0, 0, 10, :], atol=1e-4) or torch.allclose(
        rotated[0, 0, :, 10], smooth[0, 0, 10, :].flip(0), atol=1e-4)


def test_unknown_preset_is_a_clear_error():
    with pytest.raises(InputError, match="standard"):
        Transforms.preset("lucid")


def test_standard_preset_is_lucids_standard_transforms_verbatim():
    # tensorflow/lucid optvis/transform.py: standard_transforms
    from seethrough.featureviz.transforms import PRESETS

    steps = PRESETS.get("standard")
    assert [s.kind for s in steps] == ["pad", "jitter", "scale", "rotate", "jitter"]
    assert (steps[0].amount, steps[0].mode, steps[0].value) == (12, "constant", 0.5)
    assert steps[1].amount == 8 and steps[4].amount == 4
    assert steps[2].choices == tuple(1 + (i - 5) / 50.0 for i in range(11))
    angles = list(range(-10, 11)) + 5 * [0]
    assert steps[3].choices == tuple(float(a) for a in angles)
    assert len(steps[3].choices) == 26 and steps[3].choices.count(0.0) == 6

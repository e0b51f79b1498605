"""Maximally activating patches on the true receptive field."""
import pytest
import torch
from torch import nn

from seethrough.errors import InputError
from seethrough.represent.patches import OUTSIDE, Patches, TopPositions, top_patches
from seethrough.tallying import merge_all, tally


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.Conv2d(4, 3, 3)).eval()


def test_top_patches_equal_brute_force_and_crop_the_field():
    net, images = _net(), torch.rand(9, 3, 17, 17)
    patches = top_patches(net, "2", images, k=3, size=7, batch_size=4, progress=False)
    with torch.no_grad():
        acts = net(images)  # (9, 3, 6, 6); field 7 px, step 2, start 0
    assert patches.field_size == (7, 7)
    for unit in range(3):
        peak, where = acts[:, unit].flatten(1).max(1)
        order = peak.argsort(descending=True, stable=True)[:3]
        assert patches.indices[unit].tolist() == order.tolist()
        torch.testing.assert_close(patches.values[unit], peak[order])
        for rank, index in enumerate(order.tolist()):
            row, col = divmod(int(where[index]), 6)
            assert patches.positions[unit, rank].tolist() == [row, col]
            expected = images[index, :, 2 * row:2 * row + 7, 2 * col:2 * col + 7]
            torch.testing.assert_close(patches.crops[unit, rank], expected)


def test_the_part_of_a_field_outside_the_image_is_grey():
    net = nn.Sequential(nn.Conv2d(3, 1, 5, padding=2, bias=False))
    with torch.no_grad():
        net[0].weight.zero_()
        net[0].weight[0, :, 2, 2] = 1.0  # the unit is the pixel sum: peaks where we put it
    images = torch.zeros(1, 3, 10, 10)
    images[0, :, 0, 0] = 1.0
    patches = top_patches(net, "0", images, k=1, size=5, progress=False)
    assert patches.positions[0, 0].tolist() == [0, 0]
    crop = patches.crops[0, 0]
    assert torch.all(crop[:, :2] == OUTSIDE) and torch.all(crop[:, :, :2] == OUTSIDE)
    assert torch.all(crop[:, 2, 2] == 1.0)


def test_units_subset_shards_and_save_load(tmp_path):
    net, images = _net(), torch.rand(10, 3, 17, 17)
    whole = top_patches(net, "2", images, k=2, units=[2, 0], size=7, progress=False)
    assert whole.units.tolist() == [2, 0]
    parts = [tally(net, ["2"], images, {"t": TopPositions("2", 2, [2, 0])}, batch_size=3,
                   shard=(i, 3), progress=False) for i in range(3)]
    merged = merge_all(parts)["t"]
    assert torch.equal(merged.indices, whole.indices)
    assert torch.equal(merged.positions, whole.positions)
    whole.save(tmp_path / "p")
    again = Patches.load(tmp_path / "p")
    assert torch.equal(again.crops, whole.crops) and again.field_size == whole.field_size
    assert set(whole.to_frame().columns) >= {"unit", "rank", "image", "row", "col", "activation"}


def test_a_layer_without_positions_is_a_clear_error():
    net = nn.Sequential(nn.Conv2d(3, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(InputError, match="no spatial output"):
        top_patches(net, "2", torch.rand(2, 3, 8, 8), progress=False)

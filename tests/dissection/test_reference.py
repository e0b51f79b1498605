"""Dissection against an independent NetDissect-Lite scoring written here in plain numpy.

The reference follows NetDissect-Lite's ``tally``: per image and unit, resize the map bilinearly
to the label size (half-pixel centres), threshold, count the mask, the labels under it, and (for
the Lite rule) the mask only where a label of the category lies under it.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from seethrough.data import ConceptWorld
from seethrough.dissection import dissect

LENGTH, SIZE = 48, 64


def small_cnn() -> nn.Module:
    """Three conv layers; positive biases keep the ReLU units alive, as in a trained net."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 12, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(12, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
    ).eval()
    with torch.no_grad():
        for conv in (model[0], model[3], model[6]):
            conv.bias.add_(0.1)
    return model


def concept_dataset(root):
    """The Broden export of ConceptWorld when the Broden reader exists, else ConceptWorld."""
    world = ConceptWorld("val", length=LENGTH, size=SIZE)
    try:
        from seethrough.data.broden import BrodenDataset, write_broden
    except ImportError:
        return world
    write_broden(world, root)
    return BrodenDataset(root)


def resize(feature: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of one 2-D map, pixel centres at (i + 0.5) * scale - 0.5, edges held."""
    h, w = feature.shape
    ys = (np.arange(height) + 0.5) * h / height - 0.5
    xs = (np.arange(width) + 0.5) * w / width - 0.5
    rows = np.stack([np.interp(xs, np.arange(w), feature[i]) for i in range(h)])
    return np.stack([np.interp(ys, np.arange(h), rows[:, j]) for j in range(width)], axis=1)


def reference(features, samples, categories, thresholds, rule):
    """IoU (units, concepts) and the best label per unit, NetDissect-Lite style."""
    offsets, names, labelcat = {}, ["none"], [-1]
    for ci, (cat, values) in enumerate(categories.items()):
        offsets[cat] = len(names) - 1
        names += values[1:]
        labelcat += [ci] * (len(values) - 1)
    labelcat = np.array(labelcat)
    units, n_labels, n_cats = features.shape[1], len(names), len(categories)
    both = np.zeros((units, n_labels))
    unit_cat = np.zeros((units, n_cats))
    labels_area = np.zeros(n_labels)
    for index, sample in enumerate(samples):
        pixels, scalars = [], []
        for cat in categories:
            if cat in sample["masks"]:
                m = np.asarray(sample["masks"][cat]).astype(np.int64)
                m = m[None] if m.ndim == 2 else m
                pixels.append(np.where(m > 0, m + offsets[cat], 0))
            elif cat in sample:
                values = np.atleast_1d(np.asarray(sample[cat])).astype(np.int64)
                scalars += [v + offsets[cat] for v in values if v > 0]
        pixels = np.concatenate(pixels)
        sh, sw = pixels.shape[-2:]
        counts = np.bincount(pixels.ravel(), minlength=n_labels)
        counts[0] = 0
        labels_area += counts
        for s in scalars:
            labels_area[s] += sh * sw
        annotated = np.zeros(n_cats, bool)
        annotated[np.unique(labelcat[np.unique(pixels[pixels > 0])])] = True
        for s in scalars:
            annotated[labelcat[s]] = True
        for unit in range(units):
            mask = resize(features[index, unit], sh, sw) > thresholds[unit]
            area = mask.sum()
            under = np.bincount(pixels[:, mask].ravel(), minlength=n_labels)
            under[0] = 0
            both[unit] += under
            for s in scalars:
                both[unit, s] += area
            if rule == "paper":
                unit_cat[unit] += area * annotated
            else:
                present = np.zeros(n_cats, bool)
                present[np.unique(labelcat[np.flatnonzero(under)])] = True
                for s in scalars:
                    present[labelcat[s]] = True
                unit_cat[unit] += area * present
    union = unit_cat[:, np.maximum(labelcat, 0)] + labels_area[None] - both
    iou = np.where(union > 0, both / np.maximum(union, 1e-12), 0.0)
    iou[:, 0] = 0
    return iou


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    model = small_cnn()
    dataset = concept_dataset(tmp_path_factory.mktemp("broden"))
    samples = [dataset[i] for i in range(len(dataset))]
    images = torch.stack([torch.as_tensor(s["image"]).float() for s in samples])
    with torch.no_grad():
        features = model(images).numpy().astype(np.float64)  # the output of layer "7" (the last ReLU)
    return model, dataset, samples, features


@pytest.mark.parametrize("rule", ["paper", "netdissect_lite"])
def test_same_thresholds_give_identical_iou(setup, rule):
    model, dataset, samples, features = setup
    thresholds = np.percentile(features, 99.5, axis=(0, 2, 3))
    expected = reference(features, samples, dataset.categories, thresholds, rule)
    result = dissect(model, ["7"], dataset, thresholds={"7": torch.tensor(thresholds)},
                     union=rule, batch_size=16, progress=False)
    iou = result.iou("7").numpy()
    assert iou.shape == expected.shape
    np.testing.assert_allclose(iou, expected, rtol=1e-12, atol=1e-12)
    assert (expected.max(1) > 0).mean() > 0.5, "the reference must see non-trivial masks"


def test_own_thresholds_agree(setup):
    model, dataset, samples, features = setup
    exact = np.percentile(features, 99.5, axis=(0, 2, 3))
    result = dissect(model, ["7"], dataset, batch_size=16, progress=False)
    ours = result.layers["7"].thresholds.numpy()
    assert np.all(np.abs(ours - exact) <= 0.01 * np.abs(exact) + 1e-9)
    expected = reference(features, samples, dataset.categories, exact, "paper")
    iou = result.iou("7").numpy()
    assert np.abs(iou - expected).max() <= 3e-3
    same = (iou.argmax(1) == expected.argmax(1)).mean()
    assert same >= 0.95

"""Segmentation from saliency with GrabCut, scored against ConceptWorld's object masks."""
from __future__ import annotations

import pytest
import torch

import seethrough
from seethrough.attribution.segment import centre_box, grabcut, trimap
from seethrough.data import ConceptWorld
from seethrough.errors import InputError
from seethrough.evaluation import iou
from seethrough.evaluation.localization import top_fraction


def world_batch(count: int = 24):
    world = ConceptWorld("val", length=count, size=64)
    samples = [world[i] for i in range(count)]
    images = torch.stack([s["image"] for s in samples])
    masks = torch.stack([s["object_mask"] for s in samples])
    return images, masks


def blob_maps(masks: torch.Tensor) -> torch.Tensor:
    """A rough map: a Gaussian at each object's centroid, as wide as the object."""
    ys, xs = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    maps = []
    for mask in masks:
        cy, cx = ys[mask].mean(), xs[mask].mean()
        radius = (mask.sum() / torch.pi).sqrt()
        maps.append(torch.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * radius**2)))
    return torch.stack(maps)[:, None]


def test_trimap_quantiles():
    maps = torch.arange(100.0).view(1, 10, 10)
    labels = trimap(maps, background=0.5, probable=0.8, foreground=0.95)
    counts = torch.bincount(labels.flatten(), minlength=4)
    # 50 sure background (0), 30 probable background (2), 15 probable fg (3), 5 sure fg (1)
    assert counts.tolist() == [50, 5, 30, 15]
    with pytest.raises(InputError, match="quantiles"):
        trimap(maps, background=0.9, probable=0.5)


def test_grabcut_sharpens_a_rough_map_on_conceptworld():
    images, masks = world_batch()
    maps = blob_maps(masks)
    segmented = grabcut(images, maps)
    assert segmented.shape == masks.shape and segmented.dtype == torch.bool
    grabcut_iou = iou(segmented, masks).mean()
    threshold_iou = iou(top_fraction(maps[:, 0], 0.2), masks).mean()
    box_iou = iou(centre_box(len(masks), 64, 64), masks).mean()
    # measured: GrabCut 0.78, top-20% of the blob 0.51, centre box 0.24 (48 images)
    assert grabcut_iou > threshold_iou + 0.1
    assert grabcut_iou > box_iou + 0.3


def test_constant_map_falls_back_without_error():
    images, _ = world_batch(2)
    result = grabcut(images, torch.zeros(2, 1, 64, 64))
    assert result.shape == (2, 64, 64)


def test_centre_box_area():
    box = centre_box(2, 64, 64, fraction=0.25)
    assert box.sum(dim=(1, 2)).tolist() == [1024, 1024]
    assert box[0, 32, 32] and not box[0, 0, 0]


def test_grabcut_from_gradcam_beats_centre_box_on_conceptnet():
    model = seethrough.load_model("conceptnet")
    images, masks = world_batch(32)
    maps = seethrough.attribute(model, images, method="gradcam").maps
    segmented = grabcut(images, maps)
    grabcut_iou = iou(segmented, masks).mean().item()
    box_iou = iou(centre_box(len(masks), 64, 64), masks).mean().item()
    assert grabcut_iou > box_iou, (grabcut_iou, box_iou)

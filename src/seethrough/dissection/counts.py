"""Dataset-wide counts for Network Dissection, as mergeable statistics.

``IoUCounter`` accumulates, per unit k and concept c, the intersection ``sum |M_k & L_c|``, the
label areas ``sum |L_c|`` and the mask areas that enter the union under two rules:

* ``"paper"`` (Bau et al. 2017): a unit's mask counts in every image annotated with the
  concept's category.
* ``"netdissect_lite"``: a unit's mask counts only in images where some label of the category
  lies under the mask (NetDissect-Lite's ``tally_units_cat``); image-level labels count as
  covering the whole image.

``TopImages`` keeps, per unit, the images with the largest maximum activation.

Example:
    >>> import torch
    >>> from seethrough.dissection.labels import Vocabulary, LabelBatch
    >>> vocab = Vocabulary({"colour": ["none", "red"]})
    >>> counter = IoUCounter(units=1, vocabulary=vocab)
    >>> masks = torch.ones(1, 1, 2, 2, dtype=torch.bool)
    >>> labels = LabelBatch(pixel=torch.tensor([[[[1, 1], [0, 0]]]]), image=torch.zeros(1, 1).long())
    >>> counter.update(masks, labels)
    >>> counter.iou()[0, 1].item()
    0.5
"""
from __future__ import annotations

import torch

from seethrough.dissection.labels import LabelBatch, Vocabulary
from seethrough.errors import InputError

RULES = ("paper", "netdissect_lite")


class IoUCounter:
    """Intersection and union counts of unit masks against concept labels."""

    def __init__(self, units: int, vocabulary: Vocabulary, *, device="cpu"):
        self.units, self.vocabulary = int(units), vocabulary
        concepts, categories = len(vocabulary), len(vocabulary.categories)
        zeros = lambda *shape: torch.zeros(*shape, dtype=torch.float64, device=device)
        self.intersection = zeros(units, concepts)
        self.label_area = zeros(concepts)
        self.mask_area = {"paper": zeros(units, categories), "netdissect_lite": zeros(units, categories)}
        self.images = 0
        #: (concepts, categories) 0/1: which category each concept belongs to ("none": none)
        self.membership = zeros(concepts, categories)
        self.membership[torch.arange(1, concepts), vocabulary.category_of[1:].to(device)] = 1.0

    def update(self, masks: torch.Tensor, labels: LabelBatch) -> None:
        """Add a batch: boolean (or 0/1 float) ``masks`` (N, units, H, W) at the labels' size."""
        n, units, height, width = masks.shape
        if units != self.units or (height, width) != labels.size:
            raise InputError(f"masks {tuple(masks.shape)} do not fit {self.units} units and "
                             f"labels of size {labels.size}")
        concepts = len(self.vocabulary)
        # chunks of images so that masks and one-hot labels stay small (cache friendly)
        step = max(1, (1 << 22) // max(1, height * width * max(units, concepts)))
        for start in range(0, n, step):
            part = slice(start, start + step)
            flat = masks[part].reshape(-1, units, height * width).to(torch.float32)  # (n, K, P)
            hot = labels.one_hot(concepts)[part].to(flat.device)  # (n, P, C), column 0 all ones
            per_image = torch.bmm(flat, hot).double()  # (n, K, C) intersections per image
            area = per_image[:, :, 0].clone()  # (n, K) mask areas
            per_image[:, :, 0] = 0
            self.add(per_image, area, labels[part])

    def add(self, per_image: torch.Tensor, area: torch.Tensor, labels: LabelBatch) -> None:
        """Add per-image counts: labels under each mask (N, units, concepts; column 0 zero) and
        mask areas (N, units), e.g. from ``mask_counts``."""
        device, concepts = self.intersection.device, len(self.vocabulary)
        n = area.shape[0]
        height, width = labels.size
        per_image, area = per_image.to(device, torch.float64), area.to(device, torch.float64)
        membership = self.membership
        image_hot = torch.zeros(n, concepts, dtype=torch.float64, device=device)
        image_hot.scatter_(1, labels.image.to(device), 1.0)
        image_hot[:, 0] = 0
        image_categories = image_hot @ membership > 0  # (N, categories)
        # an image-level label lies under the whole mask
        self.intersection += per_image.sum(0) + area.T @ image_hot
        label_counts = labels.label_counts(concepts).to(device, torch.float64)  # (N, C)
        annotated = (label_counts @ membership > 0) | image_categories
        self.mask_area["paper"] += area.T @ annotated.double()
        under = (per_image @ membership > 0) | image_categories[:, None, :]
        self.mask_area["netdissect_lite"] += torch.einsum("nk,nkc->kc", area, under.double())
        self.label_area += label_counts.sum(0) + image_hot.sum(0) * (height * width)
        self.images += n

    def union(self, rule: str = "paper") -> torch.Tensor:
        """(units, concepts) union counts under a counting rule (see module docstring)."""
        if rule not in RULES:
            raise InputError(f"union rule must be one of {RULES}, not {rule!r}")
        index = self.vocabulary.category_of.clamp_min(0).to(self.intersection.device)
        mask_area = self.mask_area[rule][:, index]
        return mask_area + self.label_area[None] - self.intersection

    def iou(self, rule: str = "paper") -> torch.Tensor:
        """(units, concepts) IoU; column 0 (none) and empty unions are 0."""
        union = self.union(rule)
        iou = torch.where(union > 0, self.intersection / union.clamp_min(1e-12),
                          torch.zeros_like(union))
        iou[:, 0] = 0
        return iou

    def merge(self, other: IoUCounter) -> IoUCounter:
        self.intersection += other.intersection
        self.label_area += other.label_area
        for rule in RULES:
            self.mask_area[rule] += other.mask_area[rule]
        self.images += other.images
        return self

    def state_dict(self) -> dict:
        return {"intersection": self.intersection.clone(), "label_area": self.label_area.clone(),
                "mask_area": {k: v.clone() for k, v in self.mask_area.items()},
                "images": self.images}

    def load_state_dict(self, state: dict) -> None:
        self.intersection = state["intersection"].clone()
        self.label_area = state["label_area"].clone()
        self.mask_area = {k: v.clone() for k, v in state["mask_area"].items()}
        self.images = int(state["images"])


class TopImages:
    """Per unit, the ``k`` images (dataset indices) with the largest maximum activation."""

    def __init__(self, units: int, k: int = 8):
        self.k = int(k)
        self.values = torch.full((units, 0), float("-inf"))
        self.indices = torch.zeros((units, 0), dtype=torch.long)

    def update(self, maxima: torch.Tensor, indices: torch.Tensor) -> None:
        """``maxima`` (N, units) per-image maxima of images with dataset ``indices`` (N,)."""
        values = torch.cat([self.values, maxima.detach().float().cpu().T], 1)
        index = torch.cat([self.indices, indices.cpu()[None].expand(values.shape[0], -1)], 1)
        order = values.argsort(dim=1, descending=True, stable=True)[:, : self.k]
        self.values, self.indices = values.gather(1, order), index.gather(1, order)

    def merge(self, other: TopImages) -> TopImages:
        values = torch.cat([self.values, other.values], 1)
        index = torch.cat([self.indices, other.indices], 1)
        order = values.argsort(dim=1, descending=True, stable=True)[:, : self.k]
        self.values, self.indices = values.gather(1, order), index.gather(1, order)
        return self

    def state_dict(self) -> dict:
        return {"values": self.values.clone(), "indices": self.indices.clone(), "k": self.k}

    def load_state_dict(self, state: dict) -> None:
        self.values, self.indices = state["values"].clone(), state["indices"].clone()
        self.k = int(state["k"])

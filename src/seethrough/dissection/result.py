"""The result of a dissection: per layer and unit the best concept, its IoU and the threshold.

Example:
    >>> result = dissect(model, ["features.6"], ConceptWorld("val", length=200))  # doctest: +SKIP
    >>> result.to_frame().head()                                                # doctest: +SKIP
    >>> result.unique_detectors()                                               # doctest: +SKIP
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from seethrough.dissection.counts import RULES, IoUCounter, TopImages
from seethrough.dissection.labels import Vocabulary
from seethrough.results import Result


@dataclass
class LayerDissection:
    """One layer: thresholds (K,), the IoU counts, and the top-activating images per unit."""

    name: str
    thresholds: torch.Tensor
    counter: IoUCounter
    top: TopImages
    label_size: tuple[int, int] = (0, 0)

    @property
    def units(self) -> int:
        return len(self.thresholds)


@dataclass
class Dissection(Result):
    """Network Dissection of several layers; ``union`` picks the counting rule of the IoU.

    ``save(folder)`` / ``Dissection.load(folder)`` keep everything (counts, thresholds, top
    images); the folder also holds ``detectors.csv`` (``unique_detectors()``).
    """

    layers: dict[str, LayerDissection]
    vocabulary: Vocabulary
    iou_threshold: float = 0.04
    union: str = "paper"
    options: dict = field(default_factory=dict)

    def iou(self, layer: str) -> torch.Tensor:
        """(units, concepts) IoU of a layer under this result's union rule."""
        return self.layers[layer].counter.iou(self.union)

    def concepts(self) -> dict[str, tuple[str, int]]:
        """``{concept name: (category, label in that category's masks)}`` (``none`` left out)."""
        return {name: (self.vocabulary.category_name(index),
                       index - self.vocabulary.offsets[self.vocabulary.category_name(index)])
                for index, name in enumerate(self.vocabulary.names) if index > 0}

    def best(self, layer: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Per unit the best concept (global index) and its IoU."""
        iou = self.iou(layer)
        values, concepts = iou.max(1)
        return concepts, values

    def to_frame(self):
        """One row per unit: layer, unit, concept, category, iou, threshold, detector."""
        import pandas as pd

        rows = []
        for name, layer in self.layers.items():
            concepts, values = self.best(name)
            for unit in range(layer.units):
                concept = int(concepts[unit])
                rows.append({
                    "layer": name, "unit": unit, "concept": self.vocabulary.names[concept],
                    "category": self.vocabulary.category_name(concept),
                    "iou": float(values[unit]), "threshold": float(layer.thresholds[unit]),
                    "detector": bool(values[unit] > self.iou_threshold),
                })
        return pd.DataFrame(rows)

    def unique_detectors(self):
        """Per layer and category, the number of distinct concepts that have a detector unit."""
        import pandas as pd

        frame = self.to_frame()
        detectors = frame[frame.detector]
        rows = []
        for name in self.layers:
            here = detectors[detectors.layer == name]
            for category in self.vocabulary.categories:
                rows.append({"layer": name, "category": category,
                             "unique_detectors": here[here.category == category].concept.nunique(),
                             "detector_units": int((here.category == category).sum())})
        return pd.DataFrame(rows)

    def state_dict(self) -> dict:
        return {
            "vocabulary": dict(zip(self.vocabulary.categories, self._category_names())),
            "iou_threshold": self.iou_threshold, "union": self.union, "options": self.options,
            "layers": {name: {"thresholds": layer.thresholds, "counter": layer.counter.state_dict(),
                              "top": layer.top.state_dict(), "label_size": layer.label_size}
                       for name, layer in self.layers.items()},
        }

    def _category_names(self) -> list[list[str]]:
        names = []
        for index, _ in enumerate(self.vocabulary.categories):
            members = [n for n, c in zip(self.vocabulary.names, self.vocabulary.category_of) if c == index]
            names.append(["none", *members])
        return names

    def plot(self):
        """Unique detectors per category, grouped bars per layer."""
        from seethrough.dissection.figures import detectors_figure

        return detectors_figure(self)

    def _title(self) -> str:
        return f"Dissection of {', '.join(self.layers)} (union rule {self.union!r})"

    def _tables(self) -> dict:
        return {"detectors": self.unique_detectors()}

    # -- the Result protocol: counts and top images as tensors ``layer/<name>/<key>`` ----------
    def _settings(self) -> dict:
        return {
            "vocabulary": dict(zip(self.vocabulary.categories, self._category_names())),
            "iou_threshold": self.iou_threshold, "union": self.union, "options": self.options,
            "layers": [{"name": name, "label_size": list(layer.label_size),
                        "images": layer.counter.images, "top_k": layer.top.k}
                       for name, layer in self.layers.items()],
        }

    def _tensors(self) -> dict[str, torch.Tensor]:
        tensors = {}
        for name, layer in self.layers.items():
            prefix = f"layer/{name}/"
            tensors[prefix + "thresholds"] = layer.thresholds
            tensors[prefix + "intersection"] = layer.counter.intersection
            tensors[prefix + "label_area"] = layer.counter.label_area
            for rule, area in layer.counter.mask_area.items():
                tensors[prefix + f"mask_area/{rule}"] = area
            tensors[prefix + "top/values"] = layer.top.values
            tensors[prefix + "top/indices"] = layer.top.indices
        return tensors

    @classmethod
    def _from_saved(cls, settings: dict, tensors: dict[str, torch.Tensor]) -> Dissection:
        vocabulary = Vocabulary(settings["vocabulary"])
        layers = {}
        for item in settings["layers"]:
            name, prefix = item["name"], f"layer/{item['name']}/"
            thresholds = tensors[prefix + "thresholds"]
            counter = IoUCounter(len(thresholds), vocabulary)
            counter.load_state_dict({
                "intersection": tensors[prefix + "intersection"],
                "label_area": tensors[prefix + "label_area"],
                "mask_area": {rule: tensors[prefix + f"mask_area/{rule}"] for rule in RULES
                              if prefix + f"mask_area/{rule}" in tensors},
                "images": item["images"],
            })
            top = TopImages(len(thresholds))
            top.load_state_dict({"values": tensors[prefix + "top/values"],
                                 "indices": tensors[prefix + "top/indices"], "k": item["top_k"]})
            layers[name] = LayerDissection(name, thresholds, counter, top,
                                           tuple(item["label_size"]))
        return cls(layers, vocabulary, settings["iou_threshold"], settings["union"],
                   dict(settings["options"]))

"""Attribution maps of a whole dataset, written to files keyed by image index.

``attribute_dataset(model, dataset, folder, method=...)`` is one ``tally`` pass whose statistic
attributes each batch and writes its maps to ``folder/maps-<first index>.safetensors``
(``maps`` ``(n, 1, H, W)``, ``indices``, ``target``), atomically. The statistic itself only
records which index ranges are written, so what a worker sends back does not grow with the
images it explained; with ``engine=`` the shards run on several processes or a Ray cluster and
the files are the same. ``AttributionMaps(folder)`` reads them back in dataset order.

Randomness is per image: a method with a ``seed`` (SmoothGrad, RISE ...) explains each image
alone with the seed ``seed_for(seed, index)``, so its map is the same however the dataset is
batched, split or scheduled.

Example:
    >>> import tempfile, torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    ...                     nn.Linear(4, 10)).eval()
    >>> folder = tempfile.mkdtemp()
    >>> maps = attribute_dataset(net, torch.rand(6, 3, 32, 32), folder, method="saliency",
    ...                          batch_size=4, progress=False)
    >>> len(maps), maps[5].shape
    (6, torch.Size([1, 32, 32]))
"""
from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from seethrough.atomic import atomic_path, write_text_atomic
from seethrough.errors import InputError
from seethrough.tallying import Batch, tally
from seethrough.tallying.engine import EngineSpec
from seethrough.tallying.shard_job import seed_for

__all__ = ["AttributionMaps", "MapWriter", "attribute_dataset"]


def _spans(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted index ranges ``[start, stop)`` with touching ones joined."""
    joined: list[tuple[int, int]] = []
    for start, stop in sorted(spans):
        if joined and start <= joined[-1][1]:
            joined[-1] = (joined[-1][0], max(stop, joined[-1][1]))
        else:
            joined.append((start, stop))
    return joined


class MapWriter:
    """A ``tally`` statistic: attribute every batch, write its maps, remember the index ranges.

    Args:
        model: the model explained.
        folder: where ``maps-<first index>.safetensors`` files go.
        method, options: the attribution method and its options.
        target: ``"predicted"``, ``"label"`` (the dataset's labels) or a class index.
        seed: for methods with a ``seed``: image ``i`` gets ``seed_for(seed, i)``.
    """

    def __init__(self, model: nn.Module, folder: str | Path, method: str, options: dict,
                 target: Any = "predicted", seed: int = 0):
        from seethrough.attribution import METHODS

        if method not in METHODS:
            raise InputError(f"unknown attribution method {method!r} (known: {', '.join(METHODS)})")
        self.model, self.folder, self.method = model, str(folder), method
        self.options, self.target, self.seed = dict(options), target, seed
        self.seeded = "seed" in inspect.signature(METHODS[method]).parameters
        if self.seeded and "seed" in self.options:
            raise InputError("give seed= to attribute_dataset, not as a method option: each image "
                             "gets its own seed from it")
        self.spans: list[tuple[int, int]] = []

    def _targets(self, batch: Batch):
        if self.target != "label":
            return self.target
        labels = batch.labels.get("label") if isinstance(batch.labels, dict) else batch.labels
        if labels is None:
            raise InputError("target='label' needs a dataset whose samples carry a label")
        return torch.as_tensor(labels).long()

    def update(self, batch: Batch) -> None:
        from seethrough.attribution import attribute

        images, targets = batch.images, self._targets(batch)
        if self.seeded:  # one image at a time, each with its own seed
            parts = []
            for row, index in enumerate(batch.indices.tolist()):
                target = targets[row : row + 1] if isinstance(targets, torch.Tensor) else targets
                parts.append(attribute(self.model, images[row : row + 1], target,
                                       method=self.method, seed=seed_for(self.seed, index),
                                       **self.options))
            maps = torch.cat([p.maps for p in parts])
            explained = torch.cat([p.target for p in parts]) if parts[0].target is not None else None
        else:
            result = attribute(self.model, images, targets, method=self.method, **self.options)
            maps, explained = result.maps, result.target
        tensors = {"maps": maps.detach().float().cpu().contiguous(),
                   "indices": batch.indices.clone()}
        if explained is not None:
            tensors["target"] = explained.detach().cpu().long().contiguous()
        first = int(batch.indices[0])
        from safetensors.torch import save_file

        path = Path(self.folder) / f"maps-{first:010d}.safetensors"
        with atomic_path(path) as temporary:
            save_file(tensors, str(temporary))
        self.spans = _spans(self.spans + [(first, int(batch.indices[-1]) + 1)])

    def merge(self, other: MapWriter) -> MapWriter:
        self.spans = _spans(self.spans + other.spans)
        return self

    def state_dict(self) -> dict:
        return {"spans": list(self.spans)}

    def load_state_dict(self, state: dict) -> None:
        self.spans = list(state["spans"])


class AttributionMaps:
    """The maps ``attribute_dataset`` wrote in ``folder``, by dataset index.

    ``maps[i]`` is image ``i``'s ``(1, H, W)`` map; ``maps.all()`` all of them ``(N, 1, H, W)``
    in dataset order; ``maps.targets()`` the class each was explained for; ``maps.info`` the
    method, options, seed and target of the run.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        info = self.folder / "maps.json"
        if not info.is_file():
            raise InputError(f"{self.folder} holds no finished attribute_dataset run (no maps.json)")
        self.info = json.loads(info.read_text())
        self.files = sorted(self.folder.glob("maps-*.safetensors"))
        self.firsts = [int(f.stem.split("-")[1]) for f in self.files]

    def __len__(self) -> int:
        return int(self.info["images"])

    def _load(self, file: Path) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        return load_file(str(file))

    def __getitem__(self, index: int) -> torch.Tensor:
        if not 0 <= index < len(self):
            raise IndexError(f"image {index} is not in the {len(self)} images")
        import bisect

        part = self._load(self.files[bisect.bisect_right(self.firsts, index) - 1])
        return part["maps"][int((part["indices"] == index).nonzero()[0, 0])]

    def all(self) -> torch.Tensor:
        """Every map, ``(N, 1, H, W)``, in dataset order."""
        return torch.cat([self._load(f)["maps"] for f in self.files])

    def targets(self) -> torch.Tensor | None:
        """The class each image was explained for, ``(N,)``, or None for callable targets."""
        parts = [self._load(f).get("target") for f in self.files]
        return None if any(p is None for p in parts) else torch.cat(parts)


def attribute_dataset(model: nn.Module, dataset, folder: str | Path, *, method: str = "saliency",
                      target: Any = "predicted", seed: int = 0, batch_size: int = 32,
                      engine: EngineSpec = "local", checkpoint: bool = True,
                      progress: bool | None = None, **options) -> AttributionMaps:
    """Attribute every image of ``dataset`` with ``method``; write the maps under ``folder``.

    Args:
        model: any ``nn.Module`` (left as it was; call ``eval()`` first).
        dataset: an ``(N, C, H, W)`` tensor or any dataset ``tally`` takes.
        folder: output folder (maps files, ``maps.json``, and the run's checkpoint).
        method: a name in ``attribution.METHODS``.
        target: ``"predicted"``, ``"label"`` (the dataset's labels) or a class index.
        seed: base seed of the per-image seeds (methods with a ``seed`` option).
        engine: ``"local"``, ``"ray"`` or an ``Engine``: shards on several workers.
        checkpoint: keep progress in ``folder`` so that a rerun resumes.
        options: the method's own options.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    writer = MapWriter(model, folder, method, options, target, seed)
    settings = {"method": method, "options": repr(sorted(options.items())), "target": repr(target),
                "seed": seed}
    tally(model, [], dataset, {"maps": writer}, batch_size=batch_size, engine=engine,
          checkpoint=folder / "progress.pt" if checkpoint else None, settings=settings,
          progress=progress, desc=f"attribute ({method})")
    images = writer.spans[-1][1] if writer.spans else 0
    if writer.spans != [(0, images)]:
        raise InputError(f"the maps cover {writer.spans}, not every image: rerun to finish")
    write_text_atomic(folder / "maps.json", json.dumps(
        {"method": method, "options": {k: repr(v) for k, v in options.items()},
         "target": repr(target), "seed": seed, "images": images, "batch_size": batch_size},
        indent=2))
    return AttributionMaps(folder)

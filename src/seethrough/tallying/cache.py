"""The activation cache of a dataset pass: the first ``memory`` bytes in memory, the rest in
files written atomically, so memory stays bounded as the dataset grows. A cache given a
``root`` folder (with a checkpoint) keeps every batch on disk, so that a resumed run finds it.

Example:
    >>> import torch
    >>> cache = ActivationCache(memory=1 << 20)
    >>> cache.put(0, {"layer": torch.ones(2, 3)}, torch.tensor([0, 1]), labels=None)
    >>> cache.get(0)[0]["layer"].shape
    torch.Size([2, 3])
    >>> cache.close()
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import torch

from seethrough.atomic import atomic_path
from seethrough.errors import InputError


def save_atomic(obj, path: Path) -> None:
    """``torch.save`` to ``path`` atomically."""
    with atomic_path(path) as temporary:
        torch.save(obj, temporary)


class ActivationCache:
    """Per-batch activations, dataset indices and labels of one dataset pass (see module doc).

    Args:
        root: a folder for the files; ``None`` makes a temporary one, removed by ``close()``.
        memory: bytes held in memory before batches spill to files (``0`` with a ``root``).
        dtype: the precision activations are kept in (``float16`` halves memory and disk).
    """

    def __init__(self, root: str | Path | None = None, *, memory: int = 256 * 2**20,
                 dtype: torch.dtype = torch.float32):
        self._temporary = None
        if root is None:
            self._temporary = tempfile.TemporaryDirectory(prefix="seethrough-cache-")
            root = self._temporary.name
        else:
            memory = 0
        self.root, self.memory, self.dtype = Path(root), memory, dtype
        self.root.mkdir(parents=True, exist_ok=True)
        self.held: dict[int, dict] = {}
        #: what filled the cache (set by the first ``tally`` that writes it)
        self.key: str | None = None

    def claim(self, key: str) -> None:
        """Tie the cache to one dataset pass; another pass's cache is refused."""
        marker = self.root / "key.txt"
        if self.key is None and marker.is_file():
            self.key = marker.read_text()
        if self.key is not None and self.key != key:
            raise InputError(f"the activation cache at {self.root} holds another run's batches "
                             "(model, layers, dataset or options differ): use a new cache")
        if self.key is None:
            self.key = key
            marker.write_text(key)

    def path(self, batch: int) -> Path:
        return self.root / f"batch_{batch:07d}.pt"

    def has(self, batch: int) -> bool:
        return batch in self.held or self.path(batch).is_file()

    def put(self, batch: int, acts: dict[str, torch.Tensor], indices: torch.Tensor, labels) -> None:
        """Keep one batch: activations (converted to ``dtype`` on the CPU), indices, labels.

        Labels with a ``for_cache()`` method are stored in the compact form it returns and
        restored with their ``from_cache()`` (``LabelBatch`` keeps label maps as int16).
        """
        labels = labels.for_cache() if hasattr(labels, "for_cache") else labels
        item = {"acts": {k: v.detach().to("cpu", self.dtype) for k, v in acts.items()},
                "indices": indices.cpu(), "labels": labels}
        size = sum(t.numel() * t.element_size() for t in item["acts"].values())
        size += getattr(labels, "nbytes", 0)
        if size <= self.memory:
            self.memory -= size
            self.held[batch] = item
        else:
            save_atomic(item, self.path(batch))

    def get(self, batch: int) -> tuple[dict[str, torch.Tensor], torch.Tensor, object]:
        """``(activations as float32, dataset indices, labels)`` of one batch."""
        item = self.held.get(batch) or torch.load(self.path(batch), weights_only=False)
        labels = item["labels"]
        labels = labels.from_cache() if hasattr(labels, "from_cache") else labels
        return {k: v.float() for k, v in item["acts"].items()}, item["indices"], labels

    def numbers(self) -> list[int]:
        """The batch numbers held, in order."""
        on_disk = {int(path.stem.split("_")[1]) for path in self.root.glob("batch_*.pt")}
        return sorted(on_disk | set(self.held))

    def __iter__(self):
        """``(activations, indices, labels)`` of every batch held, in batch order."""
        for number in self.numbers():
            yield self.get(number)

    def close(self, *, remove: bool = False) -> None:
        """Free the memory; delete the files of a temporary cache (or of any with ``remove``)."""
        self.held.clear()
        if self._temporary is not None:
            self._temporary.cleanup()
            self._temporary = None
        elif remove:
            shutil.rmtree(self.root, ignore_errors=True)

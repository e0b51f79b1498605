"""One protocol for every result: ``to_frame``, ``plot``, ``save(folder)``, ``load(folder)``, HTML.

A result class adopts ``Result`` as a base and implements three small hooks; the base does the
rest:

* ``_settings() -> dict``: its options and other small values (made JSON-safe here: tensors and
  tuples become lists, callables their name);
* ``_tensors() -> dict[str, Tensor]``: the tensors needed to rebuild it;
* ``_from_saved(settings, tensors)`` (classmethod): rebuild it from what the two others gave.

It also has its own ``to_frame()`` (a pandas DataFrame) and ``plot()`` (a matplotlib Figure), and
may declare extra tables (``_tables()``), figures (``_figures()``) and images (``_images()``).

``save(folder)`` writes, each file atomically:

* ``result.json``: ``schema_version``, ``type``, ``settings``, ``seethrough_version``,
  ``torch_version``;
* ``table.csv`` (``to_frame()``) and ``<name>.csv`` per extra table;
* ``figure.png`` (``plot()``) and ``<name>.png`` per extra figure or image;
* ``tensors.safetensors``.

``Type.load(folder)`` reads it back (``load_result(folder)`` picks the type from ``result.json``).
In a notebook a result shows itself as a title, the head of its table and its plot.

Example:
    >>> import tempfile, torch
    >>> from seethrough.evaluation import Scores
    >>> scores = Scores({"deletion": torch.tensor([0.1, 0.3])}, torch.tensor([1, 2]), "saliency")
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = scores.save(folder)
    ...     sorted(p.name for p in path.iterdir())
    ...     Scores.load(folder).mean() == scores.mean()
    ['figure.png', 'result.json', 'table.csv', 'tensors.safetensors']
    True
"""
from __future__ import annotations

import enum
import html
import json
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from seethrough.atomic import atomic_path, save_figure_atomic, write_text_atomic
from seethrough.errors import InputError

if TYPE_CHECKING:  # imported lazily at run time: `import seethrough` stays light
    from typing import Self

    from matplotlib.figure import Figure
    from pandas import DataFrame

#: the layout of a saved folder that this version writes and reads
SCHEMA_VERSION = 1

#: result type name -> module defining it, for ``load_result``
TYPES = {
    "Attribution": "seethrough.attribution.result",
    "ChannelScores": "seethrough.attribution.channels",
    "Scores": "seethrough.evaluation",
    "Randomization": "seethrough.evaluation.sanity",
    "ExtremalSweep": "seethrough.evaluation.findings",
    "InstanceCurves": "seethrough.evaluation.findings",
    "DataRandomization": "seethrough.evaluation.data_randomization",
    "Visualization": "seethrough.featureviz.render",
    "NeuronGroups": "seethrough.featureviz.views",
    "Atlas": "seethrough.featureviz.atlas",
    "Dissection": "seethrough.dissection.result",
    "Net2VecResult": "seethrough.concepts.net2vec",
    "TCAVResult": "seethrough.concepts.tcav",
    "ConceptPCA": "seethrough.dissection.experiments",
    "LayerTable": "seethrough.core.layer_table",
    "Patches": "seethrough.represent.patches",
    "Adversarial": "seethrough.adversarial.result",
    "DetectorResult": "seethrough.adversarial.detect",
    "RobustnessResult": "seethrough.adversarial.robustness",
    "AblationEffect": "seethrough.gan.interventions",
    "InsertionEffect": "seethrough.gan.interventions",
    "ArtifactUnits": "seethrough.gan.interventions",
    "Boundary": "seethrough.gan.directions",
    "Walk": "seethrough.gan.directions",
    "LayerControl": "seethrough.gan.directions",
    "Inversion": "seethrough.gan.inversion",
    "PriorComparison": "seethrough.gan.prior",
}


def json_safe(value: Any) -> Any:
    """``value`` with tensors / arrays / tuples as lists, callables as their name, keys as str."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, enum.Enum):
        return json_safe(value.value)
    if isinstance(value, Mapping):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=repr) if isinstance(value, (set, frozenset)) else value
        return [json_safe(item) for item in items]
    if isinstance(value, torch.Tensor):
        return json_safe(value.detach().cpu().tolist())
    if isinstance(value, (torch.dtype, torch.device, Path)):
        return str(value)
    if hasattr(value, "tolist") and hasattr(value, "dtype"):  # numpy arrays and scalars
        return json_safe(value.tolist())
    if callable(value):
        name = getattr(value, "__qualname__", None) or getattr(value, "__name__", None)
        return name if isinstance(name, str) else repr(value)
    return repr(value)


def image_uint8(image: torch.Tensor):
    """A ``(3, H, W)`` (or ``(1, H, W)``) image in [0, 1] as an ``(H, W, 3)`` uint8 array."""
    import numpy as np

    image = image.detach().float().cpu().clamp(0, 1)
    if image.shape[0] == 1:
        image = image.expand(3, -1, -1)
    return (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def save_image_atomic(image: torch.Tensor, path: str | Path) -> Path:
    """Write a ``(3, H, W)`` image in [0, 1] as a PNG, atomically."""
    from PIL import Image

    with atomic_path(path) as temporary:
        Image.fromarray(image_uint8(image)).save(temporary, format="PNG")
    return Path(path)


def _cpu_tensors(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU tensors that share no memory (safetensors refuses shared ones)."""
    out, seen = {}, set()
    for key, tensor in tensors.items():
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"_tensors()[{key!r}] is a {type(tensor).__name__}, not a tensor")
        tensor = tensor.detach().cpu().contiguous()
        pointer = tensor.untyped_storage().data_ptr() if tensor.numel() else None
        if pointer is not None and pointer in seen:
            tensor = tensor.clone()
        elif pointer is not None:
            seen.add(pointer)
        out[key] = tensor
    return out


def _read_metadata(folder: Path) -> dict:
    path = folder / "result.json"
    if not path.is_file():
        raise InputError(f"{folder} holds no saved result (no result.json); write one with "
                         "result.save(folder)")
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise InputError(f"cannot read {path}: {error}") from error
    if not isinstance(metadata, dict):
        raise InputError(f"{path} is not a seethrough result.json")
    version = metadata.get("schema_version")
    if version != SCHEMA_VERSION:
        raise InputError(f"{folder} was saved with schema_version {version!r}; this seethrough "
                         f"reads schema_version {SCHEMA_VERSION} (use the seethrough version that "
                         f"wrote it: {metadata.get('seethrough_version', 'unknown')})")
    if not isinstance(metadata.get("type"), str) or not isinstance(metadata.get("settings"), dict):
        raise InputError(f"{path} lacks `type` or `settings`: not a seethrough result")
    return metadata


def load_result(folder: str | Path) -> Result:
    """Load a saved result of any type (the type is read from its ``result.json``)."""
    import importlib

    folder = Path(folder)
    kind = _read_metadata(folder)["type"]
    if kind not in TYPES:
        raise InputError(f"{folder} holds a result of unknown type {kind!r}; known: "
                         f"{', '.join(TYPES)}")
    return getattr(importlib.import_module(TYPES[kind]), kind).load(folder)


class Result(ABC):
    """Mixin of every result type: save / load a folder, a default plot, notebook HTML."""

    #: files of a saved folder (besides the extra tables, figures and images)
    METADATA: ClassVar[str] = "result.json"
    TABLE: ClassVar[str] = "table.csv"
    FIGURE: ClassVar[str] = "figure.png"
    TENSORS: ClassVar[str] = "tensors.safetensors"

    # -- hooks each result implements ----------------------------------------------------------
    @abstractmethod
    def _settings(self) -> dict:
        """Small values needed to rebuild the result (made JSON-safe by ``save``)."""

    def _tensors(self) -> dict[str, torch.Tensor]:
        """Tensors needed to rebuild the result, by name."""
        return {}

    @classmethod
    @abstractmethod
    def _from_saved(cls, settings: dict, tensors: dict[str, torch.Tensor]) -> Self:
        """Rebuild from ``_settings()`` (as read back from JSON) and ``_tensors()``."""

    def _tables(self) -> dict[str, DataFrame]:
        """Extra tables, written as ``<name>.csv``."""
        return {}

    def _figures(self) -> dict[str, Figure]:
        """Extra figures, written as ``<name>.png``."""
        return {}

    def _images(self) -> dict[str, torch.Tensor]:
        """Images ``(3, H, W)`` in [0, 1], written as ``<name>.png``."""
        return {}

    def _title(self) -> str:
        """One line naming the result (the HTML title)."""
        method = getattr(self, "method", "")
        return f"{type(self).__name__}: {method}" if isinstance(method, str) and method else \
            type(self).__name__

    # -- the protocol --------------------------------------------------------------------------
    @abstractmethod
    def to_frame(self) -> DataFrame:
        """The result as a pandas DataFrame."""

    @abstractmethod
    def plot(self) -> Figure:
        """The result drawn in its default way, as a matplotlib Figure."""

    def save(self, folder: str | Path) -> Path:
        """Write the result into ``folder`` (created), every file atomically; return the folder."""
        from safetensors.torch import save_file

        import seethrough

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        metadata = {
            "schema_version": SCHEMA_VERSION,
            "type": type(self).__name__,
            "settings": json_safe(self._settings()),
            "seethrough_version": seethrough.__version__,
            "torch_version": torch.__version__,
        }
        tensors = _cpu_tensors(self._tensors())
        with atomic_path(folder / self.TENSORS) as temporary:
            save_file(tensors, str(temporary))
        tables = {self.TABLE: self.to_frame()}
        tables.update({f"{name}.csv": frame for name, frame in self._tables().items()})
        for name, frame in tables.items():
            write_text_atomic(folder / name, frame.to_csv(index=False))
        save_figure_atomic(self.plot(), folder / self.FIGURE)
        for name, figure in self._figures().items():
            save_figure_atomic(figure, folder / f"{name}.png")
        for name, image in self._images().items():
            save_image_atomic(image, folder / f"{name}.png")
        # written last: a folder with a result.json is complete
        write_text_atomic(folder / self.METADATA, json.dumps(metadata, indent=2) + "\n")
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> Self:
        """Read a result that ``save`` wrote into ``folder``."""
        from safetensors.torch import load_file

        folder = Path(folder)
        metadata = _read_metadata(folder)
        if metadata["type"] != cls.__name__:
            raise InputError(f"{folder} holds a {metadata['type']}, not a {cls.__name__}; load it "
                             f"with {metadata['type']}.load or seethrough.results.load_result")
        path = folder / cls.TENSORS
        if not path.is_file():
            raise InputError(f"{folder} lacks {cls.TENSORS}: the result was not saved completely")
        try:
            tensors = load_file(str(path))
        except Exception as error:  # safetensors raises its own error types
            raise InputError(f"cannot read {path}: {error}") from error
        return cls._from_saved(metadata["settings"], tensors)

    def _repr_html_(self) -> str:
        """A title, the head of the table and the plot inline: how a notebook shows the result."""
        from seethrough.viz.html import png_data_uri

        frame = self.to_frame()
        more = f"<p>{len(frame)} rows; first 20 shown</p>" if len(frame) > 20 else ""
        return (f"<div><h4>{html.escape(self._title())}</h4>{frame.head(20).to_html()}{more}"
                f'<img src="{png_data_uri(self.plot())}"></div>')


# -- small drawing helpers shared by the result types ------------------------------------------
def bar_figure(labels: list[str], values: list[float], *, ylabel: str, title: str = "",
               width: float | None = None) -> Figure:
    """One bar per label (NaN drawn as no bar), labels as x ticks."""
    from matplotlib.figure import Figure

    values = [0.0 if v is None or (isinstance(v, float) and math.isnan(v)) else v for v in values]
    fig = Figure(figsize=(width or min(12.0, 1.5 + 0.35 * max(len(labels), 4)), 3.0))
    ax = fig.add_subplot()
    ax.bar(range(len(values)), values, color="#1f77b4")
    ax.set_xticks(range(len(labels)), labels, rotation=45 if len(labels) > 6 else 0,
                  ha="right" if len(labels) > 6 else "center", fontsize=8)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.axhline(0, color="black", linewidth=0.5)
    fig.tight_layout()
    return fig


def image_row_figure(images: list, titles: list[str], *, cmap: str | None = None,
                     vmin: float | None = None, vmax: float | None = None) -> Figure:
    """Images (HxW or HxWx3 arrays) side by side, each with a title."""
    from matplotlib.figure import Figure

    count = max(len(images), 1)
    fig = Figure(figsize=(1.9 * count + 0.3, 2.2))
    axes = fig.subplots(1, count, squeeze=False)[0]
    for ax, image, title in zip(axes, images, titles):
        ax.imshow(image, cmap=cmap, vmin=vmin, vmax=vmax)
        ax.set_title(title, fontsize=8)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    return fig

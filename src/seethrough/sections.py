"""Report sections for any model: what a family's ``section(model, data, options)`` takes and
returns.

A family's section function looks at ``model`` with ``data`` (images, and where there is ground
truth: true classes, object masks, a concept dataset), chooses its layers itself when
``options.layers`` is empty (one per spatial resolution, from the layer table), never names a
model or a layer, and returns a ``Section``: a title, an HTML body with its figures inline,
and notes. ``seethrough demo`` and ``seethrough report`` are lists of sections.

Example:
    >>> Section("Network Dissection", "<p>...</p>").anchor
    'network-dissection'
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch


@dataclass
class Section:
    """A titled block of HTML; ``anchor`` is derived from the title when not given.

    Attributes:
        facts: the section's headline numbers (JSON values), for the report's summary and its
            ``report.json``, e.g. ``{"border_share": 0.31}``.
        tables: its tables as records (``frame.to_dict("records")``), written beside the
            report as CSV files.
    """

    title: str
    body: str
    anchor: str = ""
    notes: list[str] = field(default_factory=list)
    facts: dict = field(default_factory=dict)
    tables: dict[str, list[dict]] = field(default_factory=dict)

    def __post_init__(self):
        if not self.anchor:
            self.anchor = re.sub(r"[^a-z0-9]+", "-", self.title.lower()).strip("-")


@dataclass
class SectionData:
    """What a section looks at: images, and ground truth where there is some.

    Attributes:
        images: ``(N, C, H, W)`` in [0, 1] at the model's input size.
        names: one short name per image (row titles), e.g. file names.
        labels: true class per image ``(N,)``, when known.
        masks: object masks ``(N, H, W)``, when known (localization scores).
        concepts: a concept dataset (ConceptWorld, Broden) at the model's input size, for
            dissection and concept labels of units.
        extra: further inputs a section may use when present (e.g. ``{"textures": images}``).
    """

    images: torch.Tensor
    names: list[str] | None = None
    labels: torch.Tensor | None = None
    masks: torch.Tensor | None = None
    concepts: object | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.names is None:
            self.names = [f"image {i}" for i in range(len(self.images))]

    def first(self, count: int) -> SectionData:
        """The first ``count`` images with their ground truth (``self`` when there are fewer)."""
        if len(self.images) <= count:
            return self
        return SectionData(
            self.images[:count], self.names[:count],
            None if self.labels is None else self.labels[:count],
            None if self.masks is None else self.masks[:count], self.concepts,
            {k: v[:count] if isinstance(v, torch.Tensor) and len(v) == len(self.images) else v
             for k, v in self.extra.items()})


@dataclass
class SectionOptions:
    """How much a section does: ``quick`` for a first look; ``layers`` and ``methods`` to choose
    them yourself (else the section chooses)."""

    quick: bool = False
    layers: list[str] | None = None
    methods: list[str] | None = None
    seed: int = 0
    progress: bool | None = False
    #: where dataset passes run (``tallying.Engine`` or ``"local"``/``"ray"``)
    engine: object = "local"

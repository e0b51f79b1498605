"""The main job: one report from the two defaults (ImageNet MobileNetV2 on real photos, and
ConceptNet on ConceptWorld with ground truth). Each capability adds one section function.

A section function takes the ``DemoContext`` and returns a ``Section``. Finished sections are
cached in ``OUT/.sections/`` so an interrupted run resumes where it stopped (``resume=True``).

Example:
    >>> path = run_demo("report-out", sections=["models"])   # doctest: +SKIP
"""
from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from seethrough.atomic import write_text_atomic
from seethrough.errors import InputError
from seethrough.report import Section, write_report

#: key -> "module:function"; the order of the report
SECTIONS = {
    "models": "seethrough.report.basics:models_section",
    "predictions": "seethrough.report.basics:predictions_section",
    "layers": "seethrough.report.basics:layers_section",
    "filters": "seethrough.report.basics:filters_section",
    "conceptworld": "seethrough.report.basics:conceptworld_section",
    "attribution": "seethrough.attribution.report:section",
    "featureviz": "seethrough.featureviz.report:section",
    "dissection": "seethrough.dissect.report:dissection_section",
}


@dataclass
class DemoContext:
    """What the sections share, loaded once and only when a section asks."""

    out_dir: Path
    quick: bool = False

    @cached_property
    def imagenet_model(self):
        from seethrough.models import load_model

        return load_model("mobilenet_v2")

    @cached_property
    def photos(self):
        from seethrough.data.photos import sample_photos

        return sample_photos(size=224)

    @cached_property
    def conceptnet(self):
        from seethrough.models import load_model

        return load_model("conceptnet")

    @cached_property
    def cheater(self):
        from seethrough.models import load_model

        return load_model("conceptnet_cheater")

    def conceptworld(self, split: str = "val", length: int = 500, bias: float = 0.0):
        from seethrough.data import ConceptWorld

        size = self.conceptnet.input_size[-1]
        return ConceptWorld(split=split, length=length, size=size, bias=bias)


def section_function(key: str):
    if key not in SECTIONS:
        raise InputError(f"unknown report section {key!r}; choose from {', '.join(SECTIONS)}")
    module, function = SECTIONS[key].split(":")
    return getattr(importlib.import_module(module), function)


def run_demo(out_dir: str | Path = "seethrough-report", *, sections: list[str] | None = None,
             quick: bool = False, resume: bool = True, progress: bool = True) -> Path:
    """Build every section (or the chosen ones) and write ``OUT/report.html``; return its path."""
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    cache = out_dir / ".sections"
    cache.mkdir(parents=True, exist_ok=True)
    keys = list(sections or SECTIONS)
    functions = {key: section_function(key) for key in keys}
    context = DemoContext(out_dir=out_dir, quick=quick)
    built = []
    bar = tqdm(keys, desc="report", unit="section", disable=not progress)
    for key in bar:
        bar.set_postfix_str(key)
        cached = cache / f"{key}{'-quick' if quick else ''}.json"
        if resume and cached.is_file():
            built.append(Section(**json.loads(cached.read_text())))
            continue
        section = functions[key](context)
        write_text_atomic(cached, json.dumps(section.__dict__))
        built.append(section)
    return write_report(out_dir / "report.html", "seethrough report", built)

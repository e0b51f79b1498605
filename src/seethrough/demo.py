"""The main job: one report from the two defaults (ImageNet MobileNetV2 on real photos, and
ConceptNet on ConceptWorld with ground truth). Each capability adds one section function.

A section function takes the ``DemoContext`` and returns a ``Section``. Finished sections are
cached in ``OUT/.sections/`` so an interrupted run resumes where it stopped (``resume=True``).
A cached section is reused only if it was made by the same seethrough code and weights
(``code_fingerprint``); after an upgrade or an edit it is made again.

Example:
    >>> path = run_demo("report-out", sections=["models"])   # doctest: +SKIP
"""
from __future__ import annotations

import hashlib
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
    "dissection": "seethrough.dissection.report:dissection_section",
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


def code_fingerprint() -> str:
    """A digest of seethrough's own source files and bundled weights (a few ms to compute)."""
    root = Path(__file__).parent
    digest = hashlib.sha1()
    for path in sorted(root.rglob("*")):
        if path.suffix in (".py", ".json", ".safetensors", ".j2") and path.is_file():
            digest.update(path.relative_to(root).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


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
    code = code_fingerprint()
    built = []
    bar = tqdm(keys, desc="report", unit="section", disable=not progress)
    for key in bar:
        bar.set_postfix_str(key)
        cached = cache / f"{key}{'-quick' if quick else ''}.json"
        if resume and cached.is_file():
            saved = json.loads(cached.read_text())
            if saved.pop("code", None) == code:
                built.append(Section(**saved))
                continue
        section = functions[key](context)
        write_text_atomic(cached, json.dumps({**section.__dict__, "code": code}))
        built.append(section)
    return write_report(out_dir / "report.html", "seethrough report", built)

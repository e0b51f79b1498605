"""The main job: one report from the two defaults, as a list of sections over subjects.

A subject is a model with the data it is looked at on: ImageNet MobileNetV2 on real photos,
and ConceptNet (and its shortcut-taking twin, the cheater) on ConceptWorld, with ground truth.
Every section is a family's ``section(model, data, options)``, the same function that
``seethrough report`` runs on a user's model: nothing below this file names a model or a
layer. A family's part of the report shows each subject under its own heading.

Finished sections are cached in ``OUT/.sections/`` so an interrupted run resumes where it
stopped (``resume=True``). A cached section is reused only if it was made by the same
seethrough code and weights (``code_fingerprint``); after an upgrade or an edit it is made again.

Example:
    >>> path = run_demo("report-out", sections=["models"])   # doctest: +SKIP
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch

from seethrough.atomic import write_text_atomic
from seethrough.core import Registry
from seethrough.reporting import Section, SectionData, SectionOptions, write_report


@dataclass
class Defaults:
    """The demo's models and data, each loaded once and only when a section asks."""

    quick: bool = False

    @cached_property
    def mobilenet(self):
        from seethrough.models import load_model

        return load_model("mobilenet_v2")

    @cached_property
    def conceptnet(self):
        from seethrough.models import load_model

        return load_model("conceptnet")

    @cached_property
    def cheater(self):
        from seethrough.models import load_model

        return load_model("conceptnet_cheater")

    @cached_property
    def shuffled(self):
        from seethrough.models import load_model

        return load_model("conceptnet_shuffled")

    @cached_property
    def gan(self):
        from seethrough.models import load_model

        return load_model("conceptworld_gan")

    def gan_data(self) -> SectionData:
        """ConceptWorld's validation images (the Fréchet reference; the generator never saw
        them) and photos at 64 px."""
        from seethrough.data.photos import sample_photos

        photos, _ = sample_photos(size=64)
        real = self.world(500 if self.quick else 2000).batch()["image"]
        return SectionData(real, extra={"photos": photos})

    def world(self, length: int, *, size: int = 64, bias: float = 0.0, cue: bool | None = None):
        from seethrough.data import ConceptWorld

        return ConceptWorld(split="val", length=length, size=size, bias=bias, cue=cue)

    def photos(self, family: str) -> SectionData:
        from seethrough.data.photos import sample_photos

        images, names = sample_photos(size=224)
        if self.quick and family == "attribution":
            images, names = images[:2], names[:2]
        textures, _ = sample_photos(["brick", "grass", "gravel"], size=224)
        concepts = self.world(60 if self.quick else 200, size=112) if family == "dissection" else None
        extra = {"textures": textures[[0, 2]]}
        if family == "synthesis":  # the shipped stylizers, and Gatys on the same style
            from seethrough.featureviz.stylizers import style_images

            extra.update(stylizers=True, style=style_images(["stained_glass"], size=224)[0])
        if family == "featureviz":  # more images for the crops: textures and mirror images
            images = torch.cat([images, textures, images.flip(-1)])
            names = [*names, "brick", "grass", "gravel", *(f"{n}, mirrored" for n in names)]
        if family == "adversarial":  # the photos and their mirror images; a second ImageNet net
            from seethrough.models import load_model

            images = torch.cat([images, images.flip(-1)])
            names = [*names, *(f"{n}, mirrored" for n in names)]
            extra["transfer"] = {"EfficientNet-Lite0": load_model("efficientnet_lite0")}
        if family == "represent":  # a labelled set: random crops of each photo and texture
            from seethrough.data.photos import photo_crops

            crops, sources, extra["class_names"] = photo_crops(6 if self.quick else 16)
            extra["dataset"] = [{"image": c, "label": int(s)} for c, s in zip(crops, sources)]
        return SectionData(images, names, concepts=concepts, extra=extra)

    def conceptworld(self, family: str, *, bias: float = 0.0) -> SectionData:
        count = {"attribution": 16 if self.quick else 32, "shortcut": 16 if self.quick else 32,
                 "sanity": 8 if self.quick else 16,
                 "adversarial": 16 if self.quick else 64,
                 "featureviz": 64 if self.quick else 200,
                 "circuits": 32 if self.quick else 128}.get(family, 8)
        batch = self.world(count, bias=bias).batch()
        concepts = {"dissection": lambda: self.world(120 if self.quick else 400),
                    "universality": lambda: self.world(120 if self.quick else 400),
                    "featureviz": lambda: self.world(count)}.get(
            family, lambda: self.world(16, bias=bias))()
        names = [self.conceptnet.class_names[int(c)] for c in batch["label"]]
        extra = {"cue_masks": batch["cue_mask"]}
        if family == "adversarial":  # other models to transfer to; concepts for dissection
            concepts = self.world(200) if not self.quick else None
            extra["transfer"] = {"cheater": self.cheater, "shuffled labels": self.shuffled}
        if family == "circuits" and bias > 0:  # the cue's channels switched off
            extra["cue"] = {"biased": self.world(64 if self.quick else 128, bias=bias).batch(),
                            "unbiased": self.world(128 if self.quick else 256, cue=True).batch(),
                            "without_cue": self.world(128 if self.quick else 256).batch(),
                            "honest": self.conceptnet}
        elif family == "circuits":
            extra["handmade"] = True
        if family == "universality":  # two more seeds, and an ImageNet network
            from seethrough.models import load_model

            extra.update(dataset=self.world(300 if self.quick else 1000), compare={
                "seed 1": load_model("conceptnet_seed1"), "seed 2": load_model("conceptnet_seed2"),
                "MobileNetV2 (ImageNet)": self.mobilenet})
        if family == "sanity":  # data randomization: the same net trained on shuffled labels
            extra["shuffled"] = self.shuffled
        if family == "represent":  # maps of many images; the memorizer's dimension profile
            concepts = self.world(120 if self.quick else 400)
            extra.update(dataset=self.world(300 if self.quick else 1000),
                         compare={"trained on shuffled labels": self.shuffled})
        return SectionData(batch["image"], names, labels=batch["label"], masks=batch["object_mask"],
                           concepts=concepts, extra=extra)


@dataclass(frozen=True)
class Part:
    """One subject of a family's section: a heading, its model and its data."""

    heading: str
    model: Callable[[Defaults], torch.nn.Module]
    data: Callable[[Defaults, str], SectionData]


PHOTOS = Part("MobileNetV2 (ImageNet) on photos", lambda d: d.mobilenet, lambda d, f: d.photos(f))
WORLD = Part("ConceptNet on ConceptWorld", lambda d: d.conceptnet,
             lambda d, f: d.conceptworld(f))
CHEATER = Part("ConceptNet cheater on the biased world", lambda d: d.cheater,
               lambda d, f: d.conceptworld(f, bias=1.0))


GAN = Part("ConceptWorld GAN, with ConceptWorld's segmenter and ConceptNet", lambda d: d.gan,
           lambda d, f: d.gan_data())


#: ConceptNet as the listeners' network; the games draw their own ConceptWorld images
GAMES_PART = Part("ConceptNet's listeners on ConceptWorld", lambda d: d.conceptnet,
                  lambda d, f: SectionData(d.world(8).batch()["image"]))


def _with_scenes(defaults: Defaults, family: str) -> SectionData:
    """ConceptWorld data, and scenes of set object sizes and counts drawn at its size."""
    data = defaults.conceptworld(family)
    data.extra["world_scenes"] = {"size": int(data.images.shape[-1])}
    return data


#: ConceptNet on ConceptWorld, with made-to-order scenes (the findings section)
WORLD_SCENES = Part(WORLD.heading, lambda d: d.conceptnet, _with_scenes)


def _family(function: str) -> Callable:
    module, name = function.split(":")
    return getattr(__import__(module, fromlist=[name]), name)


def _featureviz(model, data, options):
    from seethrough.dissection import dissect
    from seethrough.dissection.section import unit_labels
    from seethrough.featureviz.section import section

    labels = None
    if data.concepts is not None and data.images.shape[-1] < 96:  # ConceptWorld-sized models
        def labels(layer):
            return unit_labels(dissect(model, [layer], data.concepts, cache=False), layer)
    return section(model, data, options, unit_labels=labels)


def _shortcut(defaults: Defaults, options: SectionOptions) -> Section:
    from seethrough.evaluation.section import shortcut_section

    data = defaults.conceptworld("shortcut", bias=1.0)
    models = {"honest": defaults.conceptnet, "cheater": defaults.cheater}
    return shortcut_section(models, data, options)


@dataclass(frozen=True)
class Entry:
    """A section of the demo: its title, the family function, the subjects it runs over."""

    title: str
    function: Callable
    parts: tuple[Part, ...]
    then: Callable[[Defaults, SectionOptions], Section] | None = None


#: key -> entry; the order of the report
SECTIONS: Registry[Entry] = Registry("report section", {
    "models": Entry("Models", _family("seethrough.reporting.basics:model_section"),
                    (PHOTOS, WORLD, CHEATER)),
    "predictions": Entry("Predictions", _family("seethrough.reporting.basics:predictions_section"),
                         (PHOTOS, WORLD)),
    "layers": Entry("Layers", _family("seethrough.reporting.basics:layers_section"), (WORLD, PHOTOS)),
    "filters": Entry("First-layer filters", _family("seethrough.reporting.basics:filters_section"),
                     (PHOTOS, WORLD)),
    "conceptworld": Entry("ConceptWorld", _family("seethrough.reporting.basics:concepts_section"),
                          (WORLD, CHEATER)),
    "attribution": Entry("Attribution", _family("seethrough.evaluation.section:section"),
                         (PHOTOS, WORLD), then=_shortcut),
    "sanity": Entry("Sanity checks", _family("seethrough.evaluation.section:sanity_section"),
                    (WORLD, PHOTOS)),
    "findings": Entry("What extremal perturbations find",
                      _family("seethrough.evaluation.findings_section:section"),
                      (WORLD_SCENES, PHOTOS)),
    "featureviz": Entry("Feature visualization", _featureviz, (WORLD, PHOTOS)),
    "synthesis": Entry("Synthesis and style",
                       _family("seethrough.featureviz.synthesis_section:section"), (PHOTOS,)),
    "dissection": Entry("Network Dissection", _family("seethrough.dissection.section:section"),
                        (WORLD, PHOTOS)),
    "represent": Entry("Representations", _family("seethrough.reporting.build:represent_section"),
                       (WORLD, PHOTOS)),
    "adversarial": Entry("Adversarial examples", _family("seethrough.adversarial.section:section"),
                         (WORLD, PHOTOS)),
    "circuits": Entry("Circuits", _family("seethrough.circuits.section:section"),
                      (WORLD, CHEATER, PHOTOS)),
    "universality": Entry("Universality",
                          _family("seethrough.circuits.section:universality_section"), (WORLD,)),
    "gan": Entry("GANs", _family("seethrough.gan.section:section"), (GAN,)),
    "games": Entry("Reference games", _family("seethrough.games.section:section"), (GAMES_PART,)),
})


def build_section(key: str, defaults: Defaults, options: SectionOptions) -> Section:
    """One entry of ``SECTIONS``: its family's section for every subject, under headings."""
    entry = SECTIONS.get(key)
    body, notes = [], []
    for part in entry.parts:
        made = entry.function(part.model(defaults), part.data(defaults, key), options)
        body.append(f"<h3>{part.heading}</h3>{made.body}")
        notes += [f"{part.heading}: {note}" for note in made.notes]
    if entry.then is not None:
        extra = entry.then(defaults, options)
        body.append(f"<h3>{extra.title}</h3>{extra.body}")
        notes += extra.notes
    return Section(entry.title, "\n".join(body), notes=notes)


def code_fingerprint() -> str:
    """A digest of seethrough's own source files and bundled weights (a few ms to compute)."""
    root = Path(__file__).parent
    digest = hashlib.sha1()
    for path in sorted(root.rglob("*")):
        if path.suffix in (".py", ".json", ".safetensors", ".j2") and path.is_file():
            digest.update(path.relative_to(root).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def run_demo(out_dir: str | Path = "seethrough-report", *, sections: list[str] | None = None,
             quick: bool = False, resume: bool = True, progress: bool | None = None) -> Path:
    """Build every section (or the chosen ones) and write ``OUT/report.html``; return its path."""
    from seethrough.progress import progress_bar

    out_dir = Path(out_dir)
    cache = out_dir / ".sections"
    cache.mkdir(parents=True, exist_ok=True)
    keys = list(sections or SECTIONS.names())
    for key in keys:
        SECTIONS.get(key)  # unknown names fail before any work
    defaults, options = Defaults(quick=quick), SectionOptions(quick=quick)
    code = code_fingerprint()
    built = []
    for key in progress_bar(keys, "report", unit="section", progress=progress):
        cached = cache / f"{key}{'-quick' if quick else ''}.json"
        if resume and cached.is_file():
            saved = json.loads(cached.read_text())
            if saved.pop("code", None) == code:
                built.append(Section(**saved))
                continue
        section = build_section(key, defaults, options)
        write_text_atomic(cached, json.dumps({**section.__dict__, "code": code}))
        built.append(section)
    return write_report(out_dir / "report.html", "seethrough report", built)

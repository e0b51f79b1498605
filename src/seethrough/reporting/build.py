"""``seethrough.report``: from your own model and a folder of photos to one report.

Runs every section that applies to the model and the images (predictions, attribution, the
sanity check, feature visualization, Network Dissection on a concept dataset, the model card,
layers and filters), puts a summary first, and writes ``OUT/report.html`` (self-contained)
with every figure as PNG, every table as CSV and ``report.json`` beside it. Each section is
cached in ``OUT/.sections`` as it finishes, so an interrupted run resumes where it stopped. A
section that does not apply (a layer method on a TorchScript model) is left out with a note.

Example:
    >>> path = report("conceptnet", "photos/", out="report")   # doctest: +SKIP
"""
from __future__ import annotations

import hashlib
import json
import shlex
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from seethrough.atomic import ensure_writable, write_text_atomic
from seethrough.errors import InputError, SeethroughError
from seethrough.progress import progress_bar
from seethrough.sections import Section, SectionData, SectionOptions

#: methods of a quick report (the gradient, path, CAM and perturbation families, one each)
QUICK_METHODS = ["saliency", "integrated_gradients", "gradcam", "occlusion"]
#: ConceptWorld is generated at most this size for dissection (larger models see it upsampled)
CONCEPT_SIZE = 112


def represent_section(model, data: SectionData, options: SectionOptions) -> Section:
    """The representations section, with the polysemantic units when there is a concept
    dataset (``data.concepts``) and diverse renderings of them in full runs."""
    from seethrough.dissection.section import unit_concepts
    from seethrough.featureviz.section import unit_facets
    from seethrough.represent.section import section

    concepts = facets = None
    if data.concepts is not None:
        concepts = unit_concepts(model, data.concepts)
        facets = unit_facets(model, steps=32 if options.quick else 128,
                             size=min(128, data.concepts[0]["image"].shape[-1]))
    return section(model, data, options, compare=data.extra.get("compare"),
                   unit_concepts=concepts, facets=facets)


def _sections() -> dict[str, tuple[str, Callable]]:
    """key -> (title, section function), in the order of the report after the summary."""
    from seethrough.adversarial.section import section as adversarial
    from seethrough.circuits.section import section as circuits
    from seethrough.circuits.section import universality_section as universality
    from seethrough.dissection.section import section as dissection
    from seethrough.evaluation.findings_section import section as findings
    from seethrough.evaluation.section import sanity_section
    from seethrough.evaluation.section import section as attribution
    from seethrough.featureviz.section import section as featureviz
    from seethrough.featureviz.synthesis_section import section as synthesis
    from seethrough.reporting import basics

    return {"predictions": ("Predictions", basics.predictions_section),
            "attribution": ("Attribution", attribution),
            "sanity": ("Sanity check", sanity_section),
            "findings": ("What extremal perturbations find", findings),
            "featureviz": ("Feature visualization", featureviz),
            "synthesis": ("Synthesis and style", synthesis),
            "dissection": ("Network Dissection", dissection),
            "represent": ("Representations", represent_section),
            "adversarial": ("Adversarial examples", adversarial),
            "circuits": ("Circuits", circuits),
            "universality": ("Universality", universality),
            "models": ("Model card", basics.model_section),
            "layers": ("Layers", basics.layers_section),
            "filters": ("First-layer filters", basics.filters_section)}


def _concepts(folder: str | None, size: int, quick: bool):
    if folder is not None:
        from seethrough.data import BrodenDataset

        return BrodenDataset(folder)
    from seethrough.data import ConceptWorld

    return ConceptWorld("val", length=60 if quick else 400, size=min(size, CONCEPT_SIZE))


def _digest(*parts) -> str:
    hasher = hashlib.sha1()
    for part in parts:
        if isinstance(part, torch.Tensor):
            hasher.update(part.detach().cpu().contiguous().numpy().tobytes())
        else:
            hasher.update(repr(part).encode())
    return hasher.hexdigest()[:16]


def _summary_grid(model: nn.Module, data: SectionData) -> str:
    from seethrough.attribution import attribute
    from seethrough.attribution.figures import methods_figure
    from seethrough.viz.html import figure_html

    images = data.images[:4]
    try:
        maps = attribute(model, images, method="gradcam")
    except SeethroughError:
        maps = attribute(model, images, method="saliency")
    figure = methods_figure(images, {maps.method: (maps, 0.0)}, row_titles=data.names[:4])
    return figure_html(figure, f"{maps.method} of the predicted class on the first images; "
                       "red: where the evidence is")


def report(model: str | nn.Module, images: str | Path | Sequence[str | Path], *,
           weights: str | None = None, normalize="default", classes: str | None = None,
           labels: str | None = None, concepts: str | None = None, quick: bool = False,
           out: str | Path = "seethrough-report", sections: Sequence[str] | None = None,
           resume: bool = True, seed: int = 0, progress: bool | None = None,
           size: int | None = None, command: str | None = None) -> Path:
    """Write the report of ``model`` on ``images``; return the path of ``report.html``.

    Args:
        model: a bundled name, ``torchvision:ARCH``, a file saved with ``torch.save(model)`` or
            TorchScript, ``package.module:function``, or an ``nn.Module``.
        images: a folder (searched recursively) or image files.
        weights: a state-dict file for the model; ``normalize``: "imagenet", "none" or
            ``(mean, std)`` (see ``load_model``; "default" = the model's own, none for a module).
        classes: a text file of class names, one per line (as many as the model has outputs).
        labels: a CSV ``file,label`` of true classes (index or name): accuracy and confusions.
        concepts: a Broden-format folder for dissection; default: ConceptWorld.
        quick: a first look: fewer methods, images and steps.
        size: the side in pixels the images are resized to (default: the model's
            ``input_size``, else 224); smaller is faster, for a model that accepts it.
        sections: only these (keys of the report: predictions, attribution, sanity,
            findings, featureviz, synthesis, dissection, represent, adversarial, circuits,
            universality, models, layers, filters); the summary is always made.
        command: the command line that regenerates it (shown under every section).
    """
    from seethrough.data.annotations import read_class_names, read_labels
    from seethrough.data.images import load_images
    from seethrough.models import DEFAULT as DEFAULT_NORMALIZE
    from seethrough.models import load_model
    from seethrough.reporting.html import write_report
    from seethrough.reporting.outputs import write_outputs
    from seethrough.reporting.summary import summary_section

    out = ensure_writable(out)
    available = _sections()
    keys = list(sections or available)
    unknown = [k for k in keys if k not in available]
    if unknown:
        raise InputError(f"unknown report section(s) {', '.join(unknown)}; choose from "
                         f"{', '.join(available)}")
    torch.manual_seed(seed)
    spec = model
    model = load_model(model, weights=weights,
                       normalize=DEFAULT_NORMALIZE if normalize == "default" else normalize)
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 8):
        raise InputError(f"size must be a whole number of pixels, at least 8, not {size!r}")
    size = size or int(getattr(model, "input_size", (3, 224, 224))[-1])
    found = load_images([images] if isinstance(images, (str, Path)) else list(images), size)
    with torch.no_grad():
        outputs = int(model(found.images[:1]).shape[-1])
    if classes is not None:
        model.class_names = read_class_names(classes, outputs)
    truth = read_labels(labels, found.names, getattr(model, "class_names", None)) if labels else None
    data = SectionData(found.images, found.names, labels=truth,
                       concepts=_concepts(concepts, size, quick)
                       if {"dissection", "represent"} & set(keys) else None)
    options = SectionOptions(quick=quick, seed=seed, progress=progress,
                             methods=QUICK_METHODS if quick else None)
    name = spec if isinstance(spec, str) else type(spec).__name__
    command = command or (f"seethrough report {shlex.quote(name)} --images "
                          f"{' '.join(shlex.quote(str(p)) for p in ([images] if isinstance(images, (str, Path)) else images))}"
                          + (" --quick" if quick else "") + f" --size {size} --seed {seed} --out {shlex.quote(str(out))}")
    from seethrough.demo import code_fingerprint

    key = _digest(code_fingerprint(), model.state_dict().keys(), sum(
        float(t.double().sum()) for t in model.state_dict().values()), found.images,
        truth, quick, seed, concepts)
    cache = out / ".sections"
    built: dict[str, Section] = {}
    for section_key in progress_bar(keys, "report", unit="section", progress=progress):
        cached = cache / f"{section_key}.json"
        if resume and cached.is_file():
            saved = json.loads(cached.read_text())
            if saved.pop("key", None) == key:
                built[section_key] = Section(**saved)
                continue
        title, function = available[section_key]
        torch.manual_seed(seed)
        start = time.perf_counter()
        try:
            made = function(model, data, options)
            made.title = title
            made.anchor = ""
            made.__post_init__()
        except SeethroughError as error:
            made = Section(title, f"<p class=\"note\">Left out: {error}</p>")
        made.facts["seconds"] = round(time.perf_counter() - start, 2)
        made.notes.append(f"Regenerate: {command}")
        write_text_atomic(cached, json.dumps({**made.__dict__, "key": key}, default=str))
        built[section_key] = made
    normalization = getattr(model, "card", {}).get("normalize", "its own")
    if isinstance(normalization, dict):
        normalization = ", ".join(f"{k} {tuple(round(v, 3) for v in values)}"
                                  for k, values in normalization.items())
    model_line = (f"{name}: {sum(p.numel() for p in model.parameters()):,} parameters, input "
                  f"{'x'.join(map(str, found.images.shape[1:]))}, "
                  f"{outputs} outputs, normalization {normalization}")
    data_line = found.describe()
    summary = summary_section(model, data, built, model_line=model_line, data_line=data_line,
                              grid=_summary_grid(model, data))
    ordered = [summary, *built.values()]
    settings = {"model": name, "images": len(found.images), "size": size, "skipped": found.skipped,
                "quick": quick, "seed": seed, "command": command, "concepts": concepts or "ConceptWorld"}
    write_outputs(out, ordered, settings)
    return write_report(out / "report.html", f"seethrough report: {name}", ordered,
                        beside="figures/ (PNG), tables/ (CSV) and report.json")

"""`seethrough circuits MODEL ...` and `seethrough compare MODEL_A MODEL_B ...`.

``circuits``: the weights between units and what editing them does (``seethrough.circuits``):
circuit figures of a deep layer's units (or ``--layer L --unit U``), the decision channels of the
last stage switched off beside random ones, and with ``--cue`` (a cheater) the shortcut cue's
channels switched off where the cue lies. ``compare``: linear CKA between every pair of stages
of two models and unit matching at the last stage. Each writes one HTML page, PNG figures, CSV
tables and report.json.

Example:
    $ seethrough circuits conceptnet --conceptworld 64 --out circuits
    $ seethrough circuits conceptnet_cheater --conceptworld 64 --cue --out cue
    $ seethrough circuits conceptnet --conceptworld 8 --layer features.block4 --unit 3 --out one
    $ seethrough compare conceptnet conceptnet_seed1 --conceptworld 1000 --out compare
"""
from __future__ import annotations

import argparse

from seethrough.cli.engine_args import add_engine_arguments, engine_from


def register(sub: argparse._SubParsersAction) -> None:
    circuits = sub.add_parser(
        "circuits", help="the weights between units, and the effect of editing them",
        description="Circuit figures (a unit's strongest inputs from the layer before, with "
        "their feature visualizations and spatial weight maps), the last stage's decision "
        "channels switched off beside random ones, and with --cue the shortcut cue's "
        "channels switched off where the cue lies. Writes circuits.html, PNG figures, CSV "
        "tables and report.json to --out.")
    _data_arguments(circuits)
    circuits.add_argument("model", help="model name, e.g. conceptnet, torchvision:ARCH, a file")
    circuits.add_argument("images", nargs="*", help="image files and folders")
    circuits.add_argument("--weights", help="local state-dict file for the model")
    circuits.add_argument("--layer", help="draw one unit's circuit: its layer (with --unit)")
    circuits.add_argument("--unit", type=int, help="the unit (channel) of --layer")
    circuits.add_argument("--inputs-layer", help="with --unit: inputs from this earlier layer "
                          "(expanded weights); default: the layer before")
    circuits.add_argument("--cue", action="store_true", help="ConceptWorld's shortcut cue: find "
                          "and switch off the channels that carry it (for conceptnet_cheater)")
    circuits.set_defaults(run=run_circuits)
    compare = sub.add_parser(
        "compare", help="how alike two models' layers are: CKA and unit matching",
        description="Linear CKA (Kornblith et al. 2019) between every pair of stages of two "
        "models over the same images, streamed in one pass, and unit matching by activation "
        "correlation at the last stage when the architectures agree (Li et al. 2015). Writes "
        "compare.html, PNG figures, CSV tables and report.json to --out.")
    _data_arguments(compare)
    compare.add_argument("model", help="the first model")
    compare.add_argument("other", help="the second model")
    compare.add_argument("images", nargs="*", help="image files and folders")
    add_engine_arguments(compare)
    compare.set_defaults(run=run_compare)


def _data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--conceptworld", type=int, metavar="N",
                        help="N ConceptWorld images with their classes (instead of images)")
    parser.add_argument("--quick", action="store_true", help="fewer steps and images")
    parser.add_argument("--out", required=True, help="output folder")


def _data(args: argparse.Namespace, size: int):
    from seethrough.errors import InputError
    from seethrough.sections import SectionData

    if bool(args.conceptworld) == bool(args.images):
        raise InputError("give image files or folders, or --conceptworld N (not both)")
    if args.conceptworld:
        from seethrough.data import ConceptWorld

        batch = ConceptWorld("val", length=args.conceptworld, size=size).batch()
        return SectionData(batch["image"], [ConceptWorld.class_names[int(c)]
                                            for c in batch["label"]], labels=batch["label"])
    from seethrough.data.images import load_images

    found = load_images(args.images, size)
    return SectionData(found.images, found.names)


def _write(args, made, name: str, title: str) -> int:
    from seethrough.atomic import ensure_writable
    from seethrough.reporting.html import write_report
    from seethrough.reporting.outputs import write_outputs

    out = ensure_writable(args.out)
    write_outputs(out, [made], {"model": args.model, "quick": args.quick})
    path = write_report(out / f"{name}.html", title, [made],
                        beside="figures/ (PNG), tables/ (CSV), report.json")
    print(f"{name} written to {path.resolve()}")
    return 0


def run_circuits(args: argparse.Namespace) -> int:
    from seethrough.circuits.section import section
    from seethrough.errors import InputError
    from seethrough.models import load_model
    from seethrough.sections import Section, SectionOptions

    if (args.layer is None) != (args.unit is None):
        raise InputError("--layer and --unit go together: the unit whose circuit to draw")
    if args.cue and not args.conceptworld:
        raise InputError("--cue needs --conceptworld N (the cue is ConceptWorld's)")
    model = load_model(args.model, weights=args.weights)
    size = int(getattr(model, "input_size", (3, 224, 224))[-1])
    options = SectionOptions(quick=args.quick)
    if args.unit is not None:
        from seethrough.circuits.figures import circuit_figure
        from seethrough.viz.html import figure_html

        figure = circuit_figure(model, args.layer, args.unit, inputs_layer=args.inputs_layer,
                                steps=32 if args.quick else 128)
        made = Section("Circuits", figure_html(figure, f"{args.layer} unit {args.unit} and its "
                                               "strongest inputs"))
        return _write(args, made, "circuits", f"Circuits: {args.model}")
    data = _data(args, size)
    if args.cue:
        from seethrough.data import ConceptWorld

        count = args.conceptworld
        data.extra["cue"] = {
            "biased": ConceptWorld("val", length=count, size=size, bias=1.0).batch(),
            "unbiased": ConceptWorld("test", length=2 * count, size=size, cue=True).batch(),
            "without_cue": ConceptWorld("test", length=2 * count, size=size).batch()}
    return _write(args, section(model, data, options), "circuits", f"Circuits: {args.model}")


def run_compare(args: argparse.Namespace) -> int:
    from seethrough.circuits.section import universality_section
    from seethrough.models import load_model
    from seethrough.sections import SectionOptions

    model, other = load_model(args.model), load_model(args.other)
    size = int(getattr(model, "input_size", (3, 224, 224))[-1])
    data = _data(args, size)
    data.extra["compare"] = {args.other: other}
    if args.conceptworld:  # dissection labels for the matched units
        from seethrough.data import ConceptWorld

        data.concepts = ConceptWorld("val", length=min(args.conceptworld, 400), size=size)
    with engine_from(args) as engine:
        made = universality_section(model, data, SectionOptions(quick=args.quick, engine=engine))
    return _write(args, made, "compare", f"Compare: {args.model} and {args.other}")

"""`seethrough findings MODEL [IMAGES ...] --out DIR`: what extremal perturbations find.

Fong's four findings measured on your model (``seethrough.evaluation.findings``): is the
foreground sufficient, are large objects recognized by their details, do several objects
add up, does suppressing the background overdrive the network. Writes ``findings.html``, its
figures as PNG, tables as CSV and the numbers in ``report.json``.

Example:
    $ seethrough findings conceptnet --conceptworld 8 --out findings
    $ seethrough findings mobilenet_v2 photos/ --iterations 200 --out findings
"""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "findings",
        help="what extremal perturbations find: foreground sufficiency, large objects, "
        "several objects, background overdrive",
        description="Extremal perturbation (the paper's settings) at areas from 2.5%% to 80%% "
        "of each image: the smallest area that keeps 90%% of the class score and how much of "
        "it lies on the object (with --conceptworld), the same on closer crops or on "
        "ConceptWorld objects of several sizes, the score as 1, 2, 3 instances are preserved "
        "one by one, and how often a preserved image scores above the whole image. Writes "
        "findings.html, PNG figures, CSV tables and report.json to --out.",
    )
    parser.add_argument("model", help="model name, e.g. conceptnet, mobilenet_v2, torchvision:ARCH")
    parser.add_argument("images", nargs="*", help="image files and folders (searched recursively)")
    parser.add_argument("--weights", help="local state-dict file for the model")
    parser.add_argument("--conceptworld", type=int, metavar="N",
                        help="N ConceptWorld images with their object masks, and ConceptWorld "
                        "scenes of set sizes and instance counts (for a model of ConceptWorld's "
                        "shapes, such as conceptnet)")
    parser.add_argument("--iterations", type=int,
                        help="iterations per mask (default: the paper's 800, 100 with --quick); "
                        "fewer run the paper's schedule compressed (larger steps)")
    parser.add_argument("--quick", action="store_true", help="fewer images, scenes and iterations")
    parser.add_argument("--out", required=True, help="output folder")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from seethrough.atomic import ensure_writable
    from seethrough.errors import InputError
    from seethrough.evaluation.findings import PAPER_ITERATIONS, QUICK_ITERATIONS
    from seethrough.evaluation.findings_section import TITLE, section
    from seethrough.models import load_model
    from seethrough.reporting.html import write_report
    from seethrough.reporting.outputs import write_outputs
    from seethrough.sections import SectionData, SectionOptions

    if args.iterations is not None and args.iterations < 1:
        raise InputError("--iterations must be positive")
    if bool(args.conceptworld) == bool(args.images):
        raise InputError("give image files or folders, or --conceptworld N (not both)")
    out = ensure_writable(args.out)
    model = load_model(args.model, weights=args.weights)
    size = int(getattr(model, "input_size", (3, 224, 224))[-1])
    if args.conceptworld:
        from seethrough.data import ConceptWorld

        batch = ConceptWorld("val", length=args.conceptworld, size=size).batch()
        names = [ConceptWorld.class_names[int(c)] for c in batch["label"]]
        data = SectionData(batch["image"], names, labels=batch["label"],
                           masks=batch["object_mask"], extra={"world_scenes": {"size": size}})
    else:
        from seethrough.data.images import load_images

        found = load_images(args.images, size)
        data = SectionData(found.images, found.names)
    iterations = args.iterations or (QUICK_ITERATIONS if args.quick else PAPER_ITERATIONS)
    made = section(model, data, SectionOptions(quick=args.quick), iterations=iterations)
    write_outputs(out, [made], {"model": args.model, "quick": args.quick,
                                "iterations": iterations})
    path = write_report(out / "findings.html", f"{TITLE}: {args.model}", [made],
                        beside="figures/ (PNG), tables/ (CSV), report.json")
    print(f"findings written to {path.resolve()}")
    return 0

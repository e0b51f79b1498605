"""`seethrough report MODEL --images DIR|FILES... --out OUT`: the report of your own model."""
from __future__ import annotations

import argparse
import shlex
import sys

#: the report's section keys (``seethrough.reporting.build``), without importing it
SECTIONS = ["predictions", "attribution", "sanity", "findings", "featureviz", "synthesis",
            "dissection", "represent", "adversarial", "circuits", "universality", "models",
            "layers", "filters"]


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "report",
        help="write the report of your own model on your images",
        description="Run every section that applies to MODEL on your images (predictions, "
        "attribution with scores, the sanity check, feature visualization, Network Dissection "
        "on ConceptWorld or a Broden folder, the model card) and write one self-contained "
        "report.html with a summary first; figures (PNG), tables (CSV) and report.json beside "
        "it. An interrupted run resumes section by section.",
    )
    parser.add_argument("inputs", nargs="*", metavar="MODEL [IMAGES ...]",
                        help="MODEL: a bundled name, torchvision:ARCH, a torch.save(model) or "
                        "TorchScript file, or package.module:function; then, if you like, the "
                        "images (as for --images)")
    parser.add_argument("--images", nargs="+", action="extend", default=[], metavar="DIR_OR_FILE",
                        help="a folder (searched recursively) and/or image files")
    parser.add_argument("--weights", help="a state-dict file (.pth or .safetensors) for MODEL")
    parser.add_argument("--normalize", default="default", metavar="imagenet|none|M,M,M,S,S,S",
                        help="the normalization in front of the network (default: the model's "
                        "own; none for a file or function of yours)")
    parser.add_argument("--size", type=int, metavar="PIXELS", help="resize the images to PIXELS "
                        "square (default: the model's input size, 224 for torchvision models)")
    parser.add_argument("--classes", help="class names, one per line")
    parser.add_argument("--labels", help="true classes: a CSV file,label (index or name)")
    parser.add_argument("--concepts", metavar="BRODEN_DIR", help="a Broden-format folder for "
                        "dissection (default: ConceptWorld)")
    parser.add_argument("--sections", nargs="+", metavar="SECTION", choices=SECTIONS,
                        help=f"only these, of: {' '.join(SECTIONS)}")
    parser.add_argument("--quick", action="store_true", help="a first look: fewer methods and steps")
    parser.add_argument("--fresh", action="store_true", help="recompute every section (no resume)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--out", default="seethrough-report", help="output folder (default: %(default)s)")
    parser.set_defaults(run=run)


def normalization(text: str):
    """``imagenet``, ``none``, ``default`` or six numbers ``M,M,M,S,S,S``."""
    from seethrough.errors import InputError

    if text in ("imagenet", "default"):
        return text
    if text == "none":
        return None
    try:
        numbers = [float(v) for v in text.split(",")]
    except ValueError:
        numbers = []
    if len(numbers) % 2 or not numbers:
        raise InputError(f"--normalize takes imagenet, none or means then stds (M,M,M,S,S,S), "
                         f"not {text!r}")
    half = len(numbers) // 2
    return numbers[:half], numbers[half:]


def model_and_images(inputs: list[str], images: list[str]) -> tuple[str, list[str]]:
    """MODEL is the first positional; ``--images X... MODEL`` (greedy) also works: then MODEL is
    the one item that is neither a folder nor an image file."""
    from pathlib import Path

    from seethrough.data.images import EXTENSIONS
    from seethrough.errors import InputError

    if inputs:
        return inputs[0], [*inputs[1:], *images]
    others = [item for item in images
              if not Path(item).is_dir() and Path(item).suffix.lower() not in EXTENSIONS]
    if len(others) != 1:
        raise InputError("give MODEL first: seethrough report MODEL --images DIR_OR_FILES --out OUT")
    return others[0], [item for item in images if item != others[0]]


def run(args: argparse.Namespace) -> int:
    from seethrough.errors import InputError
    from seethrough.reporting.build import report

    model, images = model_and_images(args.inputs, args.images)
    if not images:
        raise InputError("no images given: add --images DIR_OR_FILES")
    command = "seethrough " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["report"] else None
    path = report(model, images, weights=args.weights,
                  normalize=normalization(args.normalize), classes=args.classes,
                  labels=args.labels, concepts=args.concepts, quick=args.quick, out=args.out, size=args.size,
                  sections=args.sections, resume=not args.fresh, seed=args.seed, command=command)
    print(f"report written to {path.resolve()}")
    return 0

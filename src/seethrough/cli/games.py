"""`seethrough games`: image reference games on ConceptWorld, and what they reveal.

A fixed speaker, the adaptive speaker with its listener embedding (Corona, Alaniz & Akata
2019) and its ablation play with listeners blind to some concept categories, listeners never
met, and listeners that are a network read at a few layers; plus the emergent-language control.
Writes games.html, PNG figures, CSV tables and report.json.

Example:
    $ seethrough games --out games-report
    $ seethrough games --quick --distractors 3 --seed 1 --out games-k3
"""
from __future__ import annotations

import argparse


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "games", help="reference games: a speaker that learns what its listener can see",
        description="Image reference games on ConceptWorld: accuracy against practice rounds "
        "with and without the listener embedding, the attributes each speaker uses with each "
        "listener, a probe of the embedding, network listeners, and an emergent-language "
        "control. Writes games.html, PNG figures, CSV tables and report.json to --out.")
    parser.add_argument("--model", default="conceptnet",
                        help="the network listeners' model, taking 64-px images (default: "
                             "conceptnet)")
    parser.add_argument("--layers", nargs="+",
                        help="the network listeners' layers (default: an early, the middle on "
                             "grayscale images, and the last stage)")
    parser.add_argument("--distractors", type=_positive, default=1,
                        help="distractors per round, K (default 1, as in the paper)")
    parser.add_argument("--length", type=_positive, default=1,
                        help="attribute tokens per message (default 1, as in the paper)")
    parser.add_argument("--quick", action="store_true", help="fewer images, episodes and steps")
    parser.add_argument("--seed", type=int, default=0, help="seed of the games and training")
    parser.add_argument("--out", required=True, help="output folder")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from seethrough.atomic import ensure_writable
    from seethrough.data import ConceptWorld
    from seethrough.games.section import section
    from seethrough.models import load_model
    from seethrough.reporting.html import write_report
    from seethrough.reporting.outputs import write_outputs
    from seethrough.sections import SectionData, SectionOptions

    out = ensure_writable(args.out)
    model = load_model(args.model)
    images = ConceptWorld("val", length=8).batch()["image"]
    data = SectionData(images, extra={"distractors": args.distractors, "length": args.length})
    options = SectionOptions(quick=args.quick, layers=args.layers, seed=args.seed, progress=None)
    made = section(model, data, options)
    settings = {"model": args.model, "quick": args.quick, "seed": args.seed,
                "distractors": args.distractors, "length": args.length}
    write_outputs(out, [made], settings)
    path = write_report(out / "games.html", f"Reference games: {args.model}", [made],
                        beside="figures/ (PNG), tables/ (CSV), report.json")
    print(f"games report written to {path.resolve()}")
    return 0

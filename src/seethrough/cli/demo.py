"""`seethrough demo`: the report on the bundled defaults."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from seethrough.demo import SECTIONS

    parser = sub.add_parser(
        "demo",
        help="write the report on the defaults (MobileNetV2 on photos, ConceptNet on ConceptWorld)",
        description="Run every method on the bundled defaults and write one self-contained "
        "report.html. Finished sections are cached, so an interrupted run resumes.",
    )
    parser.add_argument("--out", default="seethrough-report", help="output folder (default: %(default)s)")
    parser.add_argument("--sections", nargs="+", choices=list(SECTIONS), metavar="SECTION",
                        help=f"only these sections, of: {', '.join(SECTIONS)}")
    parser.add_argument("--quick", action="store_true", help="smaller settings, for a fast look")
    parser.add_argument("--fresh", action="store_true", help="recompute every section (no resume)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from seethrough.atomic import ensure_writable
    from seethrough.demo import run_demo

    ensure_writable(args.out)
    path = run_demo(args.out, sections=args.sections, quick=args.quick, resume=not args.fresh)
    print(f"report written to {path.resolve()}")
    return 0

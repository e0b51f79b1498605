"""`seethrough gan`: the GAN section for the shipped ConceptWorld generator or yours.

Dissection of every layer against the segmenter on generated images, ablation and insertion of
concept units, artifact units, InterFaceGAN boundaries and walks, which layer controls what,
inversion (generated, unseen ConceptWorld and photos), and the latent prior for feature
visualization. Writes gan.html, PNG figures, CSV tables and report.json.

Example:
    $ seethrough gan --out gan-report
    $ seethrough gan --generator gan-trained/conceptworld_gan --quick --out mine
"""
from __future__ import annotations

import argparse

from seethrough.cli.engine_args import add_engine_arguments, engine_from


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "gan", help="dissect, edit, steer and invert a ConceptWorld generator",
        description="The GAN section on a generator of 64-px ConceptWorld images: the shipped "
        "conceptworld_gan (default), one written by `seethrough train-gan` (its path), or any "
        "model taking latents (N, D) with a latent_dim. Writes gan.html, PNG figures, CSV "
        "tables and report.json to --out.")
    parser.add_argument("--generator", default="conceptworld_gan",
                        help="conceptworld_gan (default), a train-gan path, or a model source")
    parser.add_argument("--layers", nargs="+", help="generator layers (default: every block)")
    parser.add_argument("--quick", action="store_true", help="fewer samples and steps")
    parser.add_argument("--seed", type=int, default=0, help="the generated world's seed")
    parser.add_argument("--out", required=True, help="output folder")
    add_engine_arguments(parser)
    parser.set_defaults(run=run)


def load_generator_argument(name: str):
    """The shipped generator, a path written by train-gan, or any model ``load_model`` takes."""
    from pathlib import Path

    from seethrough.models import load_model
    from seethrough.models.generator import load_generator

    if Path(name).with_suffix(".json").is_file():
        return load_generator(name)
    return load_model(name)


def run(args: argparse.Namespace) -> int:
    from seethrough.atomic import ensure_writable
    from seethrough.data import ConceptWorld
    from seethrough.data.photos import sample_photos
    from seethrough.errors import InputError
    from seethrough.gan.section import section
    from seethrough.reporting.html import write_report
    from seethrough.reporting.outputs import write_outputs
    from seethrough.sections import SectionData, SectionOptions

    out = ensure_writable(args.out)
    generator = load_generator_argument(args.generator)
    if not hasattr(generator, "latent_dim"):
        raise InputError(f"{args.generator} is not a generator (it has no latent_dim): give "
                         "conceptworld_gan or a path written by `seethrough train-gan`")
    real = ConceptWorld("val", length=500 if args.quick else 2000).batch()["image"]
    photos, _ = sample_photos(size=64)
    data = SectionData(real, extra={"photos": photos})
    options = SectionOptions(quick=args.quick, layers=args.layers, seed=args.seed, progress=None,
                             engine=engine_from(args))
    made = section(generator, data, options)
    write_outputs(out, [made], {"generator": args.generator, "quick": args.quick})
    path = write_report(out / "gan.html", f"GAN: {args.generator}", [made],
                        beside="figures/ (PNG), tables/ (CSV), report.json")
    print(f"gan report written to {path.resolve()}")
    return 0

"""The games family's costs as ratios of the listener network's own forward pass.

Run: ``OMP_NUM_THREADS=1 python benchmarks/games.py [--threads 1] [--rounds 3]``

On the shipped ConceptNet and ConceptWorld: (a) a network listener's perception of 1,000
images (pooled features at ``features.block5`` and the probes) against ConceptNet's plain
forward of the same images; (b) fitting a network listener's probes on 2,000 images (the
forward included); (c) one round of 128 games with the adaptive speaker (perceptions cached:
tensors only); (d) training the adaptive speaker (200 steps of 128 episodes x 12 rounds, the
quick section's setting) and the emergent pair (400 steps of 256 games). Best of ``--rounds``
interleaved rounds for (a)-(c) (``common.interleaved_best``); one run for the training.
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from datetime import date
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import interleaved_best, markdown_table

from seethrough.atomic import write_text_atomic
from seethrough.games.attributes import image_pool
from seethrough.games.emergent import train_emergent
from seethrough.games.game import play_episodes
from seethrough.games.listeners import (
    TRAINING_POPULATION,
    Listener,
    fit_perceiver,
    perceptions,
)
from seethrough.games.speakers import train_adaptive_speaker
from seethrough.models import load_model

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS / f"games-{date.today().isoformat()}.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model("conceptnet").eval()
    val = image_pool("val", 1000, images=True)
    train = image_pool("train", 2000)
    perceiver = fit_perceiver(model, "features.block5", count=2000)
    listener = Listener(perceiver.name, (), perceiver.name)
    table = perceptions(TRAINING_POPULATION, train)
    speaker, _ = train_adaptive_speaker(table, train.attributes, steps=2, batch=8)

    images = val.images

    def forward():
        with torch.no_grad():
            for start in range(0, 1000, 250):
                model(images[start:start + 250])

    def one_round():
        with torch.no_grad():
            play_episodes(speaker, table, torch.arange(128) % len(table), train.attributes,
                          practice=0, evaluation=1, generator=torch.Generator().manual_seed(0))

    timed = interleaved_best({
        "forward": forward,
        "perception": lambda: perceptions([listener], val, {perceiver.name: perceiver}),
        "round": one_round,
    }, rounds=args.rounds, warmup=1)
    started = time.perf_counter()
    fit_perceiver(model, "features.block5", count=2000, seed=2)
    timed["probes"] = time.perf_counter() - started
    _, training = train_adaptive_speaker(table, train.attributes, steps=200, batch=128)
    timed["speaker"] = training.seconds
    timed["emergent"] = train_emergent(train.attributes, val.attributes, steps=400).seconds
    base = timed["forward"]
    rows = [
        {"task": "network listener's perception of 1,000 images (block5 + probes)",
         "seconds": f"{timed['perception']:.3f}", "ratio": f"{timed['perception'] / base:.2f}"},
        {"task": "fitting a network listener (drawing 2,000 images, their forward, 4 probes)",
         "seconds": f"{timed['probes']:.2f}", "ratio": f"{timed['probes'] / base:.1f}"},
        {"task": "one round of 128 games, adaptive speaker (cached perceptions)",
         "seconds": f"{timed['round'] * 1000:.2f} ms", "ratio": f"{timed['round'] / base:.4f}"},
        {"task": "adaptive speaker training, 200 steps x 128 episodes x 12 rounds",
         "seconds": f"{timed['speaker']:.1f}", "ratio": f"{timed['speaker'] / base:.0f}"},
        {"task": "emergent pair training, 400 steps x 256 games",
         "seconds": f"{timed['emergent']:.1f}", "ratio": f"{timed['emergent'] / base:.0f}"},
    ]
    text = (f"# benchmarks/games.py {' '.join(sys.argv[1:])}, {date.today().isoformat()}\n\n"
            f"{platform.machine()}, {args.threads} thread(s) (OMP_NUM_THREADS={args.threads}), "
            f"torch {torch.__version__}, Python {platform.python_version()}\n\n"
            f"ConceptNet's plain forward of 1,000 ConceptWorld images: {base:.3f} s (the baseline "
            "of every ratio). Best of the rounds for the first and third rows; one run for the "
            "fits and the training. The machine's other core was busy with another job while "
            "this ran, so absolute times are pessimistic and noisy.\n\n"
            + markdown_table(rows, ["task", "seconds", "ratio"]) + "\n")
    write_text_atomic(args.out, text)
    print(text)


if __name__ == "__main__":
    main()

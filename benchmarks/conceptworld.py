"""Print how many ConceptWorld images per second one core generates.

Example:
    $ python benchmarks/conceptworld.py --size 64 --n 2000
"""
from __future__ import annotations

import argparse
import time

from seethrough.data.conceptworld import ConceptWorld, texture_canvases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--bias", type=float, default=0.0)
    args = parser.parse_args()
    world = ConceptWorld("train", length=args.n, size=args.size, bias=args.bias)
    texture_canvases(args.size)  # the one-off per-process cache is not part of the rate
    for name, get in (("numpy", world.generate), ("torch", world.__getitem__)):
        start = time.perf_counter()
        for i in range(args.n):
            get(i)
        rate = args.n / (time.perf_counter() - start)
        print(f"{name:5s} size={args.size} n={args.n}: {rate:.0f} images/s")


if __name__ == "__main__":
    main()

"""Time `seethrough report` on MobileNetV2 (ImageNet) for folders of 100 and 1,000 photos.

The photos are scikit-image's sample photos and textures, cut into many different crops at
random positions, scales and flips (written once as JPEGs into a temporary folder). Prints a
markdown table per size: seconds per section (from the report's own ``report.json``), the total,
and the size of ``report.html``. Targets: 1,000 images in at most 10 minutes on 2 cores, a
report of at most 25 MB.

    python benchmarks/report.py [--sizes 100 1000] [--quick]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import keep_freed_memory  # noqa: E402


def photo_folder(folder: Path, count: int, seed: int = 0) -> Path:
    """``count`` distinct JPEG crops of the sample photos and textures."""
    from PIL import Image

    from seethrough.data.photos import PHOTOS, TEXTURES, sample_photos

    sources, _ = sample_photos([*PHOTOS, *TEXTURES], size=448)
    generator = torch.Generator().manual_seed(seed)
    for index in range(count):
        image = sources[index % len(sources)]
        side = int(torch.randint(224, 449, (1,), generator=generator))
        top, left = (int(torch.randint(0, 449 - side, (1,), generator=generator)) for _ in range(2))
        crop = image[:, top:top + side, left:left + side]
        if index % 2:
            crop = crop.flip(-1)
        array = (crop.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
        Image.fromarray(array).save(folder / f"photo_{index:04d}.jpg", quality=90)
    return folder


def run(count: int, quick: bool) -> str:
    from seethrough import report

    with tempfile.TemporaryDirectory() as root:
        (Path(root) / "photos").mkdir()
        photos = photo_folder(Path(root) / "photos", count)
        start = time.perf_counter()
        path = report("mobilenet_v2", photos, out=Path(root) / "out", quick=quick, progress=False)
        total = time.perf_counter() - start
        document = json.loads((path.parent / "report.json").read_text())
        size = path.stat().st_size / 2**20
    rows = [f"| {s['title']} | {s['facts'].get('seconds', 0):.1f} |" for s in document["sections"]
            if "seconds" in s["facts"]]
    return "\n".join([
        f"### MobileNetV2 on {count} photos{' (quick)' if quick else ''}: {total:.0f} s, "
        f"report.html {size:.1f} MB", "", "| section | seconds |", "|---|---|", *rows,
        f"| summary, writing | {total - sum(s['facts'].get('seconds', 0) for s in document['sections']):.1f} |",
        ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=[100, 1000])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    keep_freed_memory()
    torch.set_num_threads(2)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    for count in args.sizes:
        print(run(count, args.quick), flush=True)


if __name__ == "__main__":
    main()

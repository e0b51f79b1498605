"""Run every benchmark, one process each, and save their tables under benchmarks/results/.

Run: ``python benchmarks/run_all.py [--quick] [--rounds N] [--only attribution,dissection]
[--device cuda]`` (on a GPU only the benchmarks in ``DEVICE_AWARE`` run)
(``make bench`` installs the peers first). Each benchmark prints a markdown table; this script
shows its progress, writes the table to ``benchmarks/results/<name>[-quick]-<date>.md``
(atomically) and prints a summary of which ran. A benchmark that fails is reported and the others
still run. ``--rounds`` is passed to the benchmarks that time interleaved rounds (default:
theirs, 7).
"""
from __future__ import annotations

import argparse
import datetime
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from seethrough.atomic import write_text_atomic

HERE = Path(__file__).parent
#: name -> (script, arguments for --quick)
BENCHMARKS = {
    "attribution": ("attribution.py", ["--quick"]),
    "occlusion": ("occlusion.py", ["--quick"]),
    "ablation_cam": ("ablation_cam.py", ["--quick"]),
    "dissection": ("dissection.py", ["--quick"]),
    "featureviz": ("featureviz.py", ["--steps", "4"]),
    "stylize": ("stylize.py", ["--sizes", "128", "--steps", "4", "--rounds", "1", "--opt-rounds", "1"]),
    "conceptworld": ("conceptworld.py", ["--n", "500"]),
    "represent": ("represent.py", ["--quick"]),
    "circuits": ("circuits.py", ["--quick"]),
    "adversarial": ("adversarial.py", ["--quick"]),
    "gan": ("gan.py", ["--samples", "100", "--rounds", "1", "--steps", "5"]),
    "games": ("games.py", ["--rounds", "1"]),
    "cluster": ("cluster.py", ["--quick"]),
    "report": ("report.py", ["--quick"]),
}
#: the benchmarks that time interleaved rounds (``--rounds``)
ROUNDS = {"attribution", "occlusion", "ablation_cam", "dissection", "featureviz", "stylize",
          "represent", "circuits", "adversarial", "gan", "games", "cluster"}
#: the benchmarks that take ``--device`` (the others time the CPU only)
DEVICE_AWARE = {"attribution"}
#: the benchmarks that also write their own table (``--out``): here, to a scratch file
OWN_OUT = {"gan", "games", "stylize"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="each benchmark's quick settings")
    parser.add_argument("--only", default=",".join(BENCHMARKS),
                        help=f"comma-separated subset of {', '.join(BENCHMARKS)}")
    parser.add_argument("--rounds", type=int,
                        help=f"interleaved rounds for {', '.join(sorted(ROUNDS))}")
    parser.add_argument("--device", default="cpu",
                        help=f"cpu or cuda; on cuda only {', '.join(sorted(DEVICE_AWARE))} run")
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    on_device = args.device != "cpu"
    if on_device:
        skipped = [name for name in chosen if name not in DEVICE_AWARE]
        if skipped:
            print(f"on {args.device}: skipping {', '.join(skipped)} (CPU only)", file=sys.stderr)
        chosen = [name for name in chosen if name in DEVICE_AWARE]
    today = datetime.date.today().isoformat()
    machine = (f"{platform.machine()}, {torch.get_num_threads()} threads available, "
               f"torch {torch.__version__}, Python {platform.python_version()}")
    summary = []
    for name in chosen:
        script, quick_args = BENCHMARKS[name]
        command = [sys.executable, str(HERE / script), *(quick_args if args.quick else [])]
        if args.rounds is not None and name in ROUNDS:
            command += ["--rounds", str(args.rounds)]
        if on_device:
            command += ["--device", args.device]
        if name in OWN_OUT:
            command += ["--out", str(Path(tempfile.gettempdir()) / f"seethrough-bench-{name}.md")]
        print(f"== {name}: {' '.join(command[1:])}", file=sys.stderr, flush=True)
        done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False)
        print(done.stdout)
        if done.returncode:
            summary.append(f"{name}: failed (exit {done.returncode})")
            continue
        suffix = ("-quick" if args.quick else "") + (f"-{args.device}" if on_device else "")
        path = HERE / "results" / f"{name}{suffix}-{today}.md"
        header = f"# benchmarks/{script} {' '.join(command[2:])}, {today}\n\n{machine}\n\n"
        write_text_atomic(path, header + done.stdout)
        summary.append(f"{name}: {path.relative_to(HERE.parent)}")
    print("\n".join(summary), file=sys.stderr)
    return 0 if all("failed" not in line for line in summary) else 1


if __name__ == "__main__":
    sys.exit(main())

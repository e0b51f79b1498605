"""Circuits benchmark: ``circuit_weights`` between two non-adjacent MobileNetV2 blocks and
``cka_matrix`` over every stage pair of two ConceptNets, each against the model's own forward
pass; peak memory of ``cka_matrix`` as the dataset grows.

Weights: all unit pairs of ``features.3`` (24 units) and ``features.5`` (32 units; ``features.4``
lies between, so these are expanded weights) at the model's 224 px probe, against the model's own
forward (and forward + backward to the input) of one batch of as many 224 px images as
``features.5`` has units: ``circuit_weights`` backpropagates one probe image a unit, stopping the
forward at ``features.5``. CKA: ``conceptnet`` against ``conceptnet_seed1`` (same architecture
and data, another seed), 5,000 ConceptWorld images generated once into memory before timing
(generation is not counted), batches of 64, against both models' plain forward over the same
images and batches. Times are the best of interleaved rounds
(``common.interleaved_best``). Peak memory: growth of peak RSS while ``cka_matrix`` streams
1,000 / 2,500 / 5,000 images generated on the fly, each in a fresh process. The tables go to
stdout and to ``benchmarks/results/circuits[-quick]-<date>.md``.

    python benchmarks/circuits.py [--quick] [--rounds 3] [--memory-sizes 1000,2500,5000]
"""
from __future__ import annotations

import argparse
import datetime
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import forward_backward, interleaved_best, markdown_table, peak_memory_in_fresh_process

from seethrough.allocator import keep_freed_memory
from seethrough.atomic import write_text_atomic

HERE = Path(__file__).parent
#: the two MobileNetV2 blocks whose unit pairs ``circuit_weights`` computes
WEIGHT_LAYERS = ("features.3", "features.5")
CKA_IMAGES = 5_000
BATCH = 64
#: the second ConceptNet: the same architecture and data, trained from another seed
SECOND = "conceptnet_seed1"


def weights_speed(rounds: int) -> dict:
    from seethrough.circuits.weights import circuit_weights
    from seethrough.models import load_model

    model = load_model("mobilenet_v2")
    layer_a, layer_b = WEIGHT_LAYERS
    weights = circuit_weights(model, layer_a, layer_b)
    units_b, units_a, h, w = weights.shape
    images = torch.rand(units_b, *model.input_size)
    targets = torch.zeros(units_b, dtype=torch.long)

    def forward():
        with torch.no_grad():
            model(images)

    best = interleaved_best({
        "forward": forward,
        "forward+backward": forward_backward(model, images, targets),
        "circuit_weights": lambda: circuit_weights(model, layer_a, layer_b),
    }, rounds=rounds)
    return {"cell": f"circuit_weights mobilenet_v2 {layer_a} -> {layer_b}",
            "work": f"{units_b}x{units_a} maps of {h}x{w}",
            "reference": f"batch of {units_b} at {model.input_size[-1]} px",
            "forward s": best["forward"], "fwd+bwd s": best["forward+backward"],
            "seethrough s": best["circuit_weights"],
            "x fwd": best["circuit_weights"] / best["forward"],
            "x fwd+bwd": best["circuit_weights"] / best["forward+backward"]}


def cka_speed(count: int, rounds: int) -> dict:
    from seethrough.circuits.cka import cka_matrix
    from seethrough.data import ConceptWorld
    from seethrough.models import load_model
    from seethrough.models.train import generate

    model_a = load_model("conceptnet")
    model_b = load_model(SECOND)
    images, _ = generate(ConceptWorld("val", length=count), progress=False)
    images = images.float() / 255

    def forward():
        with torch.no_grad():
            for start in range(0, len(images), BATCH):
                model_a(images[start:start + BATCH])
                model_b(images[start:start + BATCH])

    def matrix():
        return cka_matrix(model_a, model_b, images, batch_size=BATCH, progress=False)

    pairs = matrix().values.numel()
    best = interleaved_best({"forward": forward, "cka_matrix": matrix}, rounds=rounds)
    return {"cell": f"cka_matrix conceptnet x {SECOND}", "work": f"{pairs} layer pairs",
            "reference": f"both forwards, {count} images", "forward s": best["forward"],
            "seethrough s": best["cka_matrix"], "x fwd": best["cka_matrix"] / best["forward"]}


def peak_memory(count: int) -> float:
    """Growth of peak RSS (MiB) while ``cka_matrix`` compares the two ConceptNets over ``count``
    ConceptWorld images generated on the fly, in a fresh process."""
    return peak_memory_in_fresh_process(
        "from seethrough.circuits.cka import cka_matrix\n"
        "from seethrough.data import ConceptWorld\n"
        "from seethrough.models import load_model\n"
        f"a, b = load_model('conceptnet'), load_model({SECOND!r})\n"
        f"data = ConceptWorld('val', length={count})\n"
        "data[0]",
        f"cka_matrix(a, b, data, batch_size={BATCH}, progress=False)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="a tenth of the images (also in the memory table), one round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--memory-sizes", default="1000,2500,5000",
                        help="comma-separated dataset sizes for the memory table ('' skips)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    keep_freed_memory()
    rounds = 1 if args.quick else args.rounds
    rows = [weights_speed(rounds), cka_speed(CKA_IMAGES // 10 if args.quick else CKA_IMAGES,
                                             rounds)]
    columns = ["cell", "work", "reference", "forward s", "fwd+bwd s", "seethrough s", "x fwd",
               "x fwd+bwd"]
    text = (f"## Circuits speed (2 CPU threads, best of {rounds} interleaved rounds)\n\n"
            + markdown_table(rows, columns) + "\n")
    sizes = [int(n) // (10 if args.quick else 1) for n in args.memory_sizes.split(",") if n.strip()]
    memory = [{"images": n, "peak MiB": peak_memory(n)} for n in sizes]
    if memory:
        text += ("\n## Peak memory of cka_matrix (two ConceptNets, every stage pair, batches of "
                 f"{BATCH})\n\n" + markdown_table(memory, ["images", "peak MiB"]) + "\n")
    print(text)
    today = datetime.date.today().isoformat()
    machine = (f"{platform.machine()}, {torch.get_num_threads()} threads, torch "
               f"{torch.__version__}, Python {platform.python_version()}")
    path = HERE / "results" / f"circuits{'-quick' if args.quick else ''}-{today}.md"
    command = " ".join(["benchmarks/circuits.py", *sys.argv[1:]])
    write_text_atomic(path, f"# {command}, {today}\n\n{machine}\n\n{text}")
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()

"""Adversarial attacks benchmark: each attack's time against the model's own forward + backward
pass times the passes it needs, and side by side with torchattacks 3.5.1 at the same settings.

ConceptNet on 256 ConceptWorld images (64 px) and MobileNetV2 on 16 photo crops (224 px), each
in one batch. Every attack is untargeted, away from the model's clean prediction, at L∞ 8/255:
FGSM; BIM, PGD (random start off) and MI-FGSM with 10 steps of 2/255 (torchattacks' defaults);
DeepFool with 50 steps, overshoot 0.02, over every class, on the first 8 images
(ConceptNet only: torchattacks differentiates every class of every image one at a time, 50x
seethrough's time on ConceptNet's 8 classes, hours for an ImageNet model's 1000); C&W L2 with c = 1,
kappa = 0, lr 0.01 and 50 steps, no binary search, and early abort as each library does it
(a check every tenth of the steps: torchattacks stops when the loss rose, seethrough when it
fell by less than 0.01 %, the authors' rule). Timed as the best of
interleaved rounds (``common.interleaved_best``): the reference ``fwd+bwd`` (one forward and
one backward to the input, parameters frozen), seethrough, and torchattacks plus one forward
of its adversarial images (seethrough returns predictions and success; torchattacks returns
images only, so that forward is what it takes to know whether the attack worked).

Columns: ``x fwd+bwd`` is the attack's time over (fwd+bwd x passes), with passes = 1 for FGSM,
the steps for the iterative attacks, and the steps taken for DeepFool; ``x torchattacks`` is
seethrough's time over torchattacks'; ``forwards`` count each library's batched
forward passes, and ``x torchattacks per forward`` compares the time per forward pass (the
two C&W early-abort rules stop after different numbers of steps). The run asserts that FGSM, BIM and PGD (random start off)
give torchattacks' images to 1e-6 and that the gradient-sign attacks' success rates are the
same; DeepFool's and C&W's are reported (their stopping and keeping rules differ).

    python benchmarks/adversarial.py [--quick] [--rounds 3] [--json rows.json]
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import forward_backward, interleaved_best, markdown_table  # noqa: E402

from seethrough.allocator import keep_freed_memory  # noqa: E402

EPS, ALPHA, STEPS = 8 / 255, 2 / 255, 10
#: model -> images (full run; --quick: a quarter)
MODELS = {"conceptnet": 256, "mobilenet_v2": 16}
#: attacks whose images must equal torchattacks' (random start off)
EXACT = ("fgsm", "bim", "pgd")
#: attacks whose success rate must equal torchattacks'
SAME_SUCCESS = (*EXACT, "mifgsm")
#: most images DeepFool runs on (torchattacks loops over images and classes)
DEEPFOOL_IMAGES = 8


def load_images(name: str, count: int) -> torch.Tensor:
    if name == "conceptnet":
        from seethrough.data import ConceptWorld

        return ConceptWorld("val", length=count).batch()["image"]
    from seethrough.data.photos import photo_crops

    images, _, _ = photo_crops(-(-count // 7), size=224)
    return images[:count].contiguous()


def settings(quick: bool) -> dict[str, tuple[dict, object]]:
    """attack -> (seethrough options, torchattacks constructor taking the model)."""
    import torchattacks

    cw_steps = 10 if quick else 50
    return {
        "fgsm": ({"eps": EPS}, lambda m: torchattacks.FGSM(m, eps=EPS)),
        "bim": ({"eps": EPS, "alpha": ALPHA, "steps": STEPS},
                lambda m: torchattacks.BIM(m, eps=EPS, alpha=ALPHA, steps=STEPS)),
        "pgd": ({"eps": EPS, "alpha": ALPHA, "steps": STEPS, "random_start": False},
                lambda m: torchattacks.PGD(m, eps=EPS, alpha=ALPHA, steps=STEPS,
                                           random_start=False)),
        "mifgsm": ({"eps": EPS, "alpha": ALPHA, "steps": STEPS, "decay": 1.0},
                   lambda m: torchattacks.MIFGSM(m, eps=EPS, alpha=ALPHA, steps=STEPS,
                                                 decay=1.0)),
        "deepfool": ({"steps": 50, "overshoot": 0.02, "candidates": None},
                     lambda m: torchattacks.DeepFool(m, steps=50, overshoot=0.02)),
        "cw_l2": ({"c": 1.0, "kappa": 0.0, "lr": 0.01, "steps": cw_steps, "binary_steps": 1,
                   "abort_early": True},
                  lambda m: torchattacks.CW(m, c=1.0, kappa=0.0, steps=cw_steps, lr=0.01)),
    }


@contextmanager
def counted(model: torch.nn.Module) -> Iterator[list[int]]:
    """``[forward calls of model]`` made inside the block (each batched pass counts once)."""
    calls = [0]

    def count(module, args):
        calls[0] += 1

    handle = model.register_forward_pre_hook(count)
    try:
        yield calls
    finally:
        handle.remove()


def passes(method: str, options: dict, result) -> int:
    """Forward + backward passes the attack is measured against."""
    if method == "fgsm":
        return 1
    if method == "deepfool":
        return max(1, int(result.steps.max()))
    return options["steps"]


def run_model(name: str, count: int, rounds: int, quick: bool) -> list[dict]:
    from seethrough.adversarial import attack
    from seethrough.models import load_model

    model = load_model(name).eval()
    images = load_images(name, count)
    with torch.no_grad():
        labels = model(images).argmax(1)
    classes = int(model(images[:1]).shape[1])
    reference = forward_backward(model, images, labels)  # freezes the parameters for everyone
    rows = []
    for method, (options, make) in settings(quick).items():
        options, x, y, fb = dict(options), images, labels, reference
        if method == "deepfool":
            if classes > 100:  # torchattacks' DeepFool differentiates every class
                continue
            options["candidates"] = classes
            x, y = images[:DEEPFOOL_IMAGES], labels[:DEEPFOOL_IMAGES]
            fb = forward_backward(model, x, y)
        peer = make(model)

        def ours(options=options, method=method, x=x, y=y):
            return attack(model, x, method=method, labels=y, batch_size=len(x), **options)

        def theirs(peer=peer, x=x, y=y):
            adversarial = peer(x, y)
            with torch.no_grad():
                return adversarial, model(adversarial).argmax(1)

        with counted(model) as calls:
            result = ours()
        ours_calls = calls[0]
        with counted(model) as calls:
            adversarial, predicted = theirs()
        theirs_calls = calls[0]
        difference = float((result.images - adversarial).abs().max())
        success_theirs = float((predicted != y).float().mean())
        if method in EXACT:
            assert difference <= 1e-6, (name, method, difference)
        if method in SAME_SUCCESS:
            assert result.success_rate == success_theirs, \
                (name, method, result.success_rate, success_theirs)
        best = interleaved_best({"fwd+bwd": fb, "seethrough": ours, "torchattacks": theirs},
                                rounds=rounds)
        count_passes = passes(method, options, result)
        rows.append({
            "model": name, "images": len(x), "attack": method, "passes": count_passes,
            "forwards": ours_calls, "torchattacks forwards": theirs_calls,
            "fwd+bwd s": best["fwd+bwd"], "seethrough s": best["seethrough"],
            "torchattacks s": best["torchattacks"],
            "x fwd+bwd": best["seethrough"] / (best["fwd+bwd"] * count_passes),
            "torchattacks x fwd+bwd": best["torchattacks"] / (best["fwd+bwd"] * count_passes),
            "x torchattacks": best["seethrough"] / best["torchattacks"],
            "x torchattacks per forward": (best["seethrough"] / ours_calls)
            / (best["torchattacks"] / theirs_calls),
            "success": result.success_rate, "torchattacks success": success_theirs,
            "max |difference|": difference,
        })
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="a quarter of the images, 10 C&W steps")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    torch.set_num_threads(2)
    keep_freed_memory()
    rows = [row for name, count in MODELS.items()
            for row in run_model(name, max(2, count // 4) if args.quick else count, args.rounds,
                                 args.quick)]
    print(f"## Adversarial attacks (2 CPU threads, best of {args.rounds} interleaved rounds)\n")
    print(markdown_table(rows, list(rows[0])))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

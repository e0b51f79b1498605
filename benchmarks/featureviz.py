"""Time per feature-visualization step against the model's own forward+backward, and Lucent.

Run: ``python benchmarks/featureviz.py [--threads 2] [--steps 8] [--rounds 7] [--batch 8]
[--size 224]``

Cases on the real ImageNet MobileNetV2, at native size (no upsampling), one unit per batch item:
a channel of ``features.10`` (the forward stops there) and a class logit per item (full network).
Floors: one forward+backward of the whole model on the same batch at the size the model sees,
with gradients to the input only (what a visualization needs), on the images as given
(``x plain fwd+bwd``) and channels-last (``x channels-last fwd+bwd``, the fastest floor of the
model: seethrough feeds the model channels-last, so a ratio below 1 against the plain floor can
hide overhead that the channels-last column shows). Two more plain references: also to the
weights (what a plain ``loss.backward()`` does), and at the parameterization's size.
Lucent (``make bench`` installs it; by hand:
``pip install kornia decorator && pip install --no-deps torch-lucent``) runs the same objective,
parameterization (Fourier, decorrelated), Lucid's standard transforms and Adam 0.05 (kornia's
two moved functions are aliased back for Lucent, which pins kornia<=0.4.1); its time per step
is the difference of two runs divided by the step difference, so its set-up is not counted.

Every variant (floors, references, seethrough with and without the redirected ReLU, Lucent's
two runs) is timed in the same interleaved rounds (``--rounds``, ``common.interleaved_best``):
each round runs each variant once in turn, ``--steps`` calls (steps) for the per-call variants,
and each variant's time is its best round, so every ratio compares timings taken at the same
moments. seethrough's renderers keep their state across rounds and hold their hooks only while
their own steps run (entering and leaving them is timed with the steps: well under 1 %).
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import interleaved_best, markdown_table

#: the floors: forward+backward to the input on the images as given and channels-last
FLOORS = {"plain": torch.contiguous_format, "channels-last": torch.channels_last}


def forward_backward(model, batch: int, size: int, weights: bool, steps: int,
                     memory_format: torch.memory_format = torch.contiguous_format,
                     ) -> Callable[[], None]:
    """``steps`` forward+backward calls of ``model`` on one random batch (gradients to the input,
    and to the weights if ``weights``); the parameters' flags are put back after each block."""
    x = torch.rand(batch, 3, size, size).contiguous(memory_format=memory_format).requires_grad_()

    def run():
        flags = [p.requires_grad for p in model.parameters()]
        model.requires_grad_(weights)
        try:
            for _ in range(steps):
                model.zero_grad(set_to_none=True)
                x.grad = None
                model(x).logsumexp(1).sum().backward()
        finally:
            for p, flag in zip(model.parameters(), flags):
                p.requires_grad_(flag)

    return run


def seethrough_steps(model, objective, batch: int, size: int, steps: int,
                     redirect: int) -> Callable[[], None]:
    """``steps`` steps of one ``Renderer`` that lives across calls, its hooks held only during
    each call's steps (so the other variants run on the bare model)."""
    from seethrough.featureviz.render import Renderer

    renderer = Renderer(model, objective, size=size, batch=batch, redirect_relu_steps=redirect)

    def run():
        with renderer:
            for _ in range(steps):
                renderer.step()

    return run


def lucent_run(model, layer: str | None, units: list[int],
               size: int) -> tuple[Callable[[int], None] | None, str]:
    """A function running Lucent's ``render_vis`` for ``n`` steps, or None and why not."""
    try:
        import kornia
        from lucent.optvis import objectives, param, render, transform
    except Exception as error:  # noqa: BLE001 - report any import failure as the reason
        return None, f"Lucent not importable: {type(error).__name__}: {error}"
    # Lucent pins kornia<=0.4.1, which no longer installs with current torch; newer kornia keeps
    # the same two functions under kornia.geometry.transform only
    for name in ("get_rotation_matrix2d", "warp_affine"):
        if not hasattr(kornia, name):
            setattr(kornia, name, getattr(kornia.geometry.transform, name))
    # Lucent names layers with "_" for "."; its channel() indexes [batch, n] and takes the mean,
    # which for (N, classes) logits read through an Identity named "labels" is the logit
    name = "labels" if layer is None else layer.replace(".", "_")
    objective = sum(objectives.channel(name, u, batch=i) for i, u in enumerate(units))

    class Logits(torch.nn.Module):  # Lucent reads the output through a module named "labels"
        def __init__(self, inner):
            super().__init__()
            self.inner = inner
            self.labels = torch.nn.Identity()

        def forward(self, x):
            return self.labels(self.inner(x))

    target = Logits(model) if layer is None else model
    # Lucent's render_vis hooks every module and never removes the hooks: they would pile up on
    # the model shared with the other variants, so each run's hooks are closed after it
    if not hasattr(render.ModuleHook, "opened"):
        class ModuleHook(render.ModuleHook):
            opened: ClassVar[list] = []

            def __init__(self, module):
                super().__init__(module)
                self.opened.append(self)

        render.ModuleHook = ModuleHook

    def run(n: int) -> None:
        try:
            render.render_vis(target, objective, lambda: param.image(size, batch=len(units)),
                              transforms=transform.standard_transforms, thresholds=(n,),
                              preprocess=False, progress=False, show_image=False)
        finally:
            while render.ModuleHook.opened:
                render.ModuleHook.opened.pop().close()

    return run, ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per variant per round")
    parser.add_argument("--rounds", type=int, default=7,
                        help="interleaved rounds; each variant's best round counts")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    if args.rounds < 1 or args.steps < 1:
        parser.error("--rounds and --steps must be at least 1")
    torch.set_num_threads(args.threads)
    from seethrough.allocator import keep_freed_memory

    keep_freed_memory()  # as the seethrough command does; applies to Lucent alike
    from seethrough.featureviz import objectives as obj
    from seethrough.featureviz.transforms import Transforms
    from seethrough.models import load_model

    model = load_model("mobilenet_v2").eval()
    units = list(range(args.batch))
    seen = Transforms.preset("standard").output_size(args.size, args.size)[0]
    steps = args.steps
    # variant -> function running it for `steps` calls, or (Lucent) for `steps` more steps
    variants = {floor: forward_backward(model, args.batch, seen, False, steps, layout)
                for floor, layout in FLOORS.items()}
    variants["+weights"] = forward_backward(model, args.batch, seen, True, steps)
    variants["native"] = forward_backward(model, args.batch, args.size, False, steps)
    warm = [forward_backward(model, args.batch, size, weights, 1, layout)
            for size, weights, layout in ((seen, False, torch.contiguous_format),
                                          (seen, False, torch.channels_last),
                                          (seen, True, torch.contiguous_format),
                                          (args.size, False, torch.contiguous_format))]
    cases = {}
    for label, layer, objective in (
        ("channel features.10 (one per item)", "net.features.10", obj.channel("features.10", units)),
        ("class logit (one per item)", None, obj.class_logit(units)),
    ):
        for kind, redirect in (("ours", 0), ("redirected", 10 ** 9)):
            variants[label, kind] = seethrough_steps(model, objective, args.batch, args.size,
                                                     steps, redirect)
            warm.append(seethrough_steps(model, objective, args.batch, args.size, 1, redirect))
        lucent, why = lucent_run(model, layer, units, args.size)
        cases[label] = why
        if lucent is not None:
            variants[label, "lucent short"] = lambda run=lucent: run(2)
            variants[label, "lucent long"] = lambda run=lucent: run(2 + steps)
            warm.append(lambda run=lucent: run(1))
    for function in warm:  # oneDNN picks kernels per shape and layout; Lucent's first run
        function()
    failures: dict = {}
    best = interleaved_best(variants, args.rounds, failures=failures)
    for key in ("plain", "channels-last", "+weights", "native"):
        if key in failures:
            raise failures[key]
    per_call = {key: seconds / steps for key, seconds in best.items()}

    def ratios(seconds: float, prefix: str = "") -> dict:
        return {f"{prefix}x {floor} fwd+bwd": seconds / per_call[floor] for floor in FLOORS}

    rows = []
    for label, why in cases.items():
        row = {"objective": label}
        for kind, prefix in (("ours", ""), ("redirected", "redirected ReLU ")):
            if (label, kind) in failures:
                row["note"] = f"seethrough failed: {failures[label, kind]}"[:80]
                continue
            if kind == "ours":
                row["seethrough ms/step"] = f"{per_call[label, kind] * 1e3:.0f}"
                row.update(ratios(per_call[label, kind]))
                row["x plain fwd+bwd (+weights)"] = per_call[label, kind] / per_call["+weights"]
                row[f"x plain fwd+bwd at {args.size}px"] = (per_call[label, kind]
                                                            / per_call["native"])
            else:
                row.update(ratios(per_call[label, kind], prefix))
        failed = [failures[label, k] for k in ("lucent short", "lucent long")
                  if (label, k) in failures]
        if why or failed:
            row["Lucent ms/step"] = why or f"Lucent failed: {failed[0]}"[:80]
        else:
            lucent = (best[label, "lucent long"] - best[label, "lucent short"]) / steps
            row["Lucent ms/step"] = f"{lucent * 1e3:.0f}"
            row.update(ratios(lucent, "Lucent "))
        rows.append(row)

    print(f"\nMobileNetV2, batch {args.batch}, {args.size}px parameterization "
          f"(model sees {seen}px), {args.threads} threads, {steps} timed steps per round, "
          f"best of {args.rounds} interleaved rounds\n")
    print(f"forward+backward to the input: {per_call['plain'] * 1e3:.0f} ms plain, "
          f"{per_call['channels-last'] * 1e3:.0f} ms channels-last at {seen}px, "
          f"{per_call['native'] * 1e3:.0f} ms plain at {args.size}px; also to the weights: "
          f"{per_call['+weights'] * 1e3:.0f} ms plain at {seen}px\n")
    floors = [f"x {floor} fwd+bwd" for floor in FLOORS]
    columns = ["objective", "seethrough ms/step", *floors, "x plain fwd+bwd (+weights)",
               f"x plain fwd+bwd at {args.size}px", *(f"redirected ReLU {c}" for c in floors),
               "Lucent ms/step", *(f"Lucent {c}" for c in floors), "note"]
    if not any("note" in row for row in rows):
        columns.remove("note")
    print(markdown_table(rows, columns))


if __name__ == "__main__":
    main()

"""Time per feature-visualization step against the model's own forward+backward, and Lucent.

Run: ``python benchmarks/featureviz.py [--threads 2] [--steps 8] [--batch 8] [--size 224]``

Cases on the real ImageNet MobileNetV2, at native size (no upsampling), one unit per batch item:
a channel of ``features.10`` (the forward stops there) and a class logit per item (full network).
Baselines: one forward+backward of the whole model on the same batch at the size the model sees,
(a) with gradients to the input only (what a visualization needs) and (b) also to the weights
(what a plain ``loss.backward()`` does). Lucent (``make bench`` installs it; by hand:
``pip install kornia decorator && pip install --no-deps torch-lucent``) runs the same objective, parameterization (Fourier, decorrelated), Lucid's
standard transforms and Adam 0.05 (kornia's two moved functions are aliased back for Lucent,
which pins kornia<=0.4.1); its time per step is the difference of two runs divided by the
step difference, so its set-up is not counted.
"""
from __future__ import annotations

import argparse
import time

import torch


def per_call(function, repeats: int) -> float:
    function()  # warm-up (oneDNN picks kernels per shape)
    start = time.perf_counter()
    for _ in range(repeats):
        function()
    return (time.perf_counter() - start) / repeats


def forward_backward(model, batch: int, size: int, weights: bool, repeats: int) -> float:
    x = torch.rand(batch, 3, size, size, requires_grad=True)
    flags = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(weights)

    def run():
        model.zero_grad(set_to_none=True)
        x.grad = None
        model(x).logsumexp(1).sum().backward()

    try:
        return per_call(run, repeats)
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)


def seethrough_step(model, objective, batch: int, size: int, steps: int, redirect: int) -> float:
    from seethrough.featureviz.render import Renderer

    with Renderer(model, objective, size=size, batch=batch, redirect_relu_steps=redirect) as renderer:
        return per_call(renderer.step, steps)


def lucent_step(model, layer: str | None, units: list[int], size: int, steps: int) -> tuple[float | None, str]:
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

    def run(n):
        start = time.perf_counter()
        render.render_vis(target, objective, lambda: param.image(size, batch=len(units)),
                          transforms=transform.standard_transforms, thresholds=(n,), preprocess=False,
                          progress=False, show_image=False)
        return time.perf_counter() - start

    run(1)  # warm-up
    short, long = run(2), run(2 + steps)
    return (long - short) / steps, ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from seethrough.allocator import keep_freed_memory

    keep_freed_memory()  # as the seethrough command does; applies to Lucent alike
    from seethrough.featureviz import objectives as obj
    from seethrough.featureviz.transforms import Transforms
    from seethrough.models import load_model

    model = load_model("mobilenet_v2").eval()
    units = list(range(args.batch))
    seen = Transforms.preset("standard").output_size(args.size, args.size)[0]
    fb_input = forward_backward(model, args.batch, seen, False, args.steps)
    fb_weights = forward_backward(model, args.batch, seen, True, args.steps)
    fb_native = forward_backward(model, args.batch, args.size, False, args.steps)
    rows = []
    for label, layer, objective in (
        ("channel features.10 (one per item)", "net.features.10", obj.channel("features.10", units)),
        ("class logit (one per item)", None, obj.class_logit(units)),
    ):
        ours = seethrough_step(model, objective, args.batch, args.size, args.steps, redirect=0)
        redirected = seethrough_step(model, objective, args.batch, args.size, args.steps,
                                     redirect=10 ** 9)
        theirs, why = lucent_step(model, layer, units, args.size, args.steps)
        rows.append((label, ours, redirected, theirs, why))

    print(f"\nMobileNetV2, batch {args.batch}, {args.size}px parameterization (model sees {seen}px), "
          f"{args.threads} threads, {args.steps} timed steps\n")
    print(f"forward+backward to the input: {fb_input * 1e3:.0f} ms at {seen}px, {fb_native * 1e3:.0f} ms at "
          f"{args.size}px; also to the weights: {fb_weights * 1e3:.0f} ms at {seen}px\n")
    print("| objective | seethrough ms/step | ÷ fwd+bwd (input) | ÷ fwd+bwd (+weights) | "
          f"÷ fwd+bwd at {args.size}px | with redirected ReLU ÷ fwd+bwd | Lucent ms/step | "
          "Lucent ÷ fwd+bwd (input) |")
    print("|---|---|---|---|---|---|---|---|")
    for label, ours, redirected, theirs, why in rows:
        lucent = f"{theirs * 1e3:.0f} | {theirs / fb_input:.2f}×" if theirs else f"— | {why}"
        print(f"| {label} | {ours * 1e3:.0f} | {ours / fb_input:.2f}× | {ours / fb_weights:.2f}× | "
              f"{ours / fb_native:.2f}× | "
              f"{redirected / fb_input:.2f}× | {lucent} |")


if __name__ == "__main__":
    main()

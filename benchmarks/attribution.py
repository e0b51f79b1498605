"""Attribution speed and memory: each method's time as a multiple of the model's own
forward + backward on the same batch, its peak extra memory, and the same method in Captum and
pytorch-grad-cam where installed (``pip install captum grad-cam``).

Run: ``python benchmarks/attribution.py [--quick] [--models conceptnet,mobilenet_v2,resnet18]``

Settings are the same for every library: batch 8 (224 px; ConceptNet at 64 px), class targets
fixed beforehand, the same layer for the CAMs, the same number of steps / samples / windows.
Methods that run thousands of forward passes per image (Score-CAM, RISE, the optimised masks)
are timed on 1 image (occlusion too: 225 windows at 224 px) and compared with forward +
backward on 1 image. Targets: single-pass
gradient methods within 1.1x of forward + backward; no method slower than a peer's equivalent;
integrated gradients' memory set by ``batch_size``, not by ``n_steps``.

The reference is the model's plain forward + backward on the batch as given (contiguous).
seethrough feeds the model channels-last images (``seethrough.layout``); the row
"(forward+backward)" also gives that reference on channels-last input, so the table shows how
much of a ratio below 1 comes from the layout. pytorch-grad-cam needs the model's parameters to
require gradients (it backpropagates a loss through them), so its cells run that way; the
other libraries run with frozen parameters.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import forward_backward, markdown_table, median_time, peak_memory

from seethrough.allocator import keep_freed_memory

MB = 2**20


def load(name: str):
    from seethrough.models import load_model

    if name == "resnet18":
        return load_model("torchvision:resnet18"), "layer4"
    model = load_model(name)
    from seethrough.attribution import default_layer

    return model, default_layer(model)


def settings(quick: bool) -> dict:
    return {
        "n_steps": 16 if quick else 50,
        "n_samples": 8 if quick else 50,
        "n_masks": 200 if quick else 2000,
        "iterations": 20 if quick else 300,
        "repeats": 3 if quick else 5,
        "repeats_one": 3 if quick else 1,  # methods timed on one image (thousands of passes)
    }


def our_methods(layer: str, s: dict) -> dict:
    """name -> (options, images used: 'batch' or 'one')."""
    return {
        "saliency": ({}, "batch"),
        "input_x_gradient": ({}, "batch"),
        "guided_backprop": ({}, "batch"),
        "deconvnet": ({}, "batch"),
        "gradcam": ({"layer": layer}, "batch"),
        "gradcam_plus_plus": ({"layer": layer}, "batch"),
        "cam": ({"layer": layer}, "batch"),
        "guided_gradcam": ({"layer": layer}, "batch"),
        "integrated_gradients": ({"n_steps": s["n_steps"]}, "batch"),
        "smoothgrad": ({"n_samples": s["n_samples"]}, "batch"),
        "occlusion": ({}, "one"),
        "scorecam": ({"layer": layer}, "one"),
        "rise": ({"n_masks": s["n_masks"]}, "one"),
        "meaningful_perturbation": ({"iterations": s["iterations"]}, "one"),
        "extremal_perturbation": ({"iterations": s["iterations"]}, "one"),
    }


def peers(model, layer: str, s: dict, batch_size: int, window: int) -> dict:
    """name -> function(images, targets) for the peers' equivalents that are installed."""
    from seethrough.preserve import preserve
    from seethrough.trace import resolve_layer

    found = {}
    module = resolve_layer(model, layer)[1]
    try:
        import captum.attr as ca

        found["saliency"] = ("captum", lambda x, t: ca.Saliency(model).attribute(x, target=t))
        found["input_x_gradient"] = ("captum", lambda x, t: ca.InputXGradient(model).attribute(
            x.clone().requires_grad_(), target=t))
        found["guided_backprop"] = ("captum", lambda x, t: ca.GuidedBackprop(model).attribute(x, target=t))
        found["deconvnet"] = ("captum", lambda x, t: ca.Deconvolution(model).attribute(x, target=t))
        found["gradcam"] = ("captum", lambda x, t: ca.LayerAttribution.interpolate(
            ca.LayerGradCam(model, module).attribute(x, target=t, relu_attributions=True),
            x.shape[-2:], "bilinear"))
        found["integrated_gradients"] = ("captum", lambda x, t: ca.IntegratedGradients(model).attribute(
            x, target=t, n_steps=s["n_steps"], internal_batch_size=batch_size))
        found["smoothgrad"] = ("captum", lambda x, t: ca.NoiseTunnel(ca.Saliency(model)).attribute(
            x, target=t, nt_type="smoothgrad", nt_samples=s["n_samples"],
            nt_samples_batch_size=batch_size, stdevs=0.15))
        found["occlusion"] = ("captum", lambda x, t: ca.Occlusion(model).attribute(
            x, target=t, sliding_window_shapes=(3, window, window),
            strides=(3, max(1, window // 2), max(1, window // 2)), baselines=0.5,
            perturbations_per_eval=batch_size))
    except ImportError:
        pass
    try:
        import pytorch_grad_cam as pgc
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        def cam_of(cls):
            def run(x, t):
                with preserve(model), cls(model=model, target_layers=[module]) as cam:
                    model.requires_grad_(True)  # pytorch-grad-cam differentiates through them
                    cam.batch_size = batch_size
                    return cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in t])
            return run

        found["gradcam_plus_plus"] = ("pytorch-grad-cam", cam_of(pgc.GradCAMPlusPlus))
        found["scorecam"] = ("pytorch-grad-cam", cam_of(pgc.ScoreCAM))
        found["gradcam (pgc)"] = ("pytorch-grad-cam", cam_of(pgc.GradCAM))
    except ImportError:
        pass
    return found


def bench_model(name: str, quick: bool, batch: int, batch_size: int) -> list[dict]:
    from seethrough.attribution import attribute

    model, layer = load(name)
    size = model.input_size[-1]
    torch.manual_seed(0)
    images = torch.rand(batch, 3, size, size)
    with torch.no_grad():
        targets = model(images).argmax(1)
    s = settings(quick)
    reference = {}
    for count in (batch, 1):
        run = forward_backward(model, images[:count], targets[:count])
        reference[count] = median_time(run, repeats=7)
    channels_last = median_time(forward_backward(model, images, targets, torch.channels_last),
                                repeats=7)
    found = peers(model, layer, s, batch_size, window=max(1, -(-size // 8)))
    rows = []
    for method, (options, which) in our_methods(layer, s).items():
        count = batch if which == "batch" else 1
        x, t = images[:count], targets[:count]

        def ours(x=x, t=t, method=method, options=options):
            return attribute(model, x, t, method=method, batch_size=batch_size, **options)

        try:
            seconds = median_time(ours, repeats=s["repeats"] if which == "batch" else s["repeats_one"],
                                  warmup=1 if which == "batch" else 0)
            memory = peak_memory(ours) if which == "batch" or not quick else float("nan")
        except Exception as error:  # noqa: BLE001  (report the failure, keep benchmarking)
            rows.append({"model": name, "method": method, "note": f"error: {error}"[:80]})
            continue
        row = {"model": name, "method": method, "images": count,
               "x fwd+bwd": seconds / reference[count], "peak MB": memory / MB}
        for key in (method, f"{method} (pgc)"):
            if key in found:
                library, peer = found[key]
                try:
                    peer_seconds = median_time(lambda peer=peer, x=x, t=t: peer(x, t),
                                               repeats=s["repeats"] if which == "batch" else s["repeats_one"],
                                               warmup=1 if which == "batch" else 0)
                    label = library if key == method else f"{library} GradCAM"
                    row[f"peer ({label}) x fwd+bwd" if key == method else "pgc GradCAM x fwd+bwd"] = (
                        peer_seconds / reference[count])
                    if key == method:
                        row["peer"] = library
                        row["peer x fwd+bwd"] = peer_seconds / reference[count]
                        row["peer peak MB"] = peak_memory(lambda peer=peer, x=x, t=t: peer(x, t)) / MB
                except Exception as error:  # noqa: BLE001  (a peer's failure is a result)
                    row["note"] = f"{library} failed: {error}"[:80]
        rows.append(row)
        print(f"  {name} {method}: {row.get('x fwd+bwd', float('nan')):.2f}x", file=sys.stderr, flush=True)
    if "gradcam (pgc)" in found:
        for row in rows:
            if row["method"] == "gradcam" and "pgc GradCAM x fwd+bwd" in row:
                row["note"] = f"pytorch-grad-cam GradCAM: {row.pop('pgc GradCAM x fwd+bwd'):.2f}x"
    for row in rows:
        for key in [k for k in row if k.startswith("peer (")]:
            row.pop(key)
    # integrated gradients: memory is set by batch_size, not by n_steps
    for n_steps in (50, 200):
        def ig(n_steps=n_steps):
            return attribute(model, images, targets, method="integrated_gradients",
                             n_steps=n_steps, batch_size=batch_size)
        rows.append({"model": name, "method": f"integrated_gradients n_steps={n_steps}",
                     "images": batch, "peak MB": peak_memory(ig) / MB,
                     "note": f"batch_size={batch_size}"})
    rows.append({"model": name, "method": "(forward+backward)", "images": batch,
                 "note": f"{reference[batch] * 1000:.1f} ms for {batch} images, "
                         f"{reference[1] * 1000:.1f} ms for 1; channels-last input: "
                         f"{channels_last / reference[batch]:.2f}x"})
    if name == "mobilenet_v2":
        for row in rows:
            if row["method"] in ("guided_backprop", "deconvnet") and row.get("peer") == "captum":
                row["note"] = "captum hooks nn.ReLU only, not ReLU6: its result is the plain gradient"
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps, samples and repeats")
    parser.add_argument("--models", default="conceptnet,mobilenet_v2,resnet18")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=32, help="internal batch of every library")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    rows = []
    for name in args.models.split(","):
        try:
            rows += bench_model(name.strip(), args.quick, args.batch, args.batch_size)
        except Exception as error:  # noqa: BLE001  (e.g. weights not bundled yet)
            rows.append({"model": name, "method": "-", "note": f"skipped: {error}"[:100]})
    columns = ["model", "method", "images", "x fwd+bwd", "peak MB", "peer", "peer x fwd+bwd",
               "peer peak MB", "note"]
    print(f"settings: {settings(args.quick)}, batch {args.batch}, batch_size {args.batch_size}, "
          f"{args.threads} threads, torch {torch.__version__}\n")
    print(markdown_table(rows, columns))
    return 0


if __name__ == "__main__":
    sys.exit(main())

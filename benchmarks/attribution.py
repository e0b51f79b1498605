"""Attribution speed and memory: each method's time as a multiple of the model's own
forward + backward on the same batch, its peak extra memory, and the same method in Captum and
pytorch-grad-cam where installed (``pip install captum grad-cam``).

Run: ``python benchmarks/attribution.py [--quick] [--rounds 7]
[--models conceptnet,mobilenet_v2,resnet18] [--methods saliency,gradcam] [--batch 8]
[--device cuda]`` (on CUDA every timed call waits for the GPU; memory is the allocator's peak)

Settings are the same for every library: batch 8 (224 px; ConceptNet at 64 px), class targets
fixed beforehand, the same layer for the CAMs, the same number of steps / samples / windows.
Methods that run thousands of forward passes per image (Score-CAM, RISE, the optimised masks)
are timed on 1 image (occlusion too: 225 windows at 224 px) and compared with forward +
backward on 1 image. Targets: single-pass
gradient methods within 1.1x of forward + backward; no method slower than a peer's equivalent;
integrated gradients' memory set by ``batch_size``, not by ``n_steps``.

Each (model, method) cell is timed in interleaved rounds (``--rounds``, default 7): every round
runs, once each and in turn, the model's own forward + backward on the cell's images as given
(contiguous) and on the same images channels-last, seethrough's method and each installed
peer's equivalent; each variant's time is its best round, so every ratio compares timings taken
at the same moments. Batch cells get one untimed round first; one-image cells do not (their
calls are long, and the best of the rounds drops the first one's warm-up).

Each ratio is given against both floors: ``x plain fwd+bwd`` (the model as a user calls it) and ``x
channels-last fwd+bwd``, the fastest floor of the same model on the CPU. seethrough feeds the model
channels-last images there (``seethrough.layout``; on a GPU it leaves them as given), so a ratio
below 1 against the plain floor can hide overhead that the channels-last column shows. The row
"(forward+backward)" gives both floors' best times in milliseconds. A peer that is not installed
says so in its cells.
pytorch-grad-cam needs the model's parameters to require gradients (it backpropagates a loss
through them), so its cells run that way; the other libraries run with frozen parameters.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import (forward_backward, interleaved_best, markdown_table, peak_device_memory,
                    synchronized)

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
        # issue 17: the methods the peers have
        "deeplift": ({}, "batch"),
        "deeplift_shap": ({}, "batch"),  # its default references: BASELINES
        "gradient_shap": ({"n_samples": s["n_samples"] // 5}, "batch"),
        "layer_conductance": ({"layer": layer, "n_steps": s["n_steps"]}, "batch"),
        "hirescam": ({"layer": layer}, "batch"),
        "xgradcam": ({"layer": layer}, "batch"),
        "layercam": ({"layer": layer}, "batch"),
        "eigencam": ({"layer": layer}, "batch"),
        "fullgrad": ({}, "batch"),
        "lrp": ({"rule": "epsilon"}, "batch"),
        "ablationcam": ({"layer": layer}, "one"),
        "feature_ablation": (GRID, "one"),
        "lime": ({**GRID, "n_samples": s["n_masks"] // 4, "baseline": 0.5}, "one"),
        "kernel_shap": ({**GRID, "n_samples": s["n_masks"] // 4}, "one"),
        "shapley_sampling": ({**GRID, "n_samples": 2}, "one"),
    }


#: DeepLIFT-SHAP's references: black and white (seethrough's default; given to Captum)
BASELINES = torch.stack([torch.zeros(3), torch.ones(3)])[:, :, None, None]
#: the superpixel methods' segments: an 8 x 8 grid, the same feature mask for Captum
GRID = {"segments": "grid", "n_segments": 64}


#: method (or extra cell) -> the peer library that has an equivalent
PEER_OF = {
    **dict.fromkeys(["saliency", "input_x_gradient", "guided_backprop", "deconvnet", "gradcam",
                     "integrated_gradients", "smoothgrad", "occlusion"], "captum"),
    **dict.fromkeys(["gradcam_plus_plus", "scorecam", "gradcam (pgc)"], "pytorch-grad-cam"),
    **dict.fromkeys(["deeplift", "deeplift_shap", "gradient_shap", "layer_conductance", "lrp",
                     "feature_ablation", "lime", "kernel_shap", "shapley_sampling"], "captum"),
    **dict.fromkeys(["hirescam", "xgradcam", "layercam", "eigencam", "fullgrad", "ablationcam"],
                    "pytorch-grad-cam"),
}


def installed_peers() -> dict[str, str]:
    """library -> its version, or why it is missing (starts with 'not installed')."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    packages = {"captum": ("captum", "captum.attr"),
                "pytorch-grad-cam": ("grad-cam", "pytorch_grad_cam")}
    for library, (distribution, module) in packages.items():
        try:
            __import__(module)
            found[library] = version(distribution)
        except ImportError as error:
            found[library] = f"not installed ({error})"
        except PackageNotFoundError:
            found[library] = "version unknown"
    return found


def peers(model, layer: str, s: dict, batch_size: int, window: int) -> dict:
    """name -> (library, function(images, targets)) for the peers' equivalents that are installed."""
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
        _captum_issue17(found, ca, model, module, s, batch_size)
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
        for method, cls in {"hirescam": pgc.HiResCAM, "xgradcam": pgc.XGradCAM,
                            "layercam": pgc.LayerCAM, "eigencam": pgc.EigenCAM,
                            "fullgrad": pgc.FullGrad, "ablationcam": pgc.AblationCAM}.items():
            found[method] = ("pytorch-grad-cam", cam_of(cls))
    except ImportError:
        pass
    return found


def _captum_issue17(found: dict, ca, model, module, s: dict, batch_size: int) -> None:
    """Captum's DeepLIFT, DeepLIFT-SHAP, GradientSHAP, layer conductance, LRP and superpixel
    methods at seethrough's settings (the same references, samples, steps and segments)."""
    from seethrough.attribution.superpixels import superpixels

    def grid(x):
        return superpixels(x, "grid", n_segments=GRID["n_segments"])[:, None]

    found["deeplift"] = ("captum", lambda x, t: ca.DeepLift(model).attribute(x, target=t))
    found["deeplift_shap"] = ("captum", lambda x, t: ca.DeepLiftShap(model).attribute(
        x, BASELINES.to(x).expand(-1, *x.shape[1:]), target=t))
    found["gradient_shap"] = ("captum", lambda x, t: ca.GradientShap(model).attribute(
        x, BASELINES.to(x).expand(-1, *x.shape[1:]), n_samples=s["n_samples"] // 5, target=t))
    found["layer_conductance"] = ("captum", lambda x, t: ca.LayerConductance(
        model, module).attribute(x, target=t, n_steps=s["n_steps"],
                                 internal_batch_size=batch_size))
    found["lrp"] = ("captum", lambda x, t: ca.LRP(model).attribute(x, target=t))
    found["feature_ablation"] = ("captum", lambda x, t: ca.FeatureAblation(model).attribute(
        x, target=t, baselines=0.5, feature_mask=grid(x), perturbations_per_eval=batch_size))
    found["lime"] = ("captum", lambda x, t: ca.Lime(model).attribute(
        x, target=t, baselines=0.5, feature_mask=grid(x), n_samples=s["n_masks"] // 4,
        perturbations_per_eval=batch_size))
    found["kernel_shap"] = ("captum", lambda x, t: ca.KernelShap(model).attribute(
        x, target=t, baselines=0.5, feature_mask=grid(x), n_samples=s["n_masks"] // 4,
        perturbations_per_eval=batch_size))
    found["shapley_sampling"] = ("captum", lambda x, t: ca.ShapleyValueSampling(model).attribute(
        x, target=t, baselines=0.5, feature_mask=grid(x), n_samples=2,
        perturbations_per_eval=batch_size))


#: the floors: the model's own forward + backward on the images as given and channels-last
FLOORS = {"plain": torch.contiguous_format, "channels-last": torch.channels_last}


def ratios(seconds: float, best: dict[str, float], prefix: str = "") -> dict[str, float]:
    """``{prefix}x <floor> fwd+bwd`` -> ``seconds`` over that floor's best time, for each floor."""
    return {f"{prefix}x {floor} fwd+bwd": seconds / best[floor] for floor in FLOORS}


def bench_model(name: str, quick: bool, batch: int, batch_size: int, rounds: int,
                methods: list[str] | None = None,
                device: torch.device = torch.device("cpu")) -> list[dict]:
    from seethrough.attribution import attribute

    model, layer = load(name)
    model.to(device)
    size = model.input_size[-1]
    torch.manual_seed(0)
    images = torch.rand(batch, 3, size, size).to(device)
    with torch.no_grad():
        targets = model(images).argmax(1)
    s = settings(quick)
    # the floors: the model's own forward + backward on the same images, as given and channels-last
    floors = {(count, floor): synchronized(
                  forward_backward(model, images[:count], targets[:count], layout), device)
              for count in (batch, 1) for floor, layout in FLOORS.items()}
    fastest = dict.fromkeys(floors, math.inf)  # best floor times over every cell's rounds
    found = peers(model, layer, s, batch_size, window=max(1, -(-size // 8)))
    rows = []
    for method, (options, which) in our_methods(layer, s).items():
        if methods is not None and method not in methods:
            continue
        count = batch if which == "batch" else 1
        x, t = images[:count], targets[:count]

        def ours(x=x, t=t, method=method, options=options):
            return attribute(model, x, t, method=method, batch_size=batch_size, **options)

        # one cell: every variant once per round, the best of the rounds for each
        functions = {floor: floors[count, floor] for floor in FLOORS}
        functions["seethrough"] = synchronized(ours, device)
        keys = [key for key in (method, f"{method} (pgc)") if key in PEER_OF]
        for key in keys:
            if key not in found:
                continue
            functions[key] = synchronized(lambda peer=found[key][1], x=x, t=t: peer(x, t), device)
        failures: dict[str, BaseException] = {}
        best = interleaved_best(functions, rounds, warmup=1 if which == "batch" else 0,
                                failures=failures)
        for floor in FLOORS:
            if floor in failures:
                raise failures[floor]
            fastest[count, floor] = min(fastest[count, floor], best[floor])

        row = {"model": name, "method": method, "images": count}
        notes = []
        if "seethrough" in failures:
            notes.append(f"error: {failures['seethrough']}"[:80])
        else:
            row.update(ratios(best["seethrough"], best))
            try:
                row["peak MB"] = (peak_device_memory(ours, device) if which == "batch" or not quick
                                  else float("nan")) / MB
            except Exception as error:  # noqa: BLE001  (report the failure, keep benchmarking)
                notes.append(f"error: {error}"[:80])
        for key in keys:
            if key not in found:  # the peer is not installed: its cells say so
                if key == method:
                    row["peer"] = f"{PEER_OF[key]}: not installed"
                else:
                    notes.append(f"{PEER_OF[key]} GradCAM: not installed")
                continue
            library, peer = found[key]
            if key in failures:  # a peer's failure is a result
                notes.append(f"{library} failed: {failures[key]}"[:80])
            elif key == method:
                row["peer"] = library
                row.update(ratios(best[key], best, "peer "))
                try:
                    row["peer peak MB"] = peak_device_memory(
                        lambda peer=peer, x=x, t=t: peer(x, t), device) / MB
                except Exception as error:  # noqa: BLE001
                    notes.append(f"{library} failed: {error}"[:80])
            else:  # pytorch-grad-cam's GradCAM beside Captum's
                notes.append(f"{library} GradCAM: " + ", ".join(
                    f"{best[key] / best[floor]:.2f}x {floor}" for floor in FLOORS))
        if name == "mobilenet_v2" and method in ("guided_backprop", "deconvnet") \
                and row.get("peer") == "captum":
            notes.append("captum hooks nn.ReLU only, not ReLU6: its result is the plain gradient")
        if notes:
            row["note"] = "; ".join(notes)
        rows.append(row)
        print(f"  {name} {method}: " + ", ".join(
            f"{row.get(f'x {floor} fwd+bwd', math.nan):.2f}x {floor}" for floor in FLOORS),
            file=sys.stderr, flush=True)
    # integrated gradients: memory is set by batch_size, not by n_steps
    for n_steps in (50, 200) if methods is None or "integrated_gradients" in methods else ():
        def ig(n_steps=n_steps):
            return attribute(model, images, targets, method="integrated_gradients",
                             n_steps=n_steps, batch_size=batch_size)
        rows.append({"model": name, "method": f"integrated_gradients n_steps={n_steps}",
                     "images": batch, "peak MB": peak_device_memory(ig, device) / MB,
                     "note": f"batch_size={batch_size}"})
    timed = [n for n in dict.fromkeys((batch, 1)) if math.isfinite(fastest[n, "plain"])]
    rows.append({"model": name, "method": "(forward+backward)", "images": batch,
                 "note": "; ".join(
                     f"{count} image{'s' * (count > 1)}: " + ", ".join(
                         f"{fastest[count, floor] * 1000:.1f} ms {floor}" for floor in FLOORS)
                     for count in timed) + " (best round of all cells)"})
    return rows


def device_name(device: torch.device) -> str:
    """The device as the table's settings line names it."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps, samples and masks")
    parser.add_argument("--rounds", type=int, default=7,
                        help="interleaved rounds per cell; each variant's best round counts")
    parser.add_argument("--models", default="conceptnet,mobilenet_v2,resnet18")
    parser.add_argument("--methods", help="comma-separated subset of the methods (default: all)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=32, help="internal batch of every library")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--device", default="cpu", help="cpu or cuda (timings wait for the GPU)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA GPU here (torch.cuda.is_available() is False)")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    methods = [m.strip() for m in args.methods.split(",")] if args.methods else None
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    rows = []
    for name in args.models.split(","):
        try:
            rows += bench_model(name.strip(), args.quick, args.batch, args.batch_size,
                                args.rounds, methods, device)
        except Exception as error:  # noqa: BLE001  (e.g. weights not bundled yet)
            rows.append({"model": name, "method": "-", "note": f"skipped: {error}"[:100]})
    floors = [f"x {floor} fwd+bwd" for floor in FLOORS]
    columns = ["model", "method", "images", *floors, "peak MB", "peer",
               *(f"peer {column}" for column in floors), "peer peak MB", "note"]
    peer_versions = ", ".join(f"{library} {v}" for library, v in installed_peers().items())
    print(f"settings: {settings(args.quick)}, batch {args.batch}, batch_size {args.batch_size}, "
          f"best of {args.rounds} interleaved rounds, {args.threads} threads, "
          f"{device_name(device)}, "
          f"torch {torch.__version__}; {peer_versions}\n")
    print(markdown_table(rows, columns))
    return 0


if __name__ == "__main__":
    sys.exit(main())

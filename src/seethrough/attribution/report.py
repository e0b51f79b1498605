"""The attribution report: every method side by side, ranked on ground truth, and the cheater.

Building blocks shared by the report section and ``seethrough attribute``:

* ``run_methods``: run several methods on one batch, timing each;
* ``methods_figure``: a grid, one row per image, one column per method (heatmap over the image,
  the ground-truth object outlined when masks are given);
* ``score_methods``: a table ranking the methods by pointing game, energy pointing game, mask
  IoU, deletion and insertion AUC, the sanity check and time.

Expensive methods run with smaller settings than the papers' so a CPU report takes minutes:
``report_options(quick)`` lists them (they are recorded in the section's notes).

Example:
    >>> from seethrough.demo import run_demo
    >>> run_demo("out", sections=["attribution"], quick=True)      # doctest: +SKIP
"""
from __future__ import annotations

import inspect
import time
from collections.abc import Sequence

import torch
from torch import nn

from seethrough.errors import InputError

#: methods that optimise a mask for hundreds of steps: left out unless asked for by name
SLOW_METHODS = ("meaningful_perturbation", "extremal_perturbation")


def report_options(quick: bool = False, image_size: int = 64) -> dict[str, dict]:
    """Per-method options for a CPU report, reduced from the papers' defaults.

    Perturbation methods cost one forward pass per mask, window or channel, so at ImageNet
    size (``image_size`` > 128) they get fewer masks, non-overlapping occlusion windows and
    Score-CAM on the 128 most active channels.
    """
    large = image_size > 128
    options = {
        "integrated_gradients": {"n_steps": 16 if quick else 50},
        "smoothgrad": {"n_samples": 8 if quick else 25},
        "rise": {"n_masks": 500 if quick else 2000},
        "meaningful_perturbation": {"iterations": 60 if quick else 150},
        "extremal_perturbation": {"iterations": 100 if quick else 200},
    }
    if large:
        window = image_size // 7
        options["rise"] = {"n_masks": 250 if quick else 1000}
        options["occlusion"] = {"window": window, "stride": window}
        options["scorecam"] = {"top_channels": 64 if quick else 128}
    return options


def method_names(methods: str | Sequence[str] | None) -> list[str]:
    """Resolve ``"all"`` / ``None`` (every method but the slow ones) / a comma list / a list."""
    from seethrough.attribution import METHODS

    if methods is None or methods == "fast":
        return [name for name in METHODS if name not in SLOW_METHODS]
    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    if list(methods) == ["all"]:
        return list(METHODS)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise InputError(f"unknown method(s) {', '.join(unknown)}; choose from all, {', '.join(METHODS)}")
    return list(methods)


def accepts(method: str, option: str) -> bool:
    """Whether a registered method takes ``option`` (e.g. ``layer``)."""
    from seethrough.attribution import METHODS

    return option in inspect.signature(METHODS[method]).parameters


def run_methods(model: nn.Module, images: torch.Tensor, methods: Sequence[str], *,
                target="predicted", layer: str | None = None, options: dict | None = None,
                batch_size: int = 32, progress: bool = True) -> dict[str, tuple]:
    """``{method: (Attribution, seconds)}`` for one batch; ``layer`` goes to the layer methods."""
    from tqdm.auto import tqdm

    from seethrough.attribution import attribute

    options = options or {}
    results = {}
    for name in tqdm(methods, desc="attribution methods", unit="method", disable=not progress):
        extra = dict(options.get(name, {}))
        if layer is not None and accepts(name, "layer"):
            extra["layer"] = layer
        if name == "smoothgrad" and layer is not None:
            extra.pop("layer", None)
        start = time.perf_counter()
        result = attribute(model, images, target, method=name, batch_size=batch_size, **extra)
        results[name] = (result, time.perf_counter() - start)
    return results


def display_map(result) -> torch.Tensor:
    """A map for display ``(N, H, W)`` in [0, 1]: ``|map|`` scaled by its maximum per image."""
    maps = result.maps.detach().abs()[:, 0].cpu()
    return maps / maps.flatten(1).amax(1).clamp(min=1e-12).view(-1, 1, 1)


def methods_figure(images: torch.Tensor, results: dict, *, masks: torch.Tensor | None = None,
                   row_titles: Sequence[str] | None = None, cell: float = 1.35):
    """A grid: the image, then one heatmap per method (``|map|``, max-scaled, over the image).

    ``results`` is ``{title: (Attribution, seconds)}``; only the first ``len(images)`` maps are drawn.

    With ``masks`` (N, H, W) the ground-truth object is outlined in white on every cell.
    """
    from matplotlib.figure import Figure

    names = list(results)
    rows, cols = len(images), len(names) + 1
    figure = Figure(figsize=(cell * cols, cell * rows + 0.3))
    axes = figure.subplots(rows, cols, squeeze=False)
    pictures = images.detach().cpu().permute(0, 2, 3, 1).clamp(0, 1).numpy()
    heat = {name: display_map(results[name][0])[:rows].numpy() for name in names}
    for row in range(rows):
        for col in range(cols):
            ax = axes[row, col]
            ax.imshow(pictures[row])
            if col:
                ax.imshow(heat[names[col - 1]][row], cmap="jet", alpha=0.5, vmin=0, vmax=1)
            if masks is not None:
                ax.contour(masks[row].cpu().numpy().astype(float), levels=[0.5], colors="white",
                           linewidths=0.8)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title("image" if col == 0 else names[col - 1].replace("_", " "), fontsize=7)
        if row_titles is not None:
            axes[row, 0].set_ylabel(row_titles[row], fontsize=7)
    figure.subplots_adjust(wspace=0.03, hspace=0.03, left=0.02, right=0.99, top=0.95, bottom=0.01)
    return figure


def score_methods(model: nn.Module, images: torch.Tensor, results: dict, *, masks=None,
                  sanity_images: int = 0,
                  step: int | None = None, batch_size: int = 64, progress: bool = True):
    """One row per method: the mean of each score over the images, and seconds per image.

    ``sanity`` (with ``sanity_images > 0``) is the mean Spearman correlation between the maps of
    the model and of a copy with every parameter re-initialised (Adebayo et al.'s cascade run to
    the bottom, block by block): lower is better, near 1 means the map ignores the model.
    ``step`` is the deletion / insertion step in pixels (default: one row).
    """
    import pandas as pd

    from seethrough.evaluation import evaluate, model_randomization

    rows = []
    for name, (result, seconds) in results.items():
        scores = evaluate(model, images, result, result.target, masks=masks, step=step,
                          batch_size=batch_size, progress=False).mean()
        row = {"method": name, **scores, "seconds_per_image": seconds / len(images)}
        if sanity_images:
            options = {k: v for k, v in result.options.items() if k != "batch_size"}
            blocks = [n for n, m in model.named_children() if any(True for _ in m.parameters())]
            check = model_randomization(model, images[:sanity_images], name,
                                        result.target[:sanity_images], layers=blocks[::-1] or None,
                                        progress=False, **options)
            row["sanity_spearman"] = float(check.mean()[-1])
        rows.append(row)
        if progress:
            print(f"  scored {name}", flush=True)
    return pd.DataFrame(rows)


def cue_energy(maps, cue_masks) -> torch.Tensor:
    """Share of each map's positive energy on the shortcut cue (ConceptWorld's ``cue_mask``)."""
    from seethrough.evaluation import energy_pointing_game

    return energy_pointing_game(maps, cue_masks)


def _batch(world, count: int):
    batch = world.batch(count)
    return batch["image"], batch["object_mask"], batch["cue_mask"], batch["label"]


def _ranked(frame):
    order = frame.sort_values("pointing_game", ascending=False, kind="stable", ignore_index=True)
    columns = ["method", "pointing_game", "energy_pointing_game", "mask_iou", "deletion",
               "insertion", "sanity_spearman", "seconds_per_image"]
    return order[[c for c in columns if c in order]]


def section(context):
    """Report section: methods side by side on MobileNetV2 and ConceptNet, ranked, and the cheater."""
    from seethrough.report.html import Section, figure_html, table_html

    quick = context.quick
    options = report_options(quick)
    large_options = report_options(quick, image_size=context.imagenet_model.input_size[-1])
    methods = method_names(None)
    notes = [f"Reduced settings for a CPU run: on ConceptNet {options}; on MobileNetV2 "
             f"{large_options}. Other methods use the papers' settings. Slow optimisation methods ("
             + ", ".join(SLOW_METHODS) + ") are in the ConceptNet grid only."]
    body = ""

    # MobileNetV2 on real photos
    photos, names = context.photos
    if quick:
        photos, names = photos[:2], names[:2]
    model = context.imagenet_model
    results = run_methods(model, photos, methods, options=large_options)
    classes = model.class_names or []
    titles = [f"{n}: {classes[int(c)] if classes else int(c)}"
              for n, c in zip(names, next(iter(results.values()))[0].target)]
    body += "<h3>MobileNetV2 on photos</h3>"
    body += figure_html(methods_figure(photos, results, row_titles=titles),
                        "Every method on MobileNetV2 (ImageNet), explaining the predicted class "
                        "(|map| scaled to its maximum)")

    # ConceptNet with ground truth
    net = context.conceptnet
    count = 16 if quick else 32
    world = context.conceptworld(length=count)
    images, objects, _, labels = _batch(world, count)
    all_methods = methods + [m for m in SLOW_METHODS if not quick]
    results = run_methods(net, images, all_methods, target=labels, options=options)
    shown = 4
    body += "<h3>ConceptNet on ConceptWorld (object outlined)</h3>"
    body += figure_html(
        methods_figure(images[:shown], results, masks=objects[:shown],
                       row_titles=[world.class_names[int(c)] for c in labels[:shown]]),
        "Every method on ConceptNet, explaining the true class; white: the object's true outline")
    frame = score_methods(net, images, results, masks=objects, sanity_images=4 if quick else 8,
                          step=2 * images.shape[-1])
    body += f"<p>Methods ranked on {count} ConceptWorld validation images (true class). "
    body += ("Pointing game: the map's maximum within 4 px of the object (15 px at 224 px). "
             "Energy: share of positive map energy on the object. IoU: top 20% of the map vs the "
             "object. Deletion (lower is better) and insertion (higher is better): area under the "
             "probability curve as pixels are removed (to black) / restored (from a blur) in map "
             "order, two rows of pixels per step (RISE). Sanity: "
             "Spearman correlation of the maps before and after re-initialising every weight "
             "(lower is better). Time: seconds per image on this CPU.</p>")
    body += table_html(_ranked(frame))

    # The cheater: the maps must land on the shortcut cue
    cheater = context.cheater
    biased = context.conceptworld(length=count, bias=1.0)
    images, objects, cues, labels = _batch(biased, count)
    cue_methods = ["saliency", "integrated_gradients", "gradcam", "scorecam", "occlusion"]
    honest = run_methods(net, images, cue_methods, options=options, progress=False)
    cheat = run_methods(cheater, images, cue_methods, options=options, progress=False)
    import pandas as pd

    table = pd.DataFrame({
        "method": cue_methods,
        "energy_on_cue_honest": [float(cue_energy(honest[m][0], cues).nanmean()) for m in cue_methods],
        "energy_on_cue_cheater": [float(cue_energy(cheat[m][0], cues).nanmean()) for m in cue_methods],
        "energy_on_object_honest": [float(cue_energy(honest[m][0], objects).nanmean()) for m in cue_methods],
        "energy_on_object_cheater": [float(cue_energy(cheat[m][0], objects).nanmean()) for m in cue_methods],
    })
    cue_area = float(cues.float().mean())
    paired = {}
    for m in ("gradcam", "integrated_gradients"):
        paired[f"honest: {m}"] = honest[m]
        paired[f"cheater: {m}"] = cheat[m]
    body += "<h3>The cheater: explanations find the shortcut</h3>"
    body += figure_html(
        methods_figure(images[:shown], paired, masks=cues[:shown]),
        "Biased world (bias = 1): the corner mark's colour gives the class away. White outline: "
        "the cue. The honest ConceptNet looks at the object, the cheater at the cue.")
    body += (f"<p>Share of positive map energy on the cue (the cue covers {cue_area:.1%} of the "
             f"image) and on the object, {count} images, predicted class.</p>")
    body += table_html(table)
    return Section("Attribution", body, notes=notes)

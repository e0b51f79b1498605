"""Pictures of feature visualization: PNG files, and the report section of the demo."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [0, 1] -> (H, W, 3) uint8."""
    return (image.detach().cpu().clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def save_png(image: torch.Tensor, path: str | Path) -> Path:
    """Write one (3, H, W) image in [0, 1] as a PNG, atomically (temporary file, then rename)."""
    from PIL import Image

    from seethrough.atomic import atomic_path

    with atomic_path(path) as temporary:
        Image.fromarray(to_uint8(image)).save(temporary, format="PNG")
    return Path(path)


# -- dataset examples --------------------------------------------------------------------------

def top_crops(model, images: torch.Tensor, layer: str, channels: list[int], *, k: int = 3,
              crop: int | None = None) -> list[list[tuple[torch.Tensor, float, int]]]:
    """Per channel the ``k`` images with the highest max activation, cropped around that peak.

    Returns ``[[(crop (3, c, c), activation, image index), ...] per channel]``. The crop side is
    four times the layer's stride (at least 16 px), a rough stand-in for its receptive field.
    """
    from seethrough.trace import capture

    activation = capture(model, images, layer)[layer].output[:, channels]  # (N, K, h, w)
    n, _, height, width = images.shape
    stride = height / activation.shape[-2]
    side = min(height, crop or max(16, round(4 * stride)))
    peaks, where = activation.flatten(2).max(2)  # (N, K)
    result = []
    for j in range(len(channels)):
        values, order = peaks[:, j].topk(min(k, n))
        row = []
        for value, index in zip(values.tolist(), order.tolist()):
            y, x = divmod(int(where[index, j]), activation.shape[-1])
            cy, cx = int((y + 0.5) * stride), int((x + 0.5) * width / activation.shape[-1])
            top = min(max(0, cy - side // 2), height - side)
            left = min(max(0, cx - side // 2), width - side)
            row.append((images[index, :, top:top + side, left:left + side], value, index))
        result.append(row)
    return result


def most_active_channels(model, images: torch.Tensor, layer: str, count: int) -> list[int]:
    """The ``count`` channels with the highest peak activation (mean over images, standardized)."""
    from seethrough.trace import capture

    activation = capture(model, images, layer)[layer].output.flatten(2).max(2).values  # (N, C)
    score = activation.mean(0) / activation.std(0).clamp_min(1e-6) if len(images) > 1 else activation[0]
    return score.topk(min(count, activation.shape[1])).indices.tolist()


def channel_figure(title: str, renders: torch.Tensor, channels: list[int], crops, labels=None):
    """Columns = channels; row 0 = the rendering, rows 1.. = top dataset crops."""
    from matplotlib.figure import Figure

    rows = 1 + max(len(c) for c in crops)
    cols = len(channels)
    figure = Figure(figsize=(1.7 * cols, 1.8 * rows))
    figure.suptitle(title, fontsize=10)
    for j, channel in enumerate(channels):
        ax = figure.add_subplot(rows, cols, j + 1)
        ax.imshow(to_uint8(renders[j]))
        heading = f"unit {channel}"
        if labels and labels.get(channel):
            heading += f"\n{labels[channel]}"
        ax.set_title(heading, fontsize=8)
        ax.axis("off")
        for i, (patch, value, _) in enumerate(crops[j]):
            ax = figure.add_subplot(rows, cols, (i + 1) * cols + j + 1)
            ax.imshow(to_uint8(patch), interpolation="nearest")
            ax.set_title(f"{value:.2f}", fontsize=7)
            ax.axis("off")
    figure.tight_layout()
    return figure


def _row(images, captions, width=150) -> str:
    from seethrough.report.html import image_grid_html

    return image_grid_html([img for img in images], captions, width=width)


# -- the demo section ----------------------------------------------------------------------------

def _dissection_labels(model, layer: str, world) -> dict[int, str] | None:
    try:
        from seethrough.dissection import dissect
    except ImportError:
        return None
    frame = dissect(model, [layer], world, progress=False, cache=False).to_frame()
    return {int(r.unit): f"{r.concept} ({r.iou:.2f})" for r in frame.itertuples() if r.detector}


def _layer_grids(model, name: str, layers: list[str], images, count: int, size: int, steps: int,
                 labels_for=None) -> str:
    from seethrough.featureviz import objectives as obj
    from seethrough.featureviz.render import visualize
    from seethrough.report.html import figure_html

    body = ""
    for layer in layers:
        channels = most_active_channels(model, images, layer, count)
        result = visualize(model, obj.channel(layer, channels), steps=steps, size=size)
        crops = top_crops(model, images, layer, channels)
        labels = labels_for(layer) if labels_for else None
        caption = (f"{name} {layer}: channel visualizations (top row; {steps} steps, {size}px, Fourier + "
                   f"decorrelated colour, Lucid's standard transforms) above the dataset crops where each "
                   f"unit peaks (value = its max activation)")
        body += figure_html(channel_figure(f"{name} · {layer}", result.images, channels, crops, labels), caption)
    return body


def section(context):
    """Feature visualization and synthesis on MobileNetV2 (photos) and ConceptNet (ConceptWorld)."""
    from seethrough.errors import SeethroughError
    from seethrough.featureviz import objectives as obj
    from seethrough.featureviz.render import visualize
    from seethrough.featureviz.synthesis import (
        deepdream,
        invert,
        synthesize_texture,
        transfer_style,
    )
    from seethrough.featureviz.synthesis.layers import stage_layers
    from seethrough.report.html import Section

    quick = context.quick
    start, timings = time.perf_counter(), {}
    steps = 32 if quick else 128
    notes = []
    body = ("<p>Images optimized to excite one unit (Olah et al. 2017): decorrelated Fourier "
            "parameterization, Lucid's transformation robustness, Adam 0.05, redirected ReLU gradient "
            "for the first 16 steps. Below each, the crops of real images where the unit fires most.</p>")

    # ConceptNet on ConceptWorld
    try:
        net = context.conceptnet
    except (SeethroughError, ImportError, OSError) as error:
        net = None
        notes.append(f"ConceptNet is not available ({error}); its grid is left out.")
    if net is not None:
        world = context.conceptworld(length=64 if quick else 200)
        images = world.batch()["image"]
        stages = stage_layers(net)
        layers = stages[len(stages) // 2:][-2:]

        def labels_for(layer):
            try:
                labels = _dissection_labels(net, layer, world)
            except SeethroughError as error:
                notes.append(f"dissection of {layer} failed: {error}")
                return None
            if labels is None:
                notes.append("seethrough.dissect is not installed: top crops only, no concept labels")
            return labels

        body += "<h3>ConceptNet (ConceptWorld, 64 px)</h3>"
        body += ("<p>Labels under the unit number: the ConceptWorld concept with the highest IoU "
                 "(Network Dissection, on the same validation images) when it passes 0.04.</p>")
        body += _layer_grids(net, "ConceptNet", layers, images, 6, 64, steps * 2, labels_for)
    timings["ConceptNet"] = time.perf_counter()

    # MobileNetV2 on the sample photos
    model = context.imagenet_model
    photos, names = context.photos
    from seethrough.data.photos import sample_photos

    textures, _ = sample_photos(["brick", "grass", "gravel"], size=photos.shape[-1])
    dataset = torch.cat([photos, textures, photos.flip(-1)])
    body += "<h3>MobileNetV2 (ImageNet)</h3>"
    body += ("<p>Top crops come from only seven photos (four sample photos, three textures, plus "
             "mirror images): a small stand-in for the dataset examples of the Distill article.</p>")
    body += _layer_grids(model, "MobileNetV2", ["features.4", "features.8", "features.14"], dataset,
                         6, 112, steps)
    timings["MobileNetV2 channels"] = time.perf_counter()

    classes = [1, 9, 130, 980]
    result = visualize(model, obj.class_logit(classes), steps=steps, size=128)
    body += "<h4>Class visualizations (logit)</h4>" + _row(
        result.images, [f"{c}: {model.class_names[c]}" for c in classes])

    timings["classes"] = time.perf_counter()
    small = torch.nn.functional.interpolate(photos, size=128, mode="bilinear", antialias=True,
                                            align_corners=False)
    dreams = deepdream(model, small[:2], layer="features.10", steps=5 if quick else 10)
    body += "<h4>DeepDream (features.10, 4 octaves)</h4>" + _row(
        torch.cat([small[:2], dreams]), [f"{n}" for n in names[:2]] + [f"{n}, dreamed" for n in names[:2]])

    cat = small[names.index("cat")][None] if "cat" in names else small[:1]
    inversions, captions = [cat], ["original"]
    for layer in ("features.3", "features.7", "features.14"):
        inversions.append(invert(model, cat, layer, steps=steps).images)
        captions.append(f"inverted from {layer}")
    body += "<h4>Feature inversion (Mahendran & Vedaldi 2015)</h4>" + _row(torch.cat(inversions), captions)

    timings["DeepDream and inversion"] = time.perf_counter()
    texture_images = torch.nn.functional.interpolate(textures, size=112, mode="bilinear", antialias=True,
                                                     align_corners=False)
    made, captions = [], []
    for texture, label in zip(texture_images[[0, 2]], ["brick", "gravel"]):
        made += [texture[None], synthesize_texture(model, texture[None], steps=steps).images]
        captions += [label, f"{label}, synthesized"]
    body += "<h4>Texture synthesis (Gatys et al. 2015)</h4>" + _row(torch.cat(made), captions)

    style = torch.nn.functional.interpolate(textures[[2]], size=128, mode="bilinear", antialias=True,
                                            align_corners=False)
    styled = transfer_style(model, cat, style, steps=steps)
    body += "<h4>Style transfer (Gatys et al. 2016)</h4>" + _row(
        torch.cat([cat, style, styled.images]),
        ["content", "style", f"styled (content {styled.settings['content_layer']})"])
    timings["texture and style"] = time.perf_counter()
    previous, spent = start, []
    for part, moment in timings.items():
        spent.append(f"{part} {moment - previous:.0f} s")
        previous = moment
    notes.append("time: " + ", ".join(spent))
    return Section("Feature visualization", body, notes=notes)

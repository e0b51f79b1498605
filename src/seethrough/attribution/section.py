"""The attribution section of a report, for any model: every method side by side on the images.

Which methods: every registered one; the two that optimise a mask for hundreds of steps
(``compare.SLOW_METHODS``) only on small images (at most 128 px) and not in a quick run. What
they explain: the true class when ``data.labels`` is given, else the predicted one. Settings:
``compare.report_options`` (reduced from the papers' for a CPU run, stated in the notes).

Example:
    >>> import torch, torchvision
    >>> from seethrough.sections import SectionData, SectionOptions
    >>> model = torchvision.models.resnet18(num_classes=4).eval()
    >>> data = SectionData(torch.rand(2, 3, 32, 32))
    >>> section(model, data, SectionOptions(quick=True, methods=["saliency"])).title
    'Attribution'
"""
from __future__ import annotations

import torch
from torch import nn

from seethrough.attribution.compare import SLOW_METHODS, method_names, report_options, run_methods
from seethrough.attribution.figures import methods_figure
from seethrough.core import Target
from seethrough.sections import Section, SectionData, SectionOptions
from seethrough.viz.html import figure_html

#: images shown in the grid
SHOWN = 4
#: images every method runs on up to 128 px (a quarter above; half of it in a quick report); the
#: rest get the headline method
METHOD_IMAGES = 32
#: the width of the border band, as a fraction of the image side, for ``border_share``
BORDER = 0.1
#: the method whose maps the summary reads (when it ran)
HEADLINE = "gradcam"


def border_share(maps: torch.Tensor, band: float = BORDER) -> torch.Tensor:
    """Share of each map's positive energy within ``band`` of the image edge, ``(N,)``.

    A model that looks at the object puts little there; evidence on the border (frames,
    watermarks, padding) is a classic shortcut. The band covers ``1 - (1 - 2 band)^2`` of the
    image (36 % for 0.1).

    Example:
        >>> maps = torch.zeros(1, 1, 10, 10); maps[..., 0, :] = 1
        >>> border_share(maps).item()
        1.0
    """
    positive = maps.detach().clamp(min=0)[:, 0]
    height, width = positive.shape[-2:]
    dy, dx = max(1, round(band * height)), max(1, round(band * width))
    inner = positive[:, dy:height - dy, dx:width - dx].flatten(1).sum(1)
    total = positive.flatten(1).sum(1)
    return torch.where(total > 0, 1 - inner / total.clamp(min=1e-30), torch.zeros_like(total))


def headline_facts(model: nn.Module, results: dict, data: SectionData) -> dict:
    """What the summary says about where the model looks, on every image of ``data``: the share
    of the headline method's evidence on the border band, and off the object where known."""
    method = HEADLINE if HEADLINE in results else next(iter(results))
    maps = results[method][0].maps
    if len(maps) < len(data.images):
        from seethrough.attribution import attribute

        options = {k: v for k, v in results[method][0].options.items() if k == "layer"}
        maps = attribute(model, data.images, method=method, **options).maps
    facts = {"method": method, "border_share": float(border_share(maps).mean()),
             "border_area": 1 - (1 - 2 * BORDER) ** 2}
    if data.masks is not None:
        from seethrough.core.inputs import as_maps

        positive = as_maps(maps, size=data.masks.shape[-2:]).clamp(min=0)
        inside = (positive * data.masks.to(positive.device)).flatten(1).sum(1)
        total = positive.flatten(1).sum(1).clamp(min=1e-30)
        facts["off_object"] = float((1 - inside / total).mean())
        facts["object_area"] = float(data.masks.float().mean())
    return facts


def attribute_all(model: nn.Module, data: SectionData, options: SectionOptions
                  ) -> tuple[dict, list[str], SectionData]:
    """``{method: (Attribution, seconds)}`` on the first ``METHOD_IMAGES`` images (fewer when
    quick), the notes that say how, and those images' data."""
    total = len(data.images)
    count = METHOD_IMAGES if data.images.shape[-1] <= 128 else METHOD_IMAGES // 4
    data = data.first(count // 2 if options.quick else count)
    size = data.images.shape[-1]
    methods = options.methods or method_names(None, quick=options.quick)
    if options.methods is None and size <= 128 and not options.quick:
        methods = methods + list(SLOW_METHODS)
    settings = report_options(options.quick, image_size=size)
    target = "predicted"
    if data.labels is not None:  # the true class where known, else the predicted one
        target = Target(len(data.images), classes=data.labels.clone())
    results = run_methods(model, data.images, methods, target=target, options=settings,
                          progress=options.progress)
    notes = [(f"Settings reduced for a CPU run: {settings}; other methods use their papers'. "
             f"Explained: the {'true class where known, else the ' if data.labels is not None else ''}"
             "predicted class.")]
    if size > 128 and options.methods is None:
        notes.append("Left out at this image size: " + ", ".join(SLOW_METHODS) + " (slow).")
    if total > len(data.images):
        notes.append(f"Every method ran on the first {len(data.images)} of the {total} images; "
                     f"the border share of the summary is {HEADLINE}'s on all of them.")
    return results, notes, data


def grid_html(model: nn.Module, data: SectionData, results: dict) -> str:
    """The methods grid of the first images, titled with what each row explains."""
    classes = getattr(model, "class_names", None) or []
    explained = next(iter(results.values()))[0].target
    titles = list(data.names)
    if explained is not None:
        titles = [f"{name}: {classes[int(c)] if int(c) < len(classes) else int(c)}"
                  for name, c in zip(titles, explained)]
    masks = None if data.masks is None else data.masks[:SHOWN]
    caption = ("Every method, |map| scaled to its maximum, over the image"
               + ("; white: the object's true outline" if masks is not None else "") + ".")
    figure = methods_figure(data.images[:SHOWN], results, masks=masks, row_titles=titles[:SHOWN])
    return figure_html(figure, caption)


def section(model: nn.Module, data: SectionData, options: SectionOptions) -> Section:
    """Every attribution method on ``data`` (see the module docstring)."""
    results, notes, shown = attribute_all(model, data, options)
    return Section("Attribution", grid_html(model, shown, results), notes=notes,
                   facts=headline_facts(model, results, data))

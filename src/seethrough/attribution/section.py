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

from torch import nn

from seethrough.attribution.compare import SLOW_METHODS, method_names, report_options, run_methods
from seethrough.attribution.figures import methods_figure
from seethrough.sections import Section, SectionData, SectionOptions
from seethrough.viz.html import figure_html

#: images shown in the grid
SHOWN = 4


def attribute_all(model: nn.Module, data: SectionData, options: SectionOptions
                  ) -> tuple[dict, list[str]]:
    """``{method: (Attribution, seconds)}`` on ``data.images`` and the notes that say how."""
    size = data.images.shape[-1]
    methods = options.methods or method_names(None)
    if options.methods is None and size <= 128 and not options.quick:
        methods = methods + list(SLOW_METHODS)
    settings = report_options(options.quick, image_size=size)
    target = data.labels if data.labels is not None else "predicted"
    results = run_methods(model, data.images, methods, target=target, options=settings,
                          progress=options.progress)
    notes = [f"Settings reduced for a CPU run: {settings}; other methods use their papers'. "
             f"Explained: the {'true' if data.labels is not None else 'predicted'} class."]
    if size > 128 and options.methods is None:
        notes.append("Left out at this image size: " + ", ".join(SLOW_METHODS) + " (slow).")
    return results, notes


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
    results, notes = attribute_all(model, data, options)
    return Section("Attribution", grid_html(model, data, results), notes=notes)

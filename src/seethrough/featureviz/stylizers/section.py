"""The feed-forward part of the report's synthesis section: the shipped stylizers against the
optimisation, the eight-style network's grid, a strip mixing two of its styles, and instance
against batch norm trained side by side.

Example:
    >>> body, notes = stylizers_html(torch.rand(2, 3, 64, 64), torch.rand(1, 3, 64, 64), 5.0,
    ...                              norm_steps=2)   # doctest: +SKIP
"""
from __future__ import annotations

import torch

from seethrough.featureviz.figures import resized, row_html
from seethrough.featureviz.stylizers.shipped import load_stylizer
from seethrough.featureviz.stylizers.styles import style_images
from seethrough.featureviz.stylizers.training import compare_norms, stylize
from seethrough.progress import best_time

#: the two styles the interpolation strip mixes, and its mixing weights
MIX = ("stained_glass", "waves")
MIX_STEPS = (0.0, 0.25, 0.5, 0.75, 1.0)
GRID_SIZE = 128


def _one_pass_html(content: torch.Tensor, optimised_seconds: float) -> tuple[str, float]:
    single = load_stylizer("stained_glass")
    style, _ = style_images(single.styles, size=content.shape[-1])
    styled, seconds = best_time(lambda: stylize(single, content), rounds=3)
    ratio = optimised_seconds / seconds
    body = ("<h4>The same in one pass: a feed-forward stylizer (Johnson et al. 2016, instance "
            "norm)</h4><p>A transformation network trained on the perceptual loss of "
            f"MobileNetV2's features ({single.settings.get('steps', '?')} steps, card in "
            "<code>models/weights/stylizer_stained_glass.json</code>) stylizes the content in "
            f"one forward pass: {1000 * seconds:.0f} ms against {optimised_seconds:.1f} s for the "
            f"optimisation above, {ratio:.0f}x faster on this image.</p>"
            + row_html(torch.cat([content, style, styled]),
                       ["content", "style: stained glass", f"one pass, {1000 * seconds:.0f} ms"]))
    return body, ratio


def _grid_html(photos: torch.Tensor) -> str:
    eight = load_stylizer("eight_styles")
    styles, names = style_images(eight.styles, size=GRID_SIZE)
    body = (f"<h4>One network, {len(names)} styles (conditional instance norm, Dumoulin et al. "
            "2017)</h4><p>Each style is only a scale and a shift per normalized channel; the "
            "rest of the network is shared. Top row: the style images; below, each photo in "
            "every style.</p>" + row_html(styles, names, width=110))
    for photo in resized(photos, GRID_SIZE):
        made = torch.cat([stylize(eight, photo[None], style=index) for index in range(len(names))])
        body += row_html(made, names, width=110)
    first, second = (eight.styles.index(name) for name in MIX)
    strip = []
    for t in MIX_STEPS:
        weights = torch.zeros(len(names))
        weights[first], weights[second] = 1 - t, t
        strip.append(stylize(eight, resized(photos[:1], GRID_SIZE), style=weights))
    captions = [f"{1 - t:.2f} {MIX[0]} + {t:.2f} {MIX[1]}" for t in MIX_STEPS]
    return (body + "<h4>Mixing two styles: their scales and shifts interpolated</h4>"
            + row_html(torch.cat(strip), captions, width=130))


def _norms_html(steps: int) -> str:
    style, _ = style_images(["stained_glass"], size=128)
    table = compare_norms(style, size=64, batch=4, steps=steps)
    rows = "".join(f"<tr><td>{row.norm}</td><td>{row.content:.3g}</td><td>{row.style:.3g}</td>"
                   f"<td>{row.total:.3g}</td><td>{row.seconds:.1f}</td></tr>"
                   for row in table.itertuples())
    return ("<h4>Instance against batch normalization (Ulyanov et al. 2016)</h4><p>The same "
            f"stylizer trained twice for {steps} steps at 64 px, batch 4, seed 0, differing only "
            "in its normalization layers; final losses (mean of the last 10 % of steps):</p>"
            "<table><tr><th>norm</th><th>content</th><th>style</th><th>total</th><th>seconds"
            f"</th></tr>{rows}</table>")


def stylizers_html(photos: torch.Tensor, content: torch.Tensor, optimised_seconds: float, *,
                   norm_steps: int = 100) -> tuple[str, list[str]]:
    """The report HTML and notes; ``content`` is the image the optimisation stylized in
    ``optimised_seconds``, ``photos`` go through the eight-style network."""
    body, ratio = _one_pass_html(content, optimised_seconds)
    body += _grid_html(photos)
    body += _norms_html(norm_steps)
    return body, [f"feed-forward stylizer {ratio:.0f}x faster than the optimisation"]

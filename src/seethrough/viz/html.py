"""HTML building blocks of the report: figures and image arrays inlined as PNG data URIs, and
tables. Every family's section uses them; nothing here knows a model.

Example:
    >>> import numpy as np
    >>> png_data_uri(np.zeros((2, 2, 3))).startswith("data:image/png;base64,")
    True
"""
from __future__ import annotations

import base64
import html
import io

import numpy as np


def png_data_uri(figure_or_array) -> str:
    """A matplotlib Figure, or an HxW(x3) array in [0, 1] / uint8, as a PNG data URI."""
    buffer = io.BytesIO()
    if hasattr(figure_or_array, "savefig"):
        figure_or_array.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    else:
        from PIL import Image

        array = np.asarray(figure_or_array)
        if array.dtype != np.uint8:
            array = (np.clip(array, 0, 1) * 255).round().astype(np.uint8)
        Image.fromarray(array).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def figure_html(figure, caption: str = "") -> str:
    """A figure as an inline ``<figure>`` with an optional caption."""
    caption_html = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return (f'<figure><img loading="lazy" src="{png_data_uri(figure)}" alt="{html.escape(caption)}">'
            f"{caption_html}</figure>")


def image_grid_html(images, captions: list[str], width: int = 160) -> str:
    """Images (HxWx3 arrays or CHW tensors in [0, 1]) side by side with captions."""
    cells = []
    for image, caption in zip(images, captions):
        array = np.asarray(image.detach().cpu().permute(1, 2, 0) if hasattr(image, "permute") else image)
        cells.append(
            f'<div class="cell"><img loading="lazy" width="{width}" src="{png_data_uri(array)}" '
            f'alt="{html.escape(caption)}">'
            f"<div>{html.escape(caption)}</div></div>"
        )
    return '<div class="grid">' + "".join(cells) + "</div>"


def table_html(frame, float_format: str = "{:.3f}") -> str:
    """A pandas DataFrame as an HTML table (scrolls sideways on a narrow screen)."""
    table = frame.to_html(index=False, border=0, classes="table",
                          float_format=lambda v: float_format.format(v), escape=True)
    return f'<div class="scroll">{table}</div>'


def jpeg_data_uri(image, *, side: int = 96, quality: int = 80) -> str:
    """A small JPEG thumbnail (longer side ``side`` px) of a CHW tensor / HxWx3 array in [0, 1]."""
    from PIL import Image

    array = np.asarray(image.detach().cpu().permute(1, 2, 0) if hasattr(image, "permute") else image)
    if array.dtype != np.uint8:
        array = (np.clip(array, 0, 1) * 255).round().astype(np.uint8)
    picture = Image.fromarray(array)
    picture.thumbnail((side, side))
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def thumbnails_html(images, captions: list[str], *, side: int = 96) -> str:
    """A lazily loaded gallery of small JPEG thumbnails with captions (scales to 1000s)."""
    cells = [f'<div class="cell thumb"><img loading="lazy" width="{side}" height="{side}" '
             f'src="{jpeg_data_uri(image, side=side)}" alt="{html.escape(caption)}">'
             f"<div>{html.escape(caption)}</div></div>" for image, caption in zip(images, captions)]
    return '<div class="grid gallery">' + "".join(cells) + "</div>"

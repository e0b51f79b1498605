"""Building blocks of the report: sections, inline figures and tables, an atomic writer."""
from __future__ import annotations

import base64
import html
import io
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from seethrough.atomic import write_text_atomic


@dataclass
class Section:
    """A titled block of HTML; ``anchor`` is derived from the title when not given."""

    title: str
    body: str
    anchor: str = ""
    notes: list[str] = field(default_factory=list)

    def __post_init__(self):
        if not self.anchor:
            self.anchor = re.sub(r"[^a-z0-9]+", "-", self.title.lower()).strip("-")


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
    return f'<figure><img src="{png_data_uri(figure)}" alt="{html.escape(caption)}">{caption_html}</figure>'


def image_grid_html(images, captions: list[str], width: int = 160) -> str:
    """Images (HxWx3 arrays or CHW tensors in [0, 1]) side by side with captions."""
    cells = []
    for image, caption in zip(images, captions):
        array = np.asarray(image.detach().cpu().permute(1, 2, 0) if hasattr(image, "permute") else image)
        cells.append(
            f'<div class="cell"><img width="{width}" src="{png_data_uri(array)}">'
            f"<div>{html.escape(caption)}</div></div>"
        )
    return '<div class="grid">' + "".join(cells) + "</div>"


def table_html(frame, float_format: str = "{:.3f}") -> str:
    """A pandas DataFrame as an HTML table."""
    return frame.to_html(index=False, border=0, classes="table",
                         float_format=lambda v: float_format.format(v), escape=True)


def write_report(path: str | Path, title: str, sections: list[Section]) -> Path:
    """Render the sections into one HTML file, written atomically (no half-written report)."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(loader=PackageLoader("seethrough.report", "templates"),
                      autoescape=select_autoescape(["html", "j2"]))
    text = env.get_template("report.html.j2").render(
        title=title, sections=sections,
        created=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    )
    return write_text_atomic(path, text)

"""One self-contained HTML report: sections of HTML with figures inlined as PNG data URIs.

Example:
    >>> from seethrough.report import Section, write_report
    >>> path = write_report("/tmp/r.html", "Demo", [Section("Hello", "<p>world</p>")])
"""
from seethrough.report.html import (
    Section,
    figure_html,
    image_grid_html,
    png_data_uri,
    table_html,
    write_report,
)

__all__ = ["Section", "figure_html", "image_grid_html", "png_data_uri", "table_html", "write_report"]

"""One self-contained HTML report: sections of HTML with figures inlined as PNG data URIs.

Example:
    >>> from seethrough.reporting import Section, figure_html, write_report
"""
from seethrough.reporting.html import write_report
from seethrough.sections import Section, SectionData, SectionOptions
from seethrough.viz.html import figure_html, image_grid_html, png_data_uri, table_html

__all__ = ["Section", "SectionData", "SectionOptions", "figure_html", "image_grid_html",
           "png_data_uri", "table_html", "write_report"]

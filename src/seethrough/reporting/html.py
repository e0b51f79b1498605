"""The report's page: sections laid out in one self-contained HTML file, written atomically.

Example:
    >>> import tempfile, pathlib
    >>> from seethrough.sections import Section
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = write_report(pathlib.Path(folder) / "r.html", "T", [Section("A", "<p>b</p>")])
    ...     "<h2>A</h2>" in path.read_text()
    True
"""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from seethrough.atomic import write_text_atomic
from seethrough.sections import Section


def write_report(path: str | Path, title: str, sections: list[Section], *,
                 beside: str = "") -> Path:
    """Render the sections into one HTML file, written atomically (no half-written report).

    ``beside`` says what else was written next to it (e.g. "figures/ and tables/")."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    from seethrough import __version__

    env = Environment(loader=PackageLoader("seethrough.reporting", "templates"),
                      autoescape=select_autoescape(["html", "j2"]))
    text = env.get_template("report.html.j2").render(
        title=title, sections=sections, version=__version__, beside=beside,
        created=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    )
    return write_text_atomic(path, text)

"""What a report writes beside its HTML: every figure as PNG, every table as CSV, and the
results as JSON with a schema version. All of it atomically.

Example:
    >>> import tempfile, pathlib
    >>> from seethrough.sections import Section
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     written = write_outputs(pathlib.Path(folder), [Section("A", "<p>no figure</p>",
    ...                             facts={"x": 1}, tables={"t": [{"a": 1}]})], {"model": "m"})
    ...     sorted(p.relative_to(folder).as_posix() for p in written)
    ['report.json', 'tables/a-t.csv']
"""
from __future__ import annotations

import base64
import json
import re
from pathlib import Path

from seethrough.atomic import atomic_path, write_text_atomic
from seethrough.sections import Section

#: the layout of report.json that this version writes
SCHEMA_VERSION = 1

_FIGURE = re.compile(r'<img[^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


def write_outputs(out: Path, sections: list[Section], settings: dict) -> list[Path]:
    """``figures/<section>-<n>.png``, ``tables/<section>-<name>.csv`` and ``report.json``."""
    import pandas as pd

    from seethrough import __version__

    written = []
    for section in sections:
        for number, encoded in enumerate(_FIGURE.findall(section.body), 1):
            path = out / "figures" / f"{section.anchor}-{number:02d}.png"
            with atomic_path(path) as temporary:
                temporary.write_bytes(base64.b64decode(encoded))
            written.append(path)
        for name, records in section.tables.items():
            path = out / "tables" / f"{section.anchor}-{name}.csv"
            written.append(write_text_atomic(path, pd.DataFrame(records).to_csv(index=False)))
    import torch

    document = {"schema_version": SCHEMA_VERSION, "seethrough_version": __version__,
                "torch_version": torch.__version__, "settings": settings,
                "sections": [{"title": s.title, "anchor": s.anchor, "facts": s.facts,
                              "notes": s.notes} for s in sections]}
    written.append(write_text_atomic(out / "report.json", json.dumps(document, indent=1,
                                                                        default=str)))
    return written

"""The report is one self-contained HTML file, written atomically; the demo builds it and resumes."""
from __future__ import annotations

import re
import time

import numpy as np
from matplotlib.figure import Figure

from seethrough.reporting import Section, figure_html, write_report


def test_report_is_self_contained(tmp_path):
    figure = Figure()
    figure.add_subplot().plot([0, 1], [1, 0])
    path = write_report(tmp_path / "r.html", "T", [Section("A <b>", figure_html(figure, "cap"))])
    text = path.read_text()
    assert "data:image/png;base64," in text and "A &lt;b&gt;" in text
    assert not re.search(r'(src|href)="(http|//)', text)
    assert [p.name for p in tmp_path.iterdir()] == ["r.html"]  # no temporary left


def test_demo_builds_basic_sections_and_resumes(tmp_path):
    from seethrough.demo import run_demo

    keys = ["models", "predictions", "layers", "filters", "conceptworld"]
    path = run_demo(tmp_path, sections=keys, progress=False)
    text = path.read_text()
    for title in ["Models", "Predictions", "Layers", "First-layer filters", "ConceptWorld"]:
        assert f"<h2>{title}</h2>" in text
    assert "espresso" in text or text.count("data:image/png") >= 5
    start = time.perf_counter()
    run_demo(tmp_path, sections=keys, progress=False)  # cached sections: no recomputation
    assert time.perf_counter() - start < 5


def test_photo_loader_rejects_unreadable_file(tmp_path):
    import pytest

    from seethrough.data.photos import load_image
    from seethrough.errors import InputError

    bad = tmp_path / "x.jpg"
    bad.write_bytes(b"nope")
    with pytest.raises(InputError, match="cannot read image"):
        load_image(str(bad), 64)
    good = tmp_path / "ok.png"
    from PIL import Image

    Image.fromarray(np.zeros((10, 20, 3), np.uint8)).save(good)
    assert load_image(str(good), 16).shape == (3, 16, 16)


def test_sections_cached_by_other_code_are_rebuilt(tmp_path):
    import json

    from seethrough.demo import code_fingerprint, run_demo

    run_demo(tmp_path, sections=["models"], progress=False)
    cached = tmp_path / ".sections" / "models.json"
    saved = json.loads(cached.read_text())
    assert saved["code"] == code_fingerprint()
    cached.write_text(json.dumps({**saved, "code": "older", "body": "<p>stale</p>"}))
    text = run_demo(tmp_path, sections=["models"], progress=False).read_text()
    assert "stale" not in text
    assert json.loads(cached.read_text())["code"] == code_fingerprint()

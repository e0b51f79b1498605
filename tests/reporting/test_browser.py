"""The report (``seethrough.reporting.write_report``) in a real browser, headless Chromium:
images decode, the console is clean, nothing is fetched from outside the file, every
table-of-contents link lands, at a desktop and a phone width; and the checker itself catches
each of those problems on a broken page.

Screenshots go to ``$SEETHROUGH_SCREENSHOTS`` when set (to look at them), else to pytest's
``tmp_path``; their paths are printed (``pytest -s``). Skipped without chromium, chromedriver or
selenium (``make browser``), except under ``CI=true``.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torchvision

from tests.browser import check_report, require_browser

WIDTHS = [1280, 390]


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    """A report of three sections (model card, predictions, attribution) on a tiny random model."""
    require_browser()  # skip before building anything
    from seethrough.attribution.section import section as attribution_section
    from seethrough.reporting import basics, write_report
    from seethrough.sections import SectionData, SectionOptions

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=8).eval()
    data = SectionData(torch.rand(4, 3, 64, 64))
    options = SectionOptions(quick=True, methods=["saliency", "gradcam"])
    sections = [basics.model_section(model, data, options),
                basics.predictions_section(model, data, options),
                attribution_section(model, data, options)]
    return write_report(tmp_path_factory.mktemp("report") / "report.html", "Browser check", sections)


@pytest.fixture(scope="module")
def user_report(cli_user_report) -> Path:
    """``seethrough report`` of a user's model on a messy photo folder, from the command line
    (built once with the report test: tests/reporting/conftest.py)."""
    require_browser()
    out, result = cli_user_report
    assert result.returncode == 0, result.stderr[-2000:]
    return out / "report.html"


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory) -> Path:
    """The demo's report, its fast sections (the full demo runs in `make demo`)."""
    require_browser()
    from seethrough.demo import run_demo

    return run_demo(tmp_path_factory.mktemp("demo"), sections=["models", "predictions",
                                                              "conceptworld"], progress=False)


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("which", ["user_report", "demo_report"])
def test_reports_in_browser(which, width, request, screenshots):
    path = request.getfixturevalue(which)
    result = check_report(path, width, screenshots / f"{which}-{width}.png")
    print(f"\nscreenshot of {which} at {width} px: {result['screenshot']}")
    assert result["images"] >= 3 and result["links"] >= 3
    assert result["external_requests"] == []


@pytest.fixture
def screenshots(tmp_path) -> Path:
    folder = os.environ.get("SEETHROUGH_SCREENSHOTS")
    return Path(folder) if folder else tmp_path


@pytest.mark.parametrize("width", WIDTHS)
def test_report_in_browser(report, screenshots, width):
    result = check_report(report, width, screenshots / f"report-{width}.png")
    print(f"\nscreenshot at {width} px: {result['screenshot']} "
          f"({result['screenshot_height']} px high)")
    for line in result["findings"]["overflow"] + result["notes"]:
        print(f"  {line}")
    assert result["images"] >= 2  # the predictions figure and the attribution grid
    assert result["links"] == 3
    assert result["requests"] >= 1  # the file itself (and the images' data: URLs)
    assert result["external_requests"] == []
    assert not any(result["findings"][k] for k in ("images", "console", "requests", "links"))
    assert result["screenshot"].stat().st_size > 0


BROKEN = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>broken</title></head>
<body>
<nav><a href="#one">One</a> <a href="#missing">Missing</a></nav>
<section id="one"><h2>One</h2>
<img src="https://example.com/x.png" alt="external">
<img src="data:image/png;base64,AAAA" alt="broken data">
<img src="data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGM4IScHAAK2AQU0pnWqAAAAAElFTkSuQmCC" alt="fine">
<div style="width: 600px">wider than a phone</div>
<script>console.error("something went wrong")</script>
</section>
</body></html>
"""


def test_checker_catches_problems(tmp_path):
    """External image (blocked, so nothing leaves the machine), broken data image, TOC link to a
    missing id, a console error and a block wider than the page: each is a finding, and a
    strict check fails on them."""
    page = tmp_path / "broken.html"
    page.write_text(BROKEN)
    result = check_report(page, 390, tmp_path / "broken.png", strict=False)
    findings = result["findings"]
    assert result["images"] == 3 and result["links"] == 2
    assert result["external_requests"] == ["https://example.com/x.png"]
    assert any(line.startswith("blocked") and "example.com" in line for line in findings["requests"])
    assert any("request outside the file: https://example.com/x.png" in line
               for line in findings["requests"])
    assert [line.split(" ")[1] for line in findings["images"]] == ["0", "1"]  # the third is fine
    assert findings["links"] == ["TOC link 'Missing' -> #missing: no element has this id"]
    assert any("something went wrong" in line for line in findings["console"])
    assert result["overflow_px"] > 0 and "div" in findings["overflow"][0]
    with pytest.raises(AssertionError, match="example.com"):
        check_report(page, 390, tmp_path / "broken.png")

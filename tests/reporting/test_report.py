"""`seethrough report` on a user-style model and folder, as a new user runs it."""
from __future__ import annotations

import json

import pytest

from seethrough.sections import Section


def test_report_of_a_user_model_from_the_command_line(cli_user_report):
    out, result = cli_user_report
    assert result.returncode == 0, result.stderr[-2000:]
    assert "broken.jpg" in result.stderr and "fake.jpg" in result.stderr  # skipped, named
    text = (out / "report.html").read_text()
    assert text.index('id="summary"') < text.index('id="predictions"')
    assert "May it be cheating?" in text and "accuracy" in text
    document = json.loads((out / "report.json").read_text())
    assert document["schema_version"] == 1 and document["settings"]["images"] == 4
    assert document["settings"]["size"] == 64 and "input 3x64x64" in text
    assert {s["anchor"] for s in document["sections"]} >= {"summary", "predictions", "attribution"}
    assert list((out / "figures").glob("*.png")) and list((out / "tables").glob("*.csv"))
    assert not list(out.rglob("*.part"))


def test_report_in_python_resumes_section_by_section(user_files, tmp_path, monkeypatch):
    import seethrough
    from seethrough.reporting import build

    out = tmp_path / "out"
    options = dict(quick=True, sections=["predictions", "layers"], out=out, progress=False)
    seethrough.report(str(user_files / "model.pt"), user_files / "photos", **options)
    calls = []
    original = build._sections

    def counting():
        return {k: (t, lambda *a, f=f, k=k: calls.append(k) or f(*a))
                for k, (t, f) in original().items()}

    monkeypatch.setattr(build, "_sections", counting)
    seethrough.report(str(user_files / "model.pt"), user_files / "photos", **options)
    assert calls == []  # both sections came from the cache
    seethrough.report(str(user_files / "model.pt"), user_files / "photos",
                      **{**options, "sections": ["predictions", "filters"]})
    assert calls == ["filters"]


def test_bad_inputs_fail_before_any_work(user_files, tmp_path):
    import seethrough
    from seethrough.errors import InputError

    blocked = tmp_path / "file.txt"
    blocked.write_text("x")
    with pytest.raises(InputError, match="cannot write"):
        seethrough.report("nosuchmodel", user_files / "photos", out=blocked / "out")
    (tmp_path / "five.txt").write_text("a\nb\n")
    with pytest.raises(InputError, match="2 class names"):
        seethrough.report(str(user_files / "model.pt"), user_files / "photos", quick=True,
                          classes=tmp_path / "five.txt", out=tmp_path / "o", sections=["layers"])


def test_summary_flags_a_model_that_looks_at_the_border():
    from seethrough.reporting.summary import cheating_card

    honest = cheating_card({"attribution": Section("Attribution", "", facts={
        "method": "gradcam", "border_share": 0.2, "border_area": 0.36})})
    cheat = cheating_card({"attribution": Section("Attribution", "", facts={
        "method": "gradcam", "border_share": 0.8, "border_area": 0.36})})
    assert 'class="ok"' in honest and 'class="flag"' in cheat

"""`seethrough gan --quick` on the shipped generator: the whole GAN section, its facts and files."""
from __future__ import annotations

import json

from seethrough.cli import main


def test_gan_command_writes_the_section_with_its_measurements(tmp_path, capsys):
    out = tmp_path / "gan"
    assert main(["gan", "--quick", "--layers", "layer3", "--out", str(out)]) == 0
    text = (out / "gan.html").read_text()
    for heading in ("GAN Dissection", "Ablation and insertion", "Latent directions",
                    "Which layer controls what", "Inversion", "learned prior"):
        assert heading in text
    facts = json.loads((out / "report.json").read_text())["sections"][0]["facts"]
    # the claims are tested in test_gan.py; here: the section measured each of them
    assert facts["frechet_distance"] < facts["frechet_distance_noise"] / 3
    assert "What it draws and what it omits" in text and "static" in facts["coverage_dropped"]
    assert facts["ablation_removed"] and facts["insertion"]["concept"] in facts["ablation_removed"]
    assert set(facts["boundaries"]) == {"colour:red", "colour:blue"}
    assert len(facts["layer_control"]) == 1 and len(facts["prior"]) == 3
    mse = facts["inversion_mse"]
    assert mse["generated / encoder / prior"] < mse["photos / encoder / prior"]
    assert text.count("data:image/png;base64,") >= 8
    assert list((out / "figures").glob("*.png")) and (out / "report.json").is_file()


def test_gan_command_refuses_a_classifier(tmp_path, capsys):
    assert main(["gan", "--generator", "conceptnet", "--quick", "--out", str(tmp_path / "x")]) == 2
    assert "is not a generator" in capsys.readouterr().err

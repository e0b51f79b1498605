"""`seethrough gan --quick` on the shipped generator: the whole GAN section, its facts and files."""
from __future__ import annotations

import json

from seethrough.cli import main


def test_gan_command_writes_the_section_with_its_measurements(tmp_path, capsys):
    out = tmp_path / "gan"
    assert main(["gan", "--quick", "--out", str(out)]) == 0
    text = (out / "gan.html").read_text()
    for heading in ("GAN Dissection", "Ablation and insertion", "Latent directions",
                    "Which layer controls what", "Inversion", "learned prior"):
        assert heading in text
    facts = json.loads((out / "report.json").read_text())["sections"][0]["facts"]
    assert facts["frechet_distance"] < facts["frechet_distance_noise"] / 5
    assert max(facts["ablation_removed"].values()) >= 0.5
    assert facts["insertion"]["inside_after"] > facts["insertion"]["inside_before"]
    assert min(facts["boundaries"].values()) > 0.7
    mse = facts["inversion_mse"]
    assert mse["generated / random / prior"] < mse["photos / random / prior"]
    assert text.count("data:image/png;base64,") >= 8
    assert list((out / "figures").glob("*.png")) and (out / "report.json").is_file()


def test_gan_command_refuses_a_classifier(tmp_path, capsys):
    assert main(["gan", "--generator", "conceptnet", "--quick", "--out", str(tmp_path / "x")]) == 2
    assert "is not a generator" in capsys.readouterr().err

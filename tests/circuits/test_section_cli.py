"""The circuits and universality sections, and `seethrough circuits` / `seethrough compare`."""
from __future__ import annotations

import json

import torch
import torchvision

from seethrough.sections import SectionData, SectionOptions


def test_sections_on_a_random_resnet(unchanged):
    from seethrough.circuits.section import section, universality_section

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=4).eval()
    data = SectionData(torch.rand(8, 3, 64, 64))
    options = SectionOptions(quick=True, progress=False)
    with unchanged(model):
        made = section(model, data, options)
        alike = universality_section(model, data, options)
    assert made.body.count("data:image/png;base64,") == 2  # a circuit and the edit's effect
    assert made.facts["edit_channels"] == 51 and "own predictions" in made.body
    assert "edit_effect" in made.tables
    assert alike.body.count("data:image/png;base64,") == 1  # CKA of the model with itself
    cells = alike.tables["cka itself"]
    assert all(abs(row["cka"] - 1) < 1e-6 for row in cells if row["layer_a"] == row["layer_b"])


def test_circuits_command_with_the_cue_and_one_unit(tmp_path, capsys):
    from seethrough.cli import main

    out = tmp_path / "cue"
    assert main(["circuits", "conceptnet_cheater", "--conceptworld", "32", "--cue", "--quick",
                 "--out", str(out)]) == 0
    text = (out / "circuits.html").read_text()
    assert "Switching off a shortcut" in text and "random" in text
    facts = json.loads((out / "report.json").read_text())["sections"][0]["facts"]
    assert facts["cue_accuracy_quarter_off"] > facts["cue_accuracy_before"]
    one = tmp_path / "one"
    assert main(["circuits", "conceptnet", "--conceptworld", "4", "--layer", "features.block4",
                 "--unit", "3", "--quick", "--out", str(one)]) == 0
    assert "features.block4 unit 3" in (one / "circuits.html").read_text()
    assert main(["circuits", "conceptnet", "--conceptworld", "4", "--layer", "features.block4",
                 "--out", str(one)]) == 2
    assert "--layer and --unit go together" in capsys.readouterr().err


def test_compare_command_on_two_seeds(tmp_path):
    from seethrough.cli import main

    out = tmp_path / "compare"
    assert main(["compare", "conceptnet", "conceptnet_seed1", "--conceptworld", "200",
                 "--quick", "--out", str(out)]) == 0
    text = (out / "compare.html").read_text()
    assert "Linear CKA" in text and "Unit matching" in text and "dissection label" in text
    facts = json.loads((out / "report.json").read_text())["sections"][0]["facts"]
    assert facts["cka_same_layer conceptnet_seed1"] in ("4/5", "5/5")
    assert facts["matched_share conceptnet_seed1"] > 0.9
    assert list((out / "tables").glob("*.csv"))

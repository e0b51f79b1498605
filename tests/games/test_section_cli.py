"""The games CLI writes its report (small sizes: the numbers are tested in test_games)."""
from __future__ import annotations

import json

import torch


def test_cli_writes_the_games_report(tmp_path, monkeypatch, capsys):
    import seethrough.games.section as games_section
    from seethrough.cli import main

    torch.set_num_threads(1)
    monkeypatch.setattr(games_section, "sizes", lambda options: {
        "train_pool": 200, "val_pool": 100, "probe_images": 120, "speaker_steps": 4,
        "speaker_batch": 16, "episodes": 6, "emergent_steps": 5, "emergent_games": 200})
    out = tmp_path / "games"
    assert main(["games", "--quick", "--layers", "features.block2", "--out", str(out)]) == 0
    assert "games report written" in capsys.readouterr().out
    assert (out / "games.html").stat().st_size > 10_000
    report = json.loads((out / "report.json").read_text())
    facts = report["sections"][0]["facts"]
    assert set(facts["accuracy_no_practice"]) == {"fixed", "adaptive", "no embedding"}
    tables = {p.name for p in (out / "tables").iterdir()}
    assert {"reference-games-attribute_use.csv", "reference-games-probe.csv",
            "reference-games-emergent_mi.csv", "reference-games-network_read.csv"} <= tables
    assert "network_read_spearman" in facts
    assert len(list((out / "figures").iterdir())) >= 2


def test_cli_rejects_a_model_that_is_not_there(tmp_path, capsys):
    from seethrough.cli import main

    assert main(["games", "--model", "nosuchmodel", "--quick", "--out", str(tmp_path / "g")]) == 2
    assert "nosuchmodel" in capsys.readouterr().err


TINY = {"train_pool": 200, "val_pool": 100, "probe_images": 120, "speaker_steps": 4,
        "speaker_batch": 16, "episodes": 6, "emergent_steps": 5, "emergent_games": 200}


def test_the_section_runs_on_any_64_px_model_and_leaves_it_unchanged(monkeypatch, unchanged):
    import torchvision

    import seethrough.games.section as games_section
    from seethrough.sections import SectionData, SectionOptions

    torch.set_num_threads(1)
    monkeypatch.setattr(games_section, "sizes", lambda options: TINY)
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=8).train()
    with unchanged(model):
        made = games_section.section(model, SectionData(torch.rand(2, 3, 64, 64)),
                                     SectionOptions(quick=True))
    assert "network layer4" in made.body and made.body.count("data:image/png;base64,") == 2
    assert model.training


def test_a_model_of_other_inputs_plays_without_network_listeners(monkeypatch):
    import seethrough.games.section as games_section
    from seethrough.models import load_model
    from seethrough.sections import SectionData, SectionOptions

    torch.set_num_threads(1)
    monkeypatch.setattr(games_section, "sizes", lambda options: TINY)
    model = load_model("mobilenet_v2")  # 224 px
    made = games_section.section(model, SectionData(torch.rand(1, 3, 224, 224)),
                                 SectionOptions(quick=True))
    assert any("no network listeners" in note for note in made.notes)
    assert "network " not in made.body


def test_an_unwritable_out_is_one_line(tmp_path, capsys):
    from seethrough.cli import main

    blocker = tmp_path / "file.txt"
    blocker.write_text("a file")
    assert main(["games", "--model", "nosuchmodel", "--out", str(blocker / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("seethrough games: error: cannot write to ")

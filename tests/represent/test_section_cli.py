"""The representations report section and `seethrough represent`."""
import json

import pandas as pd
import pytest
import torch
import torchvision
from safetensors.torch import load_file

import seethrough
from seethrough.cli import main
from seethrough.represent.section import section
from seethrough.sections import SectionData, SectionOptions


def test_section_on_a_random_model_of_few_images_says_what_it_left_out():
    model = torchvision.models.resnet18(num_classes=3).eval()
    result = section(model, SectionData(torch.rand(8, 3, 64, 64)), SectionOptions(quick=True))
    assert result.title == "Representations"
    assert any("no intrinsic dimension" in note for note in result.notes)
    assert any("no maps or neighbours" in note for note in result.notes)
    assert "Top patches on the true receptive field" in result.body


@pytest.mark.slow
def test_section_on_conceptnet_with_a_concept_dataset():
    from seethrough.reporting.build import represent_section

    world = seethrough.ConceptWorld("val", length=48)
    model = seethrough.load_model("conceptnet")
    data = SectionData(torch.rand(2, 3, 64, 64), concepts=world,
                       extra={"dataset": world,
                              "compare": {"shuffled": seethrough.load_model("conceptnet_shuffled")}})
    result = represent_section(model, data, SectionOptions(quick=True))
    assert {"dimension this model", "dimension shuffled"} <= set(result.tables)
    rows = pd.DataFrame(result.tables["dimension this model"])
    assert rows.layer.tolist()[0] == "input" and rows.layer.tolist()[-1] == "fc"
    assert result.facts["units"] == 128 and 0 <= result.facts["polysemantic_units"] <= 128
    for heading in ("Maps of the deepest layer", "Nearest neighbours", "Activation grid",
                    "Weights beyond the first layer", "Polysemantic units"):
        assert heading in result.body


def test_cli_writes_every_view(tmp_path, capsys):
    out = tmp_path / "rep"
    assert main(["represent", "conceptnet", "--conceptworld", "60", "--layer",
                 "features.block4", "--map", "pca", "--out", str(out)]) == 0
    saved = load_file(out / "features.safetensors")
    assert saved["features"].shape == (60, 128) and saved["classes"].shape == (60,)
    table = pd.read_csv(out / "map-pca.csv")
    assert len(table) == 60 and {"x", "y", "class"} <= set(table.columns)
    neighbours = pd.read_csv(out / "neighbors.csv")
    assert len(neighbours) == 6 * 5
    dimension = pd.read_csv(out / "dimension.csv", index_col=0)
    assert list(dimension.columns) == ["twonn", "mle", "pca"] and dimension.index[0] == "features.block1"
    for name in ("map-pca.png", "neighbors.png", "dimension.png", "activations.png",
                 "patches.png", "kernel.png"):
        assert (out / name).stat().st_size > 1000
    patches = seethrough.load_result(out / "patches")
    assert patches.layer == "features.block4" and patches.crops.shape[:2] == (128, 8)
    assert json.loads((out / "patches" / "result.json").read_text())["type"] == "Patches"


def test_cli_bad_inputs_are_one_line_errors(tmp_path, capsys):
    assert main(["represent", "conceptnet", "--out", str(tmp_path / "o")]) == 2
    assert "give image files or folders, or --conceptworld N" in capsys.readouterr().err
    assert main(["represent", "conceptnet", "--conceptworld", "4", "--k", "5",
                 "--out", str(tmp_path / "o")]) == 2
    assert "--k 5 needs more than 5 images" in capsys.readouterr().err

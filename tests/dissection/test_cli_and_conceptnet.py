"""The `seethrough dissect` command, and dissection of the bundled ConceptNet."""
from __future__ import annotations

import torch

from seethrough.cli import main
from seethrough.data import ConceptWorld
from seethrough.dissection import dissect
from tests.dissection.test_run import Frozen


def test_cli_runs_an_experiment_and_draws_it(tmp_path, capsys):
    torch.manual_seed(0)  # the random-weight model the command builds
    out = tmp_path / "out"
    code = main(["dissect", "torchvision:resnet18", "--layers", "layer2", "--images", "16",
                 "--size", "64", "--batch-size", "16", "--experiment", "pca",
                 "--out", str(out)])
    assert code == 0
    for name in ("units.csv", "detectors.csv", "detectors.png", "pca.png", "dissection/result.json"):
        assert (out / name).is_file(), name
    assert "colour" in capsys.readouterr().out


def test_cli_bad_layer_is_one_line(tmp_path, capsys):
    code = main(["dissect", "torchvision:resnet18", "--layers", "layer9", "--images", "4",
                 "--size", "64", "--out", str(tmp_path)])
    assert code == 2
    assert "no layer named 'layer9'" in capsys.readouterr().err


def test_conceptnet_last_layers_hold_colour_and_shape_detectors():
    from seethrough.models import load_model

    model = load_model("conceptnet")
    world = Frozen(ConceptWorld("val", length=100, size=64))
    result = dissect(model, ["features.block4", "features.block5"], world, batch_size=50,
                     progress=False)
    frame = result.to_frame()
    best = frame.groupby(["layer", "category"]).iou.max()
    # measured on 100 images: block5 colour 0.19, shape 0.29; block4 colour 0.06, shape 0.21
    assert best["features.block5", "colour"] > 0.1 and best["features.block5", "shape"] > 0.15
    assert best["features.block4", "colour"] > 0.04 and best["features.block4", "shape"] > 0.1
    counts = result.unique_detectors().set_index(["layer", "category"]).unique_detectors
    assert counts["features.block5", "colour"] >= 2
    assert counts["features.block5", "shape"] >= 4

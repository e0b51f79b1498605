"""Every result type follows one protocol: save / load a folder, to_frame, plot, notebook HTML."""
from __future__ import annotations

import functools
import json
import warnings

import pandas as pd
import pytest
import torch
import torchvision
from matplotlib.figure import Figure
from PIL import Image

import seethrough
from seethrough.errors import InputError
from seethrough.results import SCHEMA_VERSION, Result, json_safe, load_result


@functools.cache
def _model():
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=4).eval()


@functools.cache
def _images():
    return torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@functools.cache
def _world():
    return seethrough.ConceptWorld("val", length=24)


@functools.cache
def _conceptnet():
    return seethrough.load_model("conceptnet")


def _attribution():
    return seethrough.attribute(_model(), _images(), method="gradcam")


def _channel_scores():
    from seethrough.attribution.channels import channel_attribution

    return channel_attribution(_model(), _images(), "layer4", target=1)


def _scores():
    masks = torch.zeros(2, 32, 32, dtype=torch.bool)
    masks[:, 8:20, 8:20] = True
    return seethrough.evaluate(_model(), _images(), _attribution(), masks=masks,
                               metrics=["deletion", "pointing_game"], step=256)


def _randomization():
    from seethrough.evaluation import model_randomization

    return model_randomization(_model(), _images(), "saliency", layers=["fc", "layer4"])


def _data_randomization():
    from seethrough.evaluation import data_randomization

    torch.manual_seed(1)
    return data_randomization(_model(), _model(), _images(), ["saliency", "gradcam"])


def _visualization():
    return seethrough.visualize(_model(), seethrough.objectives.channel("layer2", [0, 1]),
                                steps=2, size=32)


def _dissection():
    return seethrough.dissect(_conceptnet(), ["features.block3"], _world(), progress=False)


def _net2vec():
    from seethrough.concepts.net2vec import net2vec

    return net2vec(_conceptnet(), "features.block3", _world(),
                   seethrough.ConceptWorld("val", length=16), concepts=["red", "circle"], epochs=1)


def _tcav():
    from seethrough.concepts.tcav import tcav

    with warnings.catch_warnings():  # liblinear on a handful of examples
        warnings.simplefilter("ignore")
        return tcav(_conceptnet(), "features.block3", _world(), concepts=["sky"], classes=[0, 1],
                    runs=2, examples=8, class_examples=8)


def _concept_pca():
    from seethrough.dissection.experiments import concept_pca

    return concept_pca(_conceptnet(), "features.block3", _world(), "red")


def _layer_table():
    return seethrough.layers(_model(), (3, 32, 32))


BUILD = {
    "Attribution": _attribution, "ChannelScores": _channel_scores, "Scores": _scores,
    "Randomization": _randomization, "DataRandomization": _data_randomization,
    "Visualization": _visualization,
    "Dissection": _dissection, "Net2VecResult": _net2vec, "TCAVResult": _tcav,
    "ConceptPCA": _concept_pca, "LayerTable": _layer_table,
}


@functools.cache
def build(kind: str) -> Result:
    result = BUILD[kind]()
    assert type(result).__name__ == kind and isinstance(result, Result)
    return result


def assert_same(loaded: Result, original: Result) -> None:
    assert type(loaded) is type(original)
    pd.testing.assert_frame_equal(loaded.to_frame(), original.to_frame())
    mine, theirs = original._tensors(), loaded._tensors()
    assert list(theirs) == list(mine)
    for key, tensor in mine.items():
        assert theirs[key].dtype == tensor.dtype, key
        torch.testing.assert_close(theirs[key], tensor.detach().cpu(), rtol=0, atol=0,
                                   equal_nan=True, msg=key)
    assert (json.dumps(json_safe(loaded._settings()), sort_keys=True)
            == json.dumps(json_safe(original._settings()), sort_keys=True))


@pytest.mark.parametrize("kind", list(BUILD))
def test_save_load_round_trip(kind, tmp_path):
    original = build(kind)
    folder = original.save(tmp_path / "saved")
    assert folder == tmp_path / "saved"
    metadata = json.loads((folder / "result.json").read_text())
    assert metadata["schema_version"] == SCHEMA_VERSION == 1
    assert metadata["type"] == kind
    assert metadata["seethrough_version"] == seethrough.__version__
    assert metadata["torch_version"] == torch.__version__
    assert isinstance(metadata["settings"], dict)
    table = pd.read_csv(folder / "table.csv")
    assert list(table.columns) == list(original.to_frame().columns)
    assert len(table) == len(original.to_frame())
    with Image.open(folder / "figure.png") as image:
        image.load()
        assert image.size[0] > 10 and image.size[1] > 10
    assert (folder / "tensors.safetensors").is_file()
    assert not list(folder.glob(".*.part")), "a temporary file was left behind"
    assert_same(type(original).load(folder), original)
    assert_same(load_result(folder), original)


@pytest.mark.parametrize("kind", list(BUILD))
def test_plot_and_notebook_html(kind):
    result = build(kind)
    assert isinstance(result.plot(), Figure)
    text = result._repr_html_()
    assert "<table" in text and "data:image/png;base64," in text
    assert kind.split("Result")[0][:4] in text  # the title names the type


@pytest.mark.parametrize("kind", ["Attribution", "Randomization", "LayerTable"])
def test_load_refuses_foreign_unknown_and_missing_folders(kind, tmp_path):
    other = "Scores" if kind != "Scores" else "Attribution"
    foreign = build(other).save(tmp_path / "foreign")
    cls = type(build(kind))
    with pytest.raises(InputError, match=f"holds a {other}, not a {kind}"):
        cls.load(foreign)
    saved = build(kind).save(tmp_path / "mine")
    metadata = json.loads((saved / "result.json").read_text())
    (saved / "result.json").write_text(json.dumps({**metadata, "schema_version": 99}))
    with pytest.raises(InputError, match="schema_version 99"):
        cls.load(saved)
    with pytest.raises(InputError, match="no result.json"):
        cls.load(tmp_path / "nothing here")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "result.json").write_text("{not json")
    with pytest.raises(InputError, match="cannot read"):
        cls.load(tmp_path / "broken")


def test_attribution_keeps_raw_and_target_but_not_goal(tmp_path):
    original = build("Attribution")
    assert original.raw is not None and original.target is not None and original.goal is not None
    loaded = type(original).load(original.save(tmp_path))
    assert loaded.goal is None
    assert torch.equal(loaded.raw, original.raw) and torch.equal(loaded.target, original.target)
    assert loaded.method == "gradcam" and loaded.options == json_safe(original.options)


def test_callable_options_are_saved_by_name(tmp_path):
    from seethrough.attribution.result import Attribution

    def my_baseline(x):
        return x

    result = Attribution(torch.rand(1, 1, 4, 4), method="custom",
                         options={"baseline": my_baseline, "window": (2, 2),
                                  "mean": torch.tensor([0.5, 0.25])})
    loaded = Attribution.load(result.save(tmp_path))
    assert loaded.options == {"baseline": my_baseline.__qualname__, "window": [2, 2],
                              "mean": [0.5, 0.25]}
    assert loaded.raw is None and loaded.target is None


def test_scores_without_targets(tmp_path):
    from seethrough.evaluation import Scores

    scores = Scores({"mask_iou": torch.tensor([0.5, float("nan")]), "deletion": torch.rand(2)},
                    None, "saliency", {"mask_iou": True, "deletion": False})
    loaded = Scores.load(scores.save(tmp_path))
    assert loaded.targets is None and list(loaded.values) == ["mask_iou", "deletion"]
    assert loaded.higher_is_better == scores.higher_is_better
    pd.testing.assert_frame_equal(loaded.to_frame(), scores.to_frame())


def test_visualization_writes_one_png_per_image(tmp_path):
    result = build("Visualization")
    folder = result.save(tmp_path)
    for index in range(len(result.images)):
        with Image.open(folder / f"image_{index:03d}.png") as image:
            assert image.size == (32, 32) and image.mode == "RGB"
    loaded = type(result).load(folder)
    assert loaded.history == result.history and loaded.settings == result.settings
    assert loaded.objective == result.objective


def test_dissection_keeps_counts_and_top_images(tmp_path):
    result = build("Dissection")
    folder = result.save(tmp_path)
    assert (folder / "detectors.csv").is_file()
    loaded = type(result).load(folder)
    for name, layer in result.layers.items():
        other = loaded.layers[name]
        assert torch.equal(other.thresholds, layer.thresholds)
        assert torch.equal(loaded.iou(name), result.iou(name))
        assert torch.equal(other.top.indices, layer.top.indices) and other.top.k == layer.top.k
        assert other.counter.images == layer.counter.images
        assert other.label_size == layer.label_size and isinstance(other.label_size, tuple)
    assert loaded.vocabulary.names == result.vocabulary.names
    assert (loaded.iou_threshold, loaded.union, loaded.options) == \
        (result.iou_threshold, result.union, result.options)
    pd.testing.assert_frame_equal(loaded.unique_detectors(), result.unique_detectors())
    assert "layer/features.block3/intersection" in result._tensors()


def test_concept_pca_and_layer_table_details(tmp_path):
    pca = build("ConceptPCA")
    loaded = type(pca).load(pca.save(tmp_path / "pca"))
    assert (tmp_path / "pca" / "explained.csv").is_file()
    assert (loaded.top_unit, loaded.positions) == (pca.top_unit, pca.positions)
    table = build("LayerTable")
    again = type(table).load(table.save(tmp_path / "layers"))
    assert again.rows == table.rows
    assert all(isinstance(row.output_shape, tuple) for row in again.rows if row.output_shape)


def test_tcav_rows_round_trip(tmp_path):
    result = build("TCAVResult")
    assert type(result).load(result.save(tmp_path)).rows == result.rows

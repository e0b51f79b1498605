import pytest
from PIL import Image

import seethrough.cli
from seethrough.cli import main


@pytest.fixture(autouse=True)
def only_visualize(monkeypatch):
    """Test this command alone, through the real dispatcher and its error handling."""
    monkeypatch.setattr(seethrough.cli, "COMMANDS", ["visualize"])


def test_visualize_channels_writes_pngs(tmp_path, capsys):
    code = main(["visualize", "torchvision:resnet18", "--layer", "layer1", "--channels", "0", "3",
                 "--steps", "2", "--size", "32", "--out", str(tmp_path)])
    assert code == 0
    files = sorted(p.name for p in tmp_path.glob("*.png"))
    assert files == ["layer1_channel_0.png", "layer1_channel_3.png"]
    assert Image.open(tmp_path / files[0]).size == (32, 32)
    assert not list(tmp_path.glob(".*part"))


def test_visualize_deepdream_from_an_image(tmp_path):
    source = tmp_path / "in.png"
    Image.new("RGB", (40, 40), (120, 60, 30)).save(source)
    code = main(["visualize", "torchvision:resnet18", "--mode", "deepdream", "--layer", "layer1",
                 "--image", str(source), "--size", "32", "--out", str(tmp_path / "out")])
    assert code == 0 and (tmp_path / "out" / "deepdream.png").is_file()


def test_bad_requests_exit_2_with_one_line(tmp_path, capsys):
    assert main(["visualize", "torchvision:resnet18", "--layer", "layer9", "--channels", "0",
                 "--out", str(tmp_path)]) == 2
    assert "no layer named" in capsys.readouterr().err
    assert main(["visualize", "torchvision:resnet18", "--out", str(tmp_path)]) == 2
    assert main(["visualize", "torchvision:resnet18", "--mode", "style", "--image", "x.png",
                 "--out", str(tmp_path)]) == 2


def test_visualize_facets_and_texture_sampling(tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(8):
        colour = (200, 40, 40) if index % 2 else (40, 40, 200)
        Image.new("RGB", (24, 24), colour).save(folder / f"{index}.png")
    code = main(["visualize", "torchvision:resnet18", "--mode", "facets", "--class", "3", str(folder),
                 "--facets", "2", "--steps", "3", "--size", "32", "--out", str(tmp_path / "facets")])
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "facets").glob("*.png")) == ["class_3_facet_0.png",
                                                                          "class_3_facet_1.png"]
    code = main(["visualize", "torchvision:resnet18", "--mode", "texture-sampling", str(folder / "0.png"),
                 "--size", "16", "--out", str(tmp_path / "grown")])
    assert code == 0 and Image.open(tmp_path / "grown" / "texture_sampled.png").size == (16, 16)
    assert main(["visualize", "torchvision:resnet18", "--mode", "facets", "--class", "1", "2",
                 str(folder), "--out", str(tmp_path)]) == 2
    assert "one unit" in capsys.readouterr().err


def test_stylize_one_style_a_mix_and_bad_names(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(seethrough.cli, "COMMANDS", ["stylize"])
    source = tmp_path / "in.png"
    Image.new("RGB", (40, 30), (120, 60, 30)).save(source)
    assert main(["stylize", str(source), "--style", "waves", "--size", "32", "--out", str(tmp_path / "a")]) == 0
    assert Image.open(tmp_path / "a" / "styled.png").size == (32, 32)
    assert main(["stylize", str(source), "--style", "waves:0.5", "hubble:0.5", "--size", "32",
                 "--out", str(tmp_path / "b")]) == 0
    assert main(["stylize", str(source), "--style", "monet", "--out", str(tmp_path / "c")]) == 2
    assert "no style 'monet'" in capsys.readouterr().err
    assert main(["stylize", "--out", str(tmp_path / "d")]) == 2


def test_stylize_trains_a_stylizer_and_uses_it(tmp_path, monkeypatch):
    monkeypatch.setattr(seethrough.cli, "COMMANDS", ["stylize"])
    style = tmp_path / "dots.png"
    Image.new("RGB", (64, 64), (20, 160, 220)).save(style)
    assert main(["stylize", "--train", str(style), "--steps", "1", "--out", str(tmp_path / "mine")]) == 0
    assert (tmp_path / "mine" / "stylizer_dots.json").is_file()
    assert main(["stylize", str(style), "--stylizer", str(tmp_path / "mine" / "stylizer_dots"),
                 "--size", "32", "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "styled.png").is_file()

"""The command line: help everywhere, layer table, one-line errors with exit code 2."""
from __future__ import annotations

import subprocess
import sys

import pytest

from seethrough.cli import COMMANDS, main


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "seethrough", *args], capture_output=True,
                          text=True, timeout=300)


def test_help_for_every_subcommand(capsys):
    for command in [None, *COMMANDS]:
        with pytest.raises(SystemExit) as exit_:
            main([command.replace("_", "-"), "--help"] if command else ["--help"])
        assert exit_.value.code == 0
        assert "usage: seethrough" in capsys.readouterr().out


def test_layers_of_a_torchvision_model():
    result = run("layers", "torchvision:resnet18")
    assert result.returncode == 0, result.stderr
    assert "net.layer4.1.conv2" in result.stdout and "Conv2d" in result.stdout
    assert "512x7x7" in result.stdout


@pytest.mark.parametrize(
    "args, words",
    [
        (["layers", "nosuchmodel"], "unknown model 'nosuchmodel'"),
        (["layers", "torchvision:resnet18", "--weights", "{bad}"], "corrupt"),
        (["layers", "torchvision:resnet18", "--weights", "/no/such/file.pth"], "does not exist"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path, args, words):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"\x00garbage")
    result = run(*[a.replace("{bad}", str(bad)) for a in args])
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in result.stderr


def test_unknown_subcommand_exits_non_zero():
    result = run("frobnicate")
    assert result.returncode != 0 and "invalid choice" in result.stderr


# -- options and positionals in any order; folders; an unwritable --out ----------------------

def parsed(argv: list[str]) -> dict:
    from seethrough.cli import build_parser

    values = vars(build_parser().parse_args(argv))
    values.pop("run")
    return values


@pytest.mark.parametrize("orders", [
    [["attribute", "torchvision:mobilenet_v2", "--weights", "w.pth", "a.jpg", "b.jpg"],
     ["attribute", "torchvision:mobilenet_v2", "a.jpg", "b.jpg", "--weights", "w.pth"],
     ["attribute", "--weights", "w.pth", "torchvision:mobilenet_v2", "a.jpg", "b.jpg"],
     ["attribute", "torchvision:mobilenet_v2", "a.jpg", "--weights", "w.pth", "b.jpg"]],
    [["visualize", "m", "--layer", "L", "--channels", "0", "1", "--out", "o"],
     ["visualize", "--channels", "0", "1", "m", "--layer", "L", "--out", "o"],
     ["visualize", "--out", "o", "--channels", "0", "1", "m", "--layer", "L"]],
    [["visualize", "m", "--mode", "invert", "--layer", "L", "a.jpg", "photos", "--out", "o"],
     ["visualize", "--mode", "invert", "m", "a.jpg", "--layer", "L", "photos", "--out", "o"]],
    [["dissect", "conceptnet", "--layers", "a", "b", "--out", "o"],
     ["dissect", "--out", "o", "conceptnet", "--layers", "a", "b"],
     ["dissect", "--layers", "a", "b", "--out", "o", "--", "conceptnet"]],
    [["layers", "conceptnet", "--size", "32"], ["layers", "--size", "32", "conceptnet"]],
])
def test_options_and_positionals_in_any_order(orders):
    first = parsed(orders[0])
    assert all(parsed(argv) == first for argv in orders[1:])


def test_a_list_option_keeps_its_checks_when_nothing_follows(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--sections", "models", "nosuchsection"])
    assert "invalid choice: 'nosuchsection'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["visualize", "m", "--channels", "--out", "o"])
    assert "--channels: expected at least one argument" in capsys.readouterr().err


def photo_folder(root):
    from PIL import Image

    rng = __import__("numpy").random.default_rng(0)
    (root / "sub").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype="uint8")).save(root / "a.png")
    Image.fromarray(rng.integers(0, 256, (48, 80, 3), dtype="uint8")).save(root / "sub" / "b.jpg")
    return root


def scores_without_timing(folder):
    import pandas as pd

    return pd.read_csv(folder / "scores.csv").drop(columns="seconds_per_image")


def test_attribute_gives_the_same_result_whatever_the_order(tmp_path, capsys):
    photos = photo_folder(tmp_path / "photos")
    a, b = str(photos / "a.png"), str(photos / "sub" / "b.jpg")
    options = ["--methods", "saliency", "--steps", "4"]
    runs = {
        "after": ["attribute", "conceptnet", a, b, *options, "--out", str(tmp_path / "after")],
        "before": ["attribute", *options, "--out", str(tmp_path / "before"), "conceptnet", a, b],
        "between": ["attribute", "--methods", "saliency", "conceptnet", a, "--steps", "4", b,
                    "--out", str(tmp_path / "between")],
        "folder": ["attribute", "conceptnet", "--out", str(tmp_path / "folder"), str(photos), *options],
    }
    for argv in runs.values():
        assert main(argv) == 0, capsys.readouterr().err
    reference = scores_without_timing(tmp_path / "after")
    for name in ("before", "between", "folder"):
        assert scores_without_timing(tmp_path / name).equals(reference), name
    png = (tmp_path / "after" / "attribution.png").read_bytes()
    assert all((tmp_path / name / "attribution.png").read_bytes() == png for name in ("before", "between"))


def test_attribute_skips_unreadable_files_with_a_warning_and_a_count(tmp_path, capsys):
    photos = photo_folder(tmp_path / "photos")
    (photos / "broken.jpg").write_text("not a picture")
    assert main(["attribute", "conceptnet", str(photos), "--methods", "saliency", "--no-scores",
                 "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == "seethrough attribute: warning: skipped broken.jpg: not an image"
    assert err[-1] == ("seethrough attribute: 3 files: 2 images (1 resized and centre-cropped to 64 x 64), 1 skipped "
                       "(broken.jpg: not an image)")
    assert (tmp_path / "out" / "attribution.png").exists()


def test_visualize_takes_a_folder_of_images(tmp_path, capsys):
    photos = photo_folder(tmp_path / "photos")
    assert main(["visualize", "conceptnet", "--mode", "invert", str(photos), "--layer",
                 "features.block2", "--steps", "2", "--out", str(tmp_path / "out")]) == 0, \
        capsys.readouterr().err
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["inversion_features.block2_a.png", "inversion_features.block2_b.png"]


def test_an_unwritable_out_is_one_line_before_the_model_loads(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file, not a folder")
    photos = photo_folder(tmp_path / "photos")
    result = run("attribute", "nosuchmodel", str(photos), "--out", str(blocker / "out"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].startswith("seethrough attribute: error: cannot write to ")
    assert lines[0].endswith(f"{blocker} is a file, not a folder; choose another --out")


@pytest.mark.parametrize("argv", [
    ["visualize", "nosuchmodel", "--class", "1", "--out", "{out}"],
    ["dissect", "nosuchmodel", "--out", "{out}"],
    ["demo", "--out", "{out}"],
    ["train", "--out", "{out}/model"],
    ["layers", "nosuchmodel", "--csv", "{out}/layers.csv"],
    ["attribute", "nosuchmodel", "--conceptworld", "2", "--out", "{file}"],
    ["findings", "nosuchmodel", "--conceptworld", "2", "--out", "{file}"],
    ["gan", "--generator", "nosuchmodel", "--out", "{out}"],
    ["train-gan", "--out", "{out}/gan"],
])
def test_every_writing_command_checks_its_output_folder_first(tmp_path, capsys, argv):
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file, not a folder")
    argv = [a.format(out=blocker / "out", file=blocker) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"seethrough {argv[0]}: error: cannot write to ")
    assert "is a file, not a folder; choose another --" in err[0] and "unknown model" not in err[0]

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
            main([command, "--help"] if command else ["--help"])
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

"""The user-style files every report test starts from, and one `seethrough report` of them
from the command line, built once for the report and browser tests."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image


def _photo(size=(80, 60), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)


@pytest.fixture(scope="session")
def user_files(tmp_path_factory):
    """A torchvision model saved whole, its weights as a state dict, and a messy photo folder."""
    root = tmp_path_factory.mktemp("user")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=5).eval()
    torch.save(model, root / "model.pt")
    torch.save(model.state_dict(), root / "weights.pth")
    photos = root / "photos" / "nested"
    photos.mkdir(parents=True)
    Image.fromarray(_photo()).save(photos.parent / "a.jpg")
    Image.fromarray(_photo(seed=1)[..., 0]).save(photos / "grey.png")
    Image.fromarray(np.dstack([_photo(seed=2), np.full((60, 80), 128, np.uint8)])).save(
        photos / "rgba.png")
    Image.fromarray((np.linspace(1000, 3000, 64 * 64).reshape(64, 64)).astype(np.uint16)).save(
        photos / "deep.png")
    (photos / "broken.jpg").write_bytes((photos.parent / "a.jpg").read_bytes()[:200])
    (photos / "notes.txt").write_text("not an image")  # not an image name: not looked at
    (photos / "fake.jpg").write_text("not an image either")
    (root / "classes.txt").write_text("\n".join(f"class {i}" for i in range(5)))
    (root / "labels.csv").write_text("file,label\na.jpg,2\ngrey.png,class 1\n")
    return root



@pytest.fixture(scope="session")
def cli_user_report(user_files, tmp_path_factory):
    """``(out folder, completed process)`` of ``seethrough report`` on the user files, the
    options in any order (used by the report test and the browser test)."""
    out = tmp_path_factory.mktemp("cli") / "out"
    result = subprocess.run(
        [sys.executable, "-m", "seethrough", "report", "--images", str(user_files / "photos"),
         "torchvision:resnet18", "--weights", str(user_files / "weights.pth"),  # any order
         "--quick", "--sections", "predictions", "attribution", "models", "layers",
         "--classes", str(user_files / "classes.txt"), "--labels", str(user_files / "labels.csv"),
         "--normalize", "imagenet", "--size", "64", "--out", str(out)],
        capture_output=True, text=True, timeout=600, check=False)
    return out, result

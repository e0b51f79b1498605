"""Image files as people have them: every common format and mode, folders, broken files."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from seethrough.data.images import ImageSet, find_images, load_images, read_image
from seethrough.errors import InputError, SkippedInputWarning

RED, BLUE = (255, 0, 0), (0, 0, 255)


def solid(colour, size=(40, 30), mode="RGB") -> Image.Image:
    return Image.new(mode, size, colour)


def noise(height=64, width=64, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def colour_of(image: torch.Tensor) -> list[float]:
    return image.mean(dim=(1, 2)).tolist()


@pytest.mark.parametrize("suffix, options", [
    (".jpg", {"quality": 95}), (".png", {}), (".webp", {"lossless": True}), (".bmp", {}),
    (".tif", {}), (".tiff", {"compression": "tiff_lzw"}),
])
def test_common_formats_read_as_rgb_in_0_1(tmp_path, suffix, options):
    path = tmp_path / f"red{suffix}"
    solid(RED).save(path, **options)
    image = read_image(path, 16)
    assert image.shape == (3, 16, 16) and image.dtype == torch.float32
    assert colour_of(image) == pytest.approx([1, 0, 0], abs=0.03)


def test_grayscale_palette_cmyk_become_rgb(tmp_path):
    solid(128, mode="L").save(tmp_path / "gray.png")
    solid(RED).convert("P").save(tmp_path / "palette.png")
    solid(BLUE).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    Image.new("1", (30, 30), 1).save(tmp_path / "bilevel.png")
    assert colour_of(read_image(tmp_path / "gray.png", 8)) == pytest.approx([128 / 255] * 3, abs=1e-4)
    assert colour_of(read_image(tmp_path / "palette.png", 8)) == pytest.approx([1, 0, 0], abs=1e-4)
    assert colour_of(read_image(tmp_path / "cmyk.jpg", 8)) == pytest.approx([0, 0, 1], abs=0.03)
    assert colour_of(read_image(tmp_path / "bilevel.png", 8)) == pytest.approx([1, 1, 1])


def test_transparency_is_composited_over_white(tmp_path):
    rgba = np.zeros((20, 20, 4), np.uint8)  # black, fully transparent ...
    rgba[:, 10:] = (0, 0, 0, 255)  # ... except an opaque black right half
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    image = read_image(tmp_path / "rgba.png", 20)
    assert image[:, :, :8].min() == 1.0 and image[:, :, 12:].max() == 0.0
    Image.new("LA", (10, 10), (0, 128)).save(tmp_path / "la.png")  # black at half alpha
    assert colour_of(read_image(tmp_path / "la.png", 10)) == pytest.approx([127 / 255] * 3, abs=0.01)
    palette = solid(RED, (10, 10)).convert("P")
    palette.info["transparency"] = palette.getpixel((0, 0))
    palette.save(tmp_path / "palette-transparent.png", transparency=palette.getpixel((0, 0)))
    assert colour_of(read_image(tmp_path / "palette-transparent.png", 10)) == pytest.approx([1, 1, 1])


def test_16_bit_is_scaled_by_its_real_range_not_as_8_bit(tmp_path):
    values = np.linspace(1000, 3000, 48 * 64).reshape(48, 64).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I;16")
    image = read_image(tmp_path / "deep.png", 48)
    assert image.min() < 0.05 and image.max() > 0.95 and image.std() > 0.2  # not blank white
    assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])
    assert bool((image[0, 1:, :].mean(1) >= image[0, :-1, :].mean(1)).all())  # brighter downwards


def test_32_bit_and_float_images_and_constant_ones(tmp_path):
    Image.fromarray(np.linspace(-5, 5, 400, dtype=np.float32).reshape(20, 20), "F").save(tmp_path / "f.tif")
    Image.fromarray(np.arange(400, dtype=np.int32).reshape(20, 20) * 1000, "I").save(tmp_path / "i.tif")
    Image.fromarray(np.full((20, 20), 7.5, np.float32), "F").save(tmp_path / "flat.tif")
    for name in ("f.tif", "i.tif"):
        image = read_image(tmp_path / name, 20)
        assert image.min() == pytest.approx(0, abs=1e-6) and image.max() == pytest.approx(1, abs=1e-6)
    assert torch.allclose(read_image(tmp_path / "flat.tif", 20), torch.tensor(0.5))


def test_exif_orientation_is_applied(tmp_path):
    stored = np.zeros((40, 60, 3), np.uint8)  # 60 wide, 40 high, blue ...
    stored[...] = BLUE
    stored[:20, :30] = RED  # ... with a red top-left quadrant
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(stored).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    Image.fromarray(stored).save(tmp_path / "plain.jpg", quality=95)
    upright = read_image(tmp_path / "phone.jpg", 32)  # displayed 40 x 60: red is top right
    assert upright[:, 4, 28].tolist() == pytest.approx([1, 0, 0], abs=0.1)
    assert upright[:, 4, 4].tolist() == pytest.approx([0, 0, 1], abs=0.1)
    as_stored = read_image(tmp_path / "plain.jpg", 32)  # red stays top left
    assert as_stored[:, 4, 4].tolist() == pytest.approx([1, 0, 0], abs=0.1)


def test_shorter_side_is_resized_then_centre_cropped(tmp_path):
    wide = np.zeros((20, 60, 3), np.uint8)
    wide[:, 16:44] = 255  # white around the middle third, which the crop keeps
    Image.fromarray(wide).save(tmp_path / "wide.png")
    image = read_image(tmp_path / "wide.png", 10)
    assert image.shape == (3, 10, 10) and image.min() == 1.0  # only the middle survives
    same = noise(12, 12)
    same.save(tmp_path / "same.png")
    exact = torch.from_numpy(np.asarray(same).copy()).permute(2, 0, 1).float() / 255
    assert torch.equal(read_image(tmp_path / "same.png", 12), exact)  # already square: untouched


def truncated_jpeg(path):
    noise(128, 128).save(path.with_name("whole.jpg"), quality=95)
    data = path.with_name("whole.jpg").read_bytes()
    path.with_name("whole.jpg").unlink()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("name, make, reason", [
    ("x.jpg", truncated_jpeg, "truncated file"),
    ("text.jpg", lambda path: path.write_text("not a picture"), "not an image"),
    ("empty.png", lambda path: path.write_bytes(b""), "empty file"),
])
def test_unreadable_files_are_one_clear_line(tmp_path, name, make, reason):
    make(tmp_path / name)
    with pytest.raises(InputError) as error:
        read_image(tmp_path / name, 16)
    assert str(error.value) == f"cannot read image {tmp_path / name}: {reason}"
    assert "\n" not in str(error.value)


def make_folder(root):
    """photos/ with good, broken, hidden, nested and non-image files."""
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / ".hidden").mkdir()
    noise(30, 50).save(root / "b.jpg")
    noise(16, 16).save(root / "a.PNG")
    noise(20, 20).save(root / "sub" / "c.webp", lossless=True)
    noise(16, 40).save(root / "sub" / "deeper" / "d.bmp")
    noise(16, 16).save(root / ".hidden" / "e.png")
    noise(16, 16).save(root / ".f.png")
    truncated_jpeg(root / "x.jpg")
    (root / "text.jpg").write_text("not a picture")
    (root / "notes.txt").write_text("some notes")
    return root


def test_find_images_walks_folders_sorted_skipping_hidden_and_other_files(tmp_path):
    folder = make_folder(tmp_path / "photos")
    found = find_images([folder])
    assert [p.relative_to(folder).as_posix() for p in found] == [
        "a.PNG", "b.jpg", "sub/c.webp", "sub/deeper/d.bmp", "text.jpg", "x.jpg"]
    explicit = find_images([folder / "notes.txt", folder, folder / "b.jpg"])  # each file once
    assert explicit[0] == folder / "notes.txt" and len(explicit) == 7


def test_a_missing_path_is_one_clear_error(tmp_path):
    noise().save(tmp_path / "ok.png")
    with pytest.raises(InputError, match="no such file or folder: .*nope.jpg"):
        find_images([tmp_path / "ok.png", tmp_path / "nope.jpg"])
    with pytest.raises(InputError, match="no such file or folder: .*gone"):
        load_images([tmp_path / "gone"], 16)


def test_load_images_skips_broken_files_with_a_warning(tmp_path):
    folder = make_folder(tmp_path / "photos")
    with pytest.warns(SkippedInputWarning) as caught:
        photos = load_images([folder, folder / "notes.txt"], 24)
    assert isinstance(photos, ImageSet) and len(photos) == 4
    assert photos.images.shape == (4, 3, 24, 24)
    assert 0 <= photos.images.min() and photos.images.max() <= 1
    assert photos.names == ["a.PNG", "b.jpg", "sub/c.webp", "sub/deeper/d.bmp"]
    assert photos.paths[2] == folder / "sub" / "c.webp"
    assert photos.resized == 4  # none was 24 x 24
    assert photos.skipped == [("text.jpg", "not an image"), ("x.jpg", "truncated file"),
                              (str(folder / "notes.txt"), "not an image")]
    messages = [str(w.message) for w in caught if w.category is SkippedInputWarning]
    assert messages == ["skipped text.jpg: not an image", "skipped x.jpg: truncated file",
                        f"skipped {folder / 'notes.txt'}: not an image"]
    assert photos.describe() == (
        f"7 files: 4 images (4 resized and centre-cropped to 24 x 24), 3 skipped (text.jpg: not an image; "
        f"x.jpg: truncated file; {folder / 'notes.txt'}: not an image)")


def test_resized_counts_only_images_of_another_size(tmp_path):
    noise(16, 16).save(tmp_path / "square.png")
    noise(16, 30).save(tmp_path / "wide.png")
    noise(40, 40).save(tmp_path / "big.png")
    photos = load_images([tmp_path], 16)
    assert photos.resized == 2 and photos.skipped == []
    assert photos.describe() == "3 files: 3 images (2 resized and centre-cropped to 16 x 16)"


def test_same_names_in_two_folders_stay_apart(tmp_path):
    for folder in ("one", "two"):
        (tmp_path / folder).mkdir()
        noise().save(tmp_path / folder / "1.png")
    assert load_images([tmp_path / "one", tmp_path / "two"], 8).names == ["1.png", "two/1.png"]


def test_a_folder_with_nothing_usable_is_one_error(tmp_path):
    truncated_jpeg(tmp_path / "x.jpg")
    (tmp_path / "y.png").write_text("nope")
    with pytest.warns(SkippedInputWarning), pytest.raises(InputError) as error:
        load_images([tmp_path], 16)
    assert str(error.value) == "no usable image among 2 files: x.jpg: truncated file; y.png: not an image"
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no image files in"):
        load_images([tmp_path / "empty"], 16)


def test_photo_loader_uses_the_new_reader(tmp_path):
    from seethrough.data.photos import load_image

    values = np.linspace(1000, 3000, 32 * 32).reshape(32, 32).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    assert load_image(str(tmp_path / "deep.png"), 16).max() > 0.9

"""Class names (one a line) and true labels (CSV file,label) for the report of your own model."""
from __future__ import annotations

import pytest

from seethrough.data.annotations import read_class_names, read_labels
from seethrough.errors import InputError

CLASSES = ["tabby cat", "golden retriever", "crane", "goldfish", "crane"]  # ImageNet repeats 'crane'


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_class_names_one_a_line_blank_lines_ignored(tmp_path):
    names = write(tmp_path / "names.txt", "\ufefftabby cat\n  golden retriever \n\n\ncrane\n")
    assert read_class_names(names) == ["tabby cat", "golden retriever", "crane"]
    assert read_class_names(names, expected=3) == ["tabby cat", "golden retriever", "crane"]


def test_a_wrong_count_of_class_names_is_a_clear_error(tmp_path):
    names = write(tmp_path / "names.txt", "\n".join(f"class {i}" for i in range(998)))
    with pytest.raises(InputError, match=r"names.txt has 998 class names, the model has 1000 outputs"):
        read_class_names(names, expected=1000)
    with pytest.raises(InputError, match="does not exist"):
        read_class_names(tmp_path / "missing.txt")
    with pytest.raises(InputError, match="no class names"):
        read_class_names(write(tmp_path / "blank.txt", "\n \n"))


def test_labels_by_index_or_name_unlabelled_images_get_minus_one(tmp_path):
    labels = write(tmp_path / "labels.csv",
                   "file,label\ncat.jpg,tabby cat\nsub/dog.png,1\nfish.jpg,Goldfish\nskipped.jpg,0\n")
    names = ["cat.jpg", "sub/dog.png", "fish.jpg", "other.jpg"]
    assert read_labels(labels, names, CLASSES).tolist() == [0, 1, 3, -1]
    assert read_labels(labels, names, CLASSES).dtype.is_floating_point is False


def test_files_match_by_relative_name_or_bare_file_name(tmp_path):
    labels = write(tmp_path / "labels.csv", "photos/cat.jpg,0\n./sub/dog.png,1\nsub\\fish.jpg,3\n")
    names = ["cat.jpg", "sub/dog.png", "other/sub/fish.jpg"]  # no header row: fine too
    assert read_labels(labels, names, CLASSES).tolist() == [0, 1, 3]
    assert read_labels(labels, names).tolist() == [0, 1, 3]  # indices need no class names


def test_header_with_other_column_names_and_order(tmp_path):
    labels = write(tmp_path / "labels.csv", "class,notes,image\n2,blurry,a.jpg\n")
    assert read_labels(labels, ["a.jpg"], CLASSES).tolist() == [2]


@pytest.mark.parametrize("rows, names, classes, words", [
    ("a.jpg,tabby kat\n", ["a.jpg"], CLASSES, "line 1: unknown class name 'tabby kat'; closest: 'tabby cat'"),
    ("a.jpg,crane\n", ["a.jpg"], CLASSES, "class name 'crane' is ambiguous (classes 2, 4)"),
    ("a.jpg,9\n", ["a.jpg"], CLASSES, "class index 9 is out of range (0 to 4)"),
    ("a.jpg,-1\n", ["a.jpg"], None, "class index -1 is out of range"),
    ("a.jpg,cat\n", ["a.jpg"], None, "'cat' is not a class index; give the class names"),
    ("1.jpg,0\n", ["x/1.jpg", "y/1.jpg"], CLASSES, "'1.jpg' fits several images (x/1.jpg, y/1.jpg)"),
    ("a.jpg,0\na.jpg,1\n", ["a.jpg"], CLASSES, "line 2: a.jpg has two labels, 0 and 1"),
    ("zzz.jpg,0\n", ["a.jpg"], CLASSES, "none of the 1 files in"),
    ("a.jpg\n", ["a.jpg"], CLASSES, "line 1: expected 'file,label'"),
    ("", ["a.jpg"], CLASSES, "has no rows"),
])
def test_bad_labels_are_clear_errors(tmp_path, rows, names, classes, words):
    labels = write(tmp_path / "labels.csv", rows)
    with pytest.raises(InputError) as error:
        read_labels(labels, names, classes)
    assert words in str(error.value)
    assert "\n" not in str(error.value)


def test_a_missing_labels_file(tmp_path):
    with pytest.raises(InputError, match="labels file .*nope.csv does not exist"):
        read_labels(tmp_path / "nope.csv", ["a.jpg"])

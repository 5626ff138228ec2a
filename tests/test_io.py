"""smaf.io: outputs get the mode a plain open() would give them; split lists are read exactly."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from smaf.errors import DataError
from smaf.io import (
    atomic_write,
    default_mode,
    load_image,
    load_mask,
    load_saliency,
    read_id_list,
    save_mask,
)


@pytest.fixture()
def umask():
    """Set the process umask for one test, restoring it afterwards."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda mask: os.umask(mask)
    os.umask(old)


@pytest.mark.parametrize(("mask", "file_mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_outputs_respect_the_umask_like_open_does(tmp_path, umask, mask, file_mode) -> None:
    umask(mask)
    with atomic_write(tmp_path / "summary.csv") as tmp:
        tmp.write_text("a,b\n")
    save_mask(tmp_path / "seed.png", np.zeros((2, 3), np.uint8))
    with open(tmp_path / "plain.txt", "w") as f:  # what the user's own files get
        f.write("x")
    for name in ("summary.csv", "seed.png", "plain.txt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == file_mode, name
    assert default_mode(directory=True) == 0o777 & ~mask


def test_split_list_ids_are_whole_lines(tmp_path) -> None:
    path = tmp_path / "train.txt"
    path.write_text("2007_000032\n  my image 01  \n\nsub/dir/ä b\n")
    assert read_id_list(path) == ["2007_000032", "my image 01", "sub/dir/ä b"]


def test_field_style_train_aug_lines_give_the_image_id(tmp_path) -> None:
    path = tmp_path / "train_aug.txt"
    path.write_text(
        "/JPEGImages/2007_000032.jpg /SegmentationClassAug/2007_000032.png\n"
        "/JPEGImages/2008_000002.jpg /SegmentationClassAug/2008_000002.png\n"
    )
    assert read_id_list(path) == ["2007_000032", "2008_000002"]


def test_duplicate_id_in_a_split_list_is_an_error_naming_both_lines(tmp_path) -> None:
    path = tmp_path / "val.txt"
    path.write_text("a\nb\nc\nb\n")
    with pytest.raises(DataError, match=r"val\.txt.*line 4.*'b'.*line 2"):
        read_id_list(path)


@pytest.mark.parametrize(
    ("reader", "missing", "fix"),
    [
        (load_image, r"image not found: .*Check the dataset root", "Replace or remove it."),
        (load_mask, r"mask not found: .*Check the dataset root", "Replace or remove it."),
        (load_saliency, r"saliency map not found: .*prepare_dataset", "Re-download or re-extract"),
    ],
)
def test_each_reader_names_a_missing_or_unreadable_file_with_its_fix(
    tmp_path, reader, missing, fix
) -> None:
    path = tmp_path / "x.png"
    with pytest.raises(DataError, match=missing):
        reader(path)
    path.write_bytes(b"\x89PNG\r\n\x1a\n not the rest of a PNG")
    with pytest.raises(DataError, match=r"cannot read .*x\.png .*corrupt or truncated") as info:
        reader(path)
    assert fix in str(info.value)

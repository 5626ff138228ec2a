"""Scored on nothing without a word, no more: the folder source's dataset stage stops or warns at
a masks folder that matches no image, masks saved as ``.PNG``, a class name that looks like a
typo, and classes seen in only a few images, saying what it found."""

from __future__ import annotations

import csv
import logging

import numpy as np
import pytest
from folder_data import write_noise_images
from PIL import Image

from smaf.data.index import DatasetIndex
from smaf.data.prepare import prepare_dataset
from smaf.errors import ConfigError, DataError

NAMES = [f"a/{k}.jpg" for k in range(12)]


@pytest.fixture()
def own(tmp_path):
    write_noise_images(tmp_path / "images", NAMES)
    labels = tmp_path / "labels.csv"
    with open(labels, "w", newline="") as f:
        csv.writer(f).writerows(
            [["image", "labels"], *([n, "cat" if k % 2 else "dog"] for k, n in enumerate(NAMES))]
        )
    return tmp_path, {"images": str(tmp_path / "images"), "labels": str(labels)}


def _masks(folder, names, suffix=".png"):
    for k, n in enumerate(names):
        path = folder / n.replace(".jpg", suffix)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((20, 24), 1 + k % 2, np.uint8), mode="L").save(path, format="PNG")


def _prepare(tmp_path, settings):
    path = tmp_path / "results" / "index.csv"
    info = prepare_dataset(source="folder", settings=settings, out_index=path, name="own")
    return DatasetIndex.read(path), info


def test_a_masks_folder_that_matches_no_image_stops(own) -> None:
    tmp_path, settings = own
    _masks(tmp_path / "masks", [n.replace("a/", "") for n in NAMES])  # one folder level off
    with pytest.raises(DataError, match=r"masks folder .* holds 12 PNGs but none matches an image"):
        _prepare(tmp_path, {**settings, "masks": str(tmp_path / "masks")})
    with pytest.raises(ConfigError, match="datasets.own.masks: folder not found: .*typo"):
        _prepare(tmp_path, {**settings, "masks": str(tmp_path / "typo")})


def test_masks_saved_as_upper_case_png_are_found(own, caplog) -> None:
    tmp_path, settings = own
    _masks(tmp_path / "masks", NAMES[:6], suffix=".PNG")
    _masks(tmp_path / "masks", ["a/stray.jpg"])
    with caplog.at_level(logging.WARNING):
        index, _ = _prepare(tmp_path, {**settings, "masks": str(tmp_path / "masks")})
    with_mask = [i for i in index.ids() if index.mask_path(i) is not None]
    assert len(with_mask) == 6
    assert "1 files in" in caplog.text and "a/stray" in caplog.text


def _relabel(tmp_path, k, label):
    rows = list(csv.reader(open(tmp_path / "labels.csv")))
    rows[k + 1][1] = label
    with open(tmp_path / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)


def test_a_class_name_typo_stops_instead_of_making_a_class(own) -> None:
    tmp_path, settings = own
    _relabel(tmp_path, 3, "dgo")
    with pytest.raises(DataError, match=r"class 'dgo' is in 1 training image.*typo of 'dog'"):
        _prepare(tmp_path, {**settings, "splits": {"val_fraction": 0}})


def test_a_class_in_few_images_is_warned_about(own) -> None:
    tmp_path, settings = own
    _relabel(tmp_path, 3, "dog;zebra")
    _, info = _prepare(tmp_path, {**settings, "splits": {"val_fraction": 0}})
    assert info["warnings"] == [
        "1 classes are in fewer than 5 training images: zebra (1); their results will be "
        "unreliable. Add images of them, or check their names."
    ]

"""The `folder` source: a user's own images with image-level labels → the dataset index.

Built from the real VOC 2012 subset in a non-VOC layout inside each test (tests/folder_data.py).
"""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from folder_data import VOC_FG, build_folder_dataset, write_coco_json
from PIL import Image

from smaf.data.index import DatasetIndex
from smaf.data.prepare import prepare_dataset
from smaf.data.sources.folder import safe_ids
from smaf.data.tags import read_coco_tags, read_csv_tags
from smaf.errors import ConfigError, DataError
from smaf.io import load_image


@pytest.fixture()
def folder(voc_mini_root, tmp_path):
    out = tmp_path / "leaves"
    built = build_folder_dataset(voc_mini_root, out, n=15, n_masks=9, n_unlabelled=3)
    return out, built


def _settings(out, **kw):
    settings = {
        "images": str(out / "images"),
        "labels": str(out / "labels.csv"),
        "masks": str(out / "masks"),
        "splits": {"val_fraction": 0.25, "seed": 0},
    }
    settings.update(kw)
    return settings


def _prepare(out, settings, roles=("train_aug", "train", "val"), name="index.csv"):
    path = out / "results" / name
    prepare_dataset(source="folder", settings=settings, out_index=path, name="leaves", roles=roles)
    return DatasetIndex.read(path)


@pytest.mark.voc
def test_folder_dataset_indexes_labels_masks_and_splits(folder) -> None:
    out, built = folder
    index = _prepare(out, _settings(out))
    labelled = set(built["labels"])
    names = dict(zip(index.table["image_id"], index.table["name"], strict=True))
    # Every labelled image is trained on or held out as val, never both; unlabelled ones are not here.
    train_aug, val = set(index.ids("train_aug")), set(index.ids("val"))
    assert not train_aug & val
    assert {names[i] for i in train_aug | val} == labelled
    assert abs(len(val) - 0.25 * len(labelled)) < 1  # the share, rounded either way
    # train (seed evaluation) = the train_aug images that have a mask.
    assert {names[i] for i in index.ids("train")} == {
        names[i] for i in train_aug if names[i] in built["masks"]
    }
    # Labels: the class names of the CSV, in the declared (sorted) class order.
    for image_id in index.ids("train_aug"):
        present = {index.class_names[k + 1] for k in np.flatnonzero(index.labels(image_id))}
        assert present == set(built["labels"][names[image_id]])
    # Ids are file-name safe and unique, the index keeps the user's names.
    assert all(c.isalnum() or c in "._-" for i in index.ids() for c in i)
    assert "städte/2007" in " ".join(names.values())
    # Sizes as loaded: the EXIF-rotated image is upright, the grey one is read as RGB.
    rotated = next(i for i, n in names.items() if n == built["rotated"])
    assert index.size(rotated) == load_image(index.image_path(rotated)).shape[:2]
    grey = next(i for i, n in names.items() if n == built["grey"])
    assert load_image(index.image_path(grey)).shape[2] == 3
    # The test images (no labels) have an index of their own, unlabelled.
    test = _prepare(out, _settings(out), roles=("test",), name="test_index.csv")
    assert {n for n in test.table["name"]} == set(built["unlabelled"])
    assert not any(test.labels(i).any() for i in test.ids("test"))


@pytest.mark.voc
def test_the_split_is_drawn_once_and_stratified(folder) -> None:
    out, _ = folder
    a = _prepare(out, _settings(out), name="a.csv").ids("val")
    b = _prepare(out, _settings(out), name="b.csv").ids("val")
    c = _prepare(out, _settings(out, splits={"val_fraction": 0.25, "seed": 7}), name="c.csv")
    assert a == b and c.ids("val") != a


def test_safe_ids_are_unique_and_keep_names_apart() -> None:
    ids = safe_ids(["a b/ä.jpg", "a_b/a.png", "x/.y.jpg", "c.jpg"])
    assert ids["a b/ä.jpg"] == "a_b__a"
    assert ids["a_b/a.png"].startswith("a_b__a-") and len(set(ids.values())) == 4


def test_csv_with_one_column_per_class_and_coco_json(tmp_path) -> None:
    path = tmp_path / "onehot.csv"
    path.write_text("image,cat,dog\nx/1.jpg,1,0\nx/2.jpg,1,1\n")
    tags, classes = read_csv_tags(path)
    assert classes == ["cat", "dog"] and tags == {"x/1.jpg": ["cat"], "x/2.jpg": ["cat", "dog"]}
    coco = write_coco_json(
        tmp_path, {"x/1.jpg": ["dog"], "x/2.jpg": ["cat", "dog"]}, ["cat", "dog"]
    )
    tags, classes = read_coco_tags(coco)
    assert classes == ["cat", "dog"] and tags == {"x/1.jpg": ["dog"], "x/2.jpg": ["cat", "dog"]}


@pytest.mark.voc
def test_by_folder_labels_and_a_binary_problem(voc_mini_root, tmp_path) -> None:
    images = tmp_path / "images"
    for k, image_id in enumerate(
        (voc_mini_root / "ImageSets/Segmentation/subset_train.txt").read_text().split()[:8]
    ):
        folder = images / ("cat" if k < 6 else ".")
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(voc_mini_root / "JPEGImages" / f"{image_id}.jpg", folder)
    index = _prepare(
        tmp_path, {"images": str(images), "labels": "by_folder", "splits": {"val_fraction": 0.2}}
    )
    assert index.class_names == ["background", "cat"] and index.num_classes == 1
    assert len(index.ids("train_aug")) + len(index.ids("val")) == 6
    assert index.ids("train", allow_empty=True) == []  # no masks: nothing to score seeds on


# ------------------------------------------------------------------------------ bad input
@pytest.mark.voc
def test_class_not_in_classes_is_named(folder) -> None:
    out, _ = folder
    with pytest.raises(DataError, match=r"has class '.*', which is not in classes \(cat, dog\)"):
        _prepare(out, _settings(out, classes=["cat", "dog"]))
    assert not (out / "results").exists()


@pytest.mark.voc
def test_listed_image_that_is_missing_is_named(folder) -> None:
    out, built = folder
    victim = next(iter(built["labels"]))
    (out / "images" / victim).unlink()
    with pytest.raises(DataError, match=rf"list 1 images that are not under .*{victim}"):
        _prepare(out, _settings(out))


@pytest.mark.voc
def test_two_files_with_one_name_are_refused(folder) -> None:
    out, built = folder
    first = out / "images" / built["names"][0]
    shutil.copy(first, first.with_suffix(".png" if first.suffix == ".jpg" else ".jpg"))
    with pytest.raises(DataError, match="would both be written as"):
        _prepare(out, _settings(out))


@pytest.mark.voc
def test_unreadable_image_is_named(folder) -> None:
    out, built = folder
    victim = out / "images" / built["names"][1]
    victim.write_bytes(b"not an image")
    with pytest.raises(DataError, match=rf"cannot read {victim}"):
        _prepare(out, _settings(out))
    assert not (out / "results" / "index.csv").exists()


@pytest.mark.voc
def test_mask_of_the_wrong_size_is_named(folder) -> None:
    out, built = folder
    mask = out / "masks" / built["masks"][0]
    mask = mask.with_suffix(".png")
    Image.fromarray(np.zeros((5, 7), np.uint8), mode="P").save(mask)
    with pytest.raises(DataError, match=rf"mask {mask} is 7x5 but its image"):
        _prepare(out, _settings(out))


@pytest.mark.voc
def test_listed_training_image_without_a_class_is_a_negative(folder) -> None:
    out, built = folder
    rows = list(csv.reader((out / "labels.csv").open(encoding="utf-8")))
    rows[1][1] = ""
    with open(out / "labels.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    index = _prepare(out, _settings(out))
    negative = index.table.index[index.table["name"] == rows[1][0]][0]
    assert negative in index.ids(["train_aug", "val"]) and not index.labels(negative).any()


def test_bad_coco_files_are_named(tmp_path) -> None:
    truncated = tmp_path / "a.json"
    truncated.write_text('{"images": [')
    with pytest.raises(DataError, match="is not valid JSON"):
        read_coco_tags(truncated)
    base = {"images": [{"id": 1, "file_name": "x.jpg"}], "categories": [{"id": 3, "name": "cat"}]}
    missing_image = tmp_path / "b.json"
    missing_image.write_text(
        json.dumps({**base, "annotations": [{"id": 9, "image_id": 2, "category_id": 3}]})
    )
    with pytest.raises(DataError, match="points at image id 2"):
        read_coco_tags(missing_image)
    bad_category = tmp_path / "c.json"
    bad_category.write_text(
        json.dumps({**base, "annotations": [{"id": 9, "image_id": 1, "category_id": 4}]})
    )
    with pytest.raises(DataError, match="category id 4"):
        read_coco_tags(bad_category)


def test_num_classes_must_agree_with_the_classes(tmp_path) -> None:
    images = tmp_path / "images" / "cat"
    images.mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(images / "1.png")
    with pytest.raises(ConfigError, match="num_classes is 3 but the dataset has 1 classes"):
        _prepare(
            tmp_path, {"images": str(tmp_path / "images"), "labels": "by_folder", "num_classes": 3}
        )


@pytest.mark.voc
def test_classes_default_to_voc_order_when_given(folder) -> None:
    out, _ = folder
    index = _prepare(out, _settings(out, classes=VOC_FG))
    assert index.class_names == ["background", *VOC_FG]

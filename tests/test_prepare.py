"""The dataset stage (smaf.data.prepare): the index it writes for synthetic and real VOC 2012
data, and the checks of validate_index, each ending with one message naming the file and
nothing written."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from helpers import VOC_MINI_SPLITS, dataset_root, dataset_settings
from PIL import Image

from smaf.data.index import DatasetIndex, ImageRecord, info_path_for
from smaf.data.labels import read_labels_csv
from smaf.data.prepare import prepare_dataset, validate_index
from smaf.data.sources import ADAPTERS
from smaf.data.sources.voc import VOC_CLASSES
from smaf.errors import ConfigError, DataError
from smaf.io import read_id_list, save_image, save_mask, write_id_list

ROLES = ("train_aug", "train", "val")


def _nothing_written(out_dir) -> bool:
    """No index written (the read cache, ``*.files.csv``, is kept: a rerun after the fix
    reads only the files that changed)."""
    if not out_dir.exists():
        return True
    return not [p for p in out_dir.glob("*") if not p.name.endswith(".files.csv")]


def _prepare(root, out_dir, **settings):
    return prepare_dataset(
        source="synthetic",
        settings=dataset_settings(root, 6, **settings),
        out_index=out_dir / "index.csv",
        name="synthetic",
        threads=1,
    )


def test_prepare_synthetic(tiny_index, tmp_path):
    root = dataset_root(tiny_index)
    out = tmp_path / "data"
    info = _prepare(root, out)
    assert info["images"] == {"train_aug": 6, "train": 3, "val": 2}
    assert info["saliency_maps_train_aug"] == 6
    assert info["class_names"][0] == "background" and len(info["class_names"]) == 7
    assert info["source"] == "synthetic" and info["num_classes"] == 6
    assert json.loads((out / "dataset.json").read_text()) == info

    index = DatasetIndex.read(out / "index.csv")
    assert len(index) == 8  # train ⊂ train_aug, plus val
    # Labels: the generator's cls_labels.csv, for every image of every role.
    labels = read_labels_csv(root / "cls_labels.csv", 6)
    for image_id in index.ids():
        np.testing.assert_array_equal(index.labels(image_id), labels[image_id])
    seg = root / "ImageSets" / "Segmentation"
    for role in ROLES:
        assert index.ids(role) == read_id_list(seg / f"{role}.txt")
    # Paths and sizes: what validation read from the files.
    for image_id in index.ids():
        assert index.image_path(image_id) == root / "JPEGImages" / f"{image_id}.jpg"
        assert index.mask_path(image_id) == root / "SegmentationClass" / f"{image_id}.png"
        assert index.saliency_path(image_id) == root / "SALImages" / f"{image_id}.png"
        assert index.mask_path(image_id, "aug_mask") is None
        with Image.open(index.image_path(image_id)) as im:
            assert index.size(image_id) == im.size[::-1]
    # The same generated folder, indexed again, gives the same bytes (stages key on them).
    _prepare(root, tmp_path / "again")
    assert (tmp_path / "again" / "index.csv").read_bytes() == (out / "index.csv").read_bytes()


def test_prepare_test_images_index(tiny_index):
    """rule test_index: the test images alone, without masks or labels."""
    test = DatasetIndex.read(tiny_index.with_name("test_index.csv"))
    root = dataset_root(tiny_index)
    assert test.ids("test") == read_id_list(root / "ImageSets" / "Segmentation" / "test.txt")
    assert len(test) == 2 and test.class_names == DatasetIndex.read(tiny_index).class_names
    for image_id in test.ids():
        assert test.mask_path(image_id) is None and not test.labels(image_id).any()
        assert test.image_path(image_id).is_file() and min(test.size(image_id)) >= 40
    info = json.loads(info_path_for(tiny_index.with_name("test_index.csv")).read_text())
    assert info["images"] == {"test": 2}


def test_bad_input_val_overlapping_train_aug(tiny_root, tmp_path):
    seg = tiny_root / "ImageSets" / "Segmentation"
    write_id_list(
        seg / "val.txt", read_id_list(seg / "val.txt") + read_id_list(seg / "train.txt")[:1]
    )
    out = tmp_path / "data"
    with pytest.raises(DataError, match="val images are also in train_aug"):
        _prepare(tiny_root, out)
    assert _nothing_written(out)


def test_bad_input_missing_image(tiny_root, tmp_path):
    seg = tiny_root / "ImageSets" / "Segmentation"
    victim = read_id_list(seg / "train_aug.txt")[-1]  # in train_aug only: the index check finds it
    (tiny_root / "JPEGImages" / f"{victim}.jpg").unlink()
    out = tmp_path / "data"
    with pytest.raises(DataError, match=victim) as info:
        _prepare(tiny_root, out)
    assert str(tiny_root / "JPEGImages" / f"{victim}.jpg") in str(info.value)
    assert _nothing_written(out)


def test_bad_input_missing_dataset_folder(tmp_path):
    # The check smaf check-config makes too (smaf.data.sources.settings_problems).
    with pytest.raises(ConfigError, match="datasets.voc2012.root: folder not found: .*nowhere"):
        prepare_dataset(
            source="voc",
            settings=dataset_settings(tmp_path / "nowhere", 20),
            out_index=tmp_path / "data" / "index.csv",
            name="voc2012",
        )
    assert _nothing_written(tmp_path / "data")


def test_bad_input_image_without_class(tiny_root, tmp_path):
    csv_path = tiny_root / "cls_labels.csv"
    lines = csv_path.read_text().splitlines()
    first_id = lines[1].split(",")[0]
    lines[1] = ",".join([first_id] + ["0"] * 6)
    csv_path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "data"
    with pytest.raises(DataError, match=f"no foreground class.*{first_id}"):
        _prepare(tiny_root, out)
    assert _nothing_written(out)


def test_bad_input_mask_size_names_both_files(tiny_root, tmp_path):
    image_id = read_id_list(tiny_root / "ImageSets" / "Segmentation" / "val.txt")[0]
    mask = tiny_root / "SegmentationClass" / f"{image_id}.png"
    save_mask(mask, np.zeros((7, 9), np.uint8))
    out = tmp_path / "data"
    with pytest.raises(DataError, match="is 9x7 but its image") as info:
        _prepare(tiny_root, out)
    assert str(mask) in str(info.value)
    assert str(tiny_root / "JPEGImages" / f"{image_id}.jpg") in str(info.value)
    assert _nothing_written(out)


def test_bad_input_train_mask_missing_is_named(tiny_root, tmp_path):
    image_id = read_id_list(tiny_root / "ImageSets" / "Segmentation" / "train.txt")[1]
    mask = tiny_root / "SegmentationClass" / f"{image_id}.png"
    mask.unlink()
    out = tmp_path / "data"
    with pytest.raises(DataError, match=r"1 of 3 masks of split 'train'") as info:
        _prepare(tiny_root, out)
    assert str(mask) in str(info.value)
    assert _nothing_written(out)


# ----------------------------------------------------- validate_index on hand-made indexes


@pytest.fixture()
def hand(tmp_path):
    """Three 4x6 images with masks: a, b (train_aug, train), c (val); classes cat, dog."""
    records = []
    for image_id, roles in (("a", {"train_aug", "train"}), ("b", {"train_aug"}), ("c", {"val"})):
        image = tmp_path / "img" / f"{image_id}.jpg"
        mask = tmp_path / "gt" / f"{image_id}.png"
        save_image(image, np.full((4, 6, 3), 90, np.uint8))
        save_mask(mask, np.ones((4, 6), np.uint8))
        records.append(
            ImageRecord(image_id, str(image), mask=str(mask), roles=roles, labels=np.r_[1.0, 0.0])
        )
    return records


def _prepare_hand(records, tmp_path, monkeypatch):
    """prepare_dataset through an adapter returning ``records`` as they are."""
    index = DatasetIndex.build(records, ["cat", "dog"], {"name": "hand"})
    monkeypatch.setitem(ADAPTERS, "hand", lambda settings, *, name, roles: index)
    out = tmp_path / "data"
    info = prepare_dataset(
        source="hand", settings={}, out_index=out / "index.csv", name="hand", threads=1
    )
    return out, info


def test_validate_hand_index_fills_sizes(hand, tmp_path, monkeypatch):
    out, info = _prepare_hand(hand, tmp_path, monkeypatch)
    assert info["images"] == {"train_aug": 2, "train": 1, "val": 1}
    assert info["aug_masks_train"] is None and info["saliency_maps_train_aug"] is None
    index = DatasetIndex.read(out / "index.csv")
    assert [index.size(i) for i in "abc"] == [(4, 6)] * 3
    # validate_index itself returns a new index with the sizes; its input keeps zeros.
    raw = DatasetIndex.build(hand, ["cat", "dog"])
    assert validate_index(raw, threads=1).size("c") == (4, 6)


def test_validate_missing_file_is_named(hand, tmp_path, monkeypatch):
    hand[1].saliency = str(tmp_path / "sal" / "b.png")
    with pytest.raises(DataError, match=r"1 of 3 saliency maps .* missing: .*sal/b\.png"):
        _prepare_hand(hand, tmp_path, monkeypatch)
    assert _nothing_written(tmp_path / "data")


def test_validate_saliency_size_names_both_files(hand, tmp_path, monkeypatch):
    sal = tmp_path / "sal" / "a.png"
    sal.parent.mkdir()
    Image.fromarray(np.zeros((6, 4), np.uint8), mode="L").save(sal)  # transposed
    hand[0].saliency = str(sal)
    with pytest.raises(DataError, match=r"saliency map .*a\.png is 4x6 but its image .*a\.jpg"):
        _prepare_hand(hand, tmp_path, monkeypatch)
    assert _nothing_written(tmp_path / "data")


def test_validate_val_in_train_aug(hand, tmp_path, monkeypatch):
    hand[2].roles.add("train_aug")
    with pytest.raises(DataError, match=r"1 val images are also in train_aug \(c\)"):
        _prepare_hand(hand, tmp_path, monkeypatch)
    assert _nothing_written(tmp_path / "data")


def test_validate_image_without_class(hand, tmp_path, monkeypatch):
    hand[1].labels = np.zeros(2, np.float32)
    with pytest.raises(DataError, match=r"1 images have no foreground class .*\(b\)"):
        _prepare_hand(hand, tmp_path, monkeypatch)
    assert _nothing_written(tmp_path / "data")


@pytest.mark.parametrize("victim, role", [(0, "train"), (2, "val")])
def test_validate_evaluated_image_without_mask(hand, tmp_path, monkeypatch, victim, role):
    hand[victim].mask = ""
    image_id = hand[victim].image_id
    with pytest.raises(
        DataError, match=rf"1 {role} images have no ground-truth mask \({image_id}\)"
    ):
        _prepare_hand(hand, tmp_path, monkeypatch)
    assert _nothing_written(tmp_path / "data")


def test_validate_corrupt_image_is_named(hand, tmp_path, monkeypatch):
    path = hand[2].image
    with open(path, "wb") as f:
        f.write(b"not a jpeg")
    with pytest.raises(DataError, match=rf"cannot read {path}.*corrupt or truncated"):
        _prepare_hand(hand, tmp_path, monkeypatch)
    assert _nothing_written(tmp_path / "data")


def test_validate_no_images(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="no images in any split"):
        _prepare_hand([], tmp_path, monkeypatch)


# ------------------------------------------------------------------------------ real VOC 2012


@pytest.mark.voc
def test_prepare_real_voc(voc_mini, voc_mini_root, tmp_path):
    out = tmp_path / "data"
    info = prepare_dataset(
        source="voc",
        settings=dataset_settings(voc_mini_root, 20, label_source="masks", splits=VOC_MINI_SPLITS),
        out_index=out / "index.csv",
        name="voc-mini",
    )
    assert info["images"] == {"train_aug": 330, "train": 330, "val": 346}
    assert info["class_names"] == list(VOC_CLASSES)
    assert info["aug_masks_train"] is None
    index = DatasetIndex.read(out / "index.csv")
    reference = np.load(voc_mini / "extras" / "cls_labels.npy", allow_pickle=True).item()
    assert len(index) == 676
    for image_id in index.ids():
        vec = index.labels(image_id)
        np.testing.assert_array_equal(vec, reference[int(image_id.replace("_", ""))])
    seg = voc_mini_root / "ImageSets" / "Segmentation"
    assert index.ids("val") == read_id_list(seg / "subset_val.txt")
    assert index.ids("train_aug") == index.ids("train") == read_id_list(seg / "subset_train.txt")


@pytest.mark.voc
def test_train_aug_derived_from_aug_masks(voc_mini_root, tmp_path):
    """No train_aug list: SegmentationClassAug masks minus val, as the field defines it."""
    root = tmp_path / "VOC2012"
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    for name in ("JPEGImages", "SegmentationClass"):
        (root / name).symlink_to(voc_mini_root / name)
    for split in ("subset_train", "subset_val"):
        shutil.copy(
            voc_mini_root / "ImageSets" / "Segmentation" / f"{split}.txt",
            root / "ImageSets" / "Segmentation",
        )
    out = tmp_path / "data"
    info = prepare_dataset(
        source="voc",
        settings=dataset_settings(
            root,
            20,
            label_source="masks",
            splits={**VOC_MINI_SPLITS, "train_aug": "train_aug"},
            aug_mask_dir=voc_mini_root / "SegmentationClass",  # the subset's masks equal SBD's
        ),
        out_index=out / "index.csv",
        name="voc-mini",
    )
    assert info["images"]["train_aug"] == 330
    index = DatasetIndex.read(out / "index.csv")
    assert set(index.ids("train_aug")) == set(
        read_id_list(voc_mini_root / "ImageSets" / "Segmentation" / "subset_train.txt")
    )
    assert info["aug_masks_train"] == 330
    image_id = index.ids("train")[0]
    assert index.mask_path(image_id, "SegmentationClassAug") == (
        voc_mini_root / "SegmentationClass" / f"{image_id}.png"
    )


@pytest.mark.voc
def test_voc_mini_index_fixture(voc_mini_index, voc_mini_root):
    """The shared fixture is the dataset stage's output for the subset (read back whole)."""
    index = DatasetIndex.read(voc_mini_index)
    assert index.name == "voc" and index.class_names == list(VOC_CLASSES)
    assert len(index.ids("val")) == 346 and index.has_column("mask")
    assert index.image_path(index.ids()[0]).parent == voc_mini_root / "JPEGImages"

"""The dataset stage's index (smaf.data.prepare) on synthetic and on real VOC 2012 data."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from smaf.data.voc import VOC_CLASSES, read_labels_csv

from smaf.data.prepare import prepare_dataset
from smaf.data.synthetic import SyntheticConfig, write_dataset
from smaf.errors import DataError
from smaf.io import read_id_list, write_id_list

ROLES = ("train_aug", "train", "val")


def _outputs(tmp_path):
    out = tmp_path / "index"
    return {
        "out_splits": {r: out / "splits" / f"{r}.txt" for r in ROLES},
        "out_labels": out / "cls_labels.csv",
        "out_info": out / "dataset.json",
    }


@pytest.fixture()
def synthetic_root(tmp_path):
    root = tmp_path / "VOC2012"
    write_dataset(SyntheticConfig(n_train_aug=10, n_train=4, n_val=4, n_test=2), root)
    return root


def test_prepare_synthetic(synthetic_root, tmp_path):
    outs = _outputs(tmp_path)
    info = prepare_dataset(
        root=synthetic_root,
        splits={r: r for r in ROLES},
        num_classes=6,
        saliency_dir=synthetic_root / "SALImages",
        name="synthetic",
        **outs,
    )
    assert info["images"] == {"train_aug": 10, "train": 4, "val": 4}
    assert info["saliency_maps_train_aug"] == 10
    assert info["class_names"][0] == "background" and len(info["class_names"]) == 7
    assert json.loads(outs["out_info"].read_text()) == info
    labels = read_labels_csv(outs["out_labels"], 6)
    assert len(labels) == 14  # train ⊂ train_aug, plus val
    assert read_id_list(outs["out_splits"]["val"]) == read_id_list(
        synthetic_root / "ImageSets" / "Segmentation" / "val.txt"
    )


def test_bad_input_val_overlapping_train_aug(synthetic_root, tmp_path):
    seg = synthetic_root / "ImageSets" / "Segmentation"
    write_id_list(
        seg / "val.txt", read_id_list(seg / "val.txt") + read_id_list(seg / "train.txt")[:1]
    )
    outs = _outputs(tmp_path)
    with pytest.raises(DataError, match="val images are also in train_aug"):
        prepare_dataset(root=synthetic_root, splits={r: r for r in ROLES}, num_classes=6, **outs)
    assert not outs["out_info"].exists()


def test_bad_input_missing_image(synthetic_root, tmp_path):
    seg = synthetic_root / "ImageSets" / "Segmentation"
    victim = read_id_list(seg / "train_aug.txt")[-1]
    (synthetic_root / "JPEGImages" / f"{victim}.jpg").unlink()
    outs = _outputs(tmp_path)
    with pytest.raises(DataError, match=victim):
        prepare_dataset(root=synthetic_root, splits={r: r for r in ROLES}, num_classes=6, **outs)
    assert not any(p.exists() for p in outs["out_splits"].values())


def test_bad_input_missing_dataset_folder(tmp_path):
    with pytest.raises(DataError, match="dataset folder not found.*datasets.voc2012.root"):
        prepare_dataset(
            root=tmp_path / "nowhere",
            splits={r: r for r in ROLES},
            num_classes=20,
            name="voc2012",
            **_outputs(tmp_path),
        )


def test_bad_input_image_without_class(synthetic_root, tmp_path):
    csv_path = synthetic_root / "cls_labels.csv"
    lines = csv_path.read_text().splitlines()
    first_id = lines[1].split(",")[0]
    lines[1] = ",".join([first_id] + ["0"] * 6)
    csv_path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=f"no foreground class.*{first_id}"):
        prepare_dataset(
            root=synthetic_root, splits={r: r for r in ROLES}, num_classes=6, **_outputs(tmp_path)
        )


@pytest.mark.voc
def test_prepare_real_voc(voc_mini, voc_mini_root, tmp_path):
    outs = _outputs(tmp_path)
    info = prepare_dataset(
        root=voc_mini_root,
        splits={"train_aug": "subset_train", "train": "subset_train", "val": "subset_val"},
        num_classes=20,
        label_source="masks",
        name="voc-mini",
        **outs,
    )
    assert info["images"] == {"train_aug": 330, "train": 330, "val": 346}
    assert info["class_names"] == list(VOC_CLASSES)
    reference = np.load(voc_mini / "extras" / "cls_labels.npy", allow_pickle=True).item()
    labels = read_labels_csv(outs["out_labels"], 20)
    assert len(labels) == 676
    for image_id, vec in labels.items():
        np.testing.assert_array_equal(vec, reference[int(image_id.replace("_", ""))])


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
    outs = _outputs(tmp_path)
    info = prepare_dataset(
        root=root,
        splits={"train_aug": "train_aug", "train": "subset_train", "val": "subset_val"},
        num_classes=20,
        label_source="masks",
        aug_mask_dir=voc_mini_root / "SegmentationClass",  # the subset's masks equal SBD's
        **outs,
    )
    assert info["images"]["train_aug"] == 330
    assert set(read_id_list(outs["out_splits"]["train_aug"])) == set(
        read_id_list(voc_mini_root / "ImageSets" / "Segmentation" / "subset_train.txt")
    )
    assert info["aug_masks_train"] == 330

"""The dataset index (smaf.data.index): build → write → read round trip, lookups, subsets,
fingerprints, and the errors of reading a missing or stale index."""

from __future__ import annotations

import json

import numpy as np
import pytest

from smaf.data.index import (
    ALL_ROLES,
    BASE_COLUMNS,
    DIGEST_COLUMNS,
    ROLES,
    DatasetIndex,
    ImageRecord,
    info_path_for,
    read_index,
    rows_fingerprint,
)
from smaf.errors import DataError

NAMES = ["cat", "dog", "owl"]


def _records() -> list[ImageRecord]:
    """Four images in a deliberate, non-sorted order; ids with leading zeros and digits only."""
    return [
        ImageRecord(
            "0042",
            "img/0042.jpg",
            mask="gt/0042.png",
            aug_mask="aug/0042.png",
            saliency="sal/0042.png",
            roles={"train_aug", "train"},
            labels=np.array([1, 0, 1], np.float32),
            width=30,
            height=20,
        ),
        ImageRecord(
            "007",
            "img/007.jpg",
            name="photos/007.JPG",
            mask="gt/007.png",
            roles={"train_aug"},
            labels=np.array([0, 1, 0], np.float32),
            width=8,
            height=9,
        ),
        ImageRecord(
            "2007_000032",
            "img/2007_000032.jpg",
            mask="gt/2007_000032.png",
            roles={"val", "holdout"},
            labels=np.array([0, 0, 1], np.float32),
            width=5,
            height=4,
        ),
        ImageRecord("1e5", "img/1e5.jpg", roles={"test"}),  # no mask, no labels
    ]


@pytest.fixture()
def written(tmp_path):
    index = DatasetIndex.build(_records(), NAMES, {"name": "toy", "source": "hand"})
    path = tmp_path / "data" / "index.csv"
    index.write(path)
    return index, path


def test_build_write_read_round_trip(written):
    built, path = written
    assert (path.parent / "dataset.json").is_file()
    back = DatasetIndex.read(path)
    assert back.class_names == ["background", *NAMES] == built.class_names
    assert back.num_classes == 3 and back.name == "toy" and back.info["source"] == "hand"
    # ids stay strings: leading zeros kept, nothing parsed as a number.
    assert back.ids() == ["0042", "007", "2007_000032", "1e5"]
    assert back.ids("train_aug") == ["0042", "007"]  # index order, not sorted
    assert back.ids("train") == ["0042"]
    assert back.ids("val") == ["2007_000032"]
    assert back.ids("test") == ["1e5"]
    assert back.ids("holdout") == ["2007_000032"]  # a source's extra role becomes a column
    assert back.roles == [*ROLES, "holdout"]
    np.testing.assert_array_equal(back.labels("0042"), [1, 0, 1])
    np.testing.assert_array_equal(back.labels("007"), [0, 1, 0])
    assert back.labels("0042").dtype == np.float32
    assert not back.labels("1e5").any()
    assert set(back.label_map()) == set(back.ids())
    assert str(back.image_path("007")) == "img/007.jpg"
    assert str(back.mask_path("0042")) == "gt/0042.png"
    assert str(back.mask_path("0042", "aug_mask")) == "aug/0042.png"
    assert str(back.mask_path("0042", "SegmentationClassAug")) == "aug/0042.png"
    assert str(back.mask_path("0042", "SegmentationClass")) == "gt/0042.png"
    assert back.mask_path("007", "aug_mask") is None and back.mask_path("1e5") is None
    assert str(back.saliency_path("0042")) == "sal/0042.png" and back.saliency_path("007") is None
    assert back.size("0042") == (20, 30) and back.size("007") == (9, 8)
    assert back.table.loc["007", "name"] == "photos/007.JPG"
    assert back.table.loc["0042", "name"] == "0042"  # the default name is the id
    assert back.has_column("aug_mask") and back.has_column("SegmentationClassAug")
    assert back.has_column("saliency") and "1e5" in back and "42" not in back
    assert back.fingerprint() == built.fingerprint()


def test_file_layout(written):
    _, path = written
    header = path.read_text().splitlines()[0].split(",")
    roles = [f"split_{r}" for r in (*ROLES, "holdout")]
    assert header == [*BASE_COLUMNS, *DIGEST_COLUMNS, *roles, *(f"label_{n}" for n in NAMES)]
    info = json.loads((path.parent / "dataset.json").read_text())
    assert info["class_names"] == ["background", *NAMES] and info["num_classes"] == 3


def test_subset_and_fingerprint(written):
    index, _ = written
    sub = index.subset(["007", "0042"])
    assert sub.ids() == ["007", "0042"] and sub.ids("train") == ["0042"]
    assert sub.class_names == index.class_names
    with pytest.raises(DataError, match="no images"):
        sub.ids("val")
    with pytest.raises(DataError, match=r"1 image ids are not in .*first: nope"):
        index.subset(["0042", "nope"])
    # The fingerprint follows what a stage's results depend on: here, one label.
    before = index.fingerprint(["0042", "007"])
    assert index.fingerprint(["0042"]) != before
    changed = index.table.copy()
    changed.loc["007", "label_owl"] = 1
    assert DatasetIndex(changed, index.info).fingerprint(["0042", "007"]) != before
    assert DatasetIndex(index.table.copy(), index.info).fingerprint(["0042", "007"]) == before
    # ... and not on images outside ``ids``.
    changed.loc["1e5", "image"] = "elsewhere.jpg"
    assert DatasetIndex(changed, index.info).fingerprint(["0042"]) == index.fingerprint(["0042"])


def test_unknown_role_and_label_count(written):
    index, _ = written
    with pytest.raises(DataError, match=r"no split 'trian'.*train_aug, train, val, test"):
        index.ids("trian")
    bad = ImageRecord("x", "x.jpg", labels=np.ones(2, np.float32))
    with pytest.raises(DataError, match="image x: 2 labels for 3 classes"):
        DatasetIndex.build([bad], NAMES)


def test_background_is_prepended_once():
    assert DatasetIndex.build([], NAMES).class_names == ["background", *NAMES]
    assert DatasetIndex.build([], ["background", *NAMES]).class_names == ["background", *NAMES]


def test_read_errors_name_the_file(written, tmp_path):
    _, path = written
    with pytest.raises(DataError, match=rf"not found: {tmp_path / 'none'}\.json.*prepare_dataset"):
        DatasetIndex.read(tmp_path / "none.csv")  # neither file: the first one read is named
    moved = path.with_name("moved.csv")
    path.rename(moved)
    with pytest.raises(DataError, match=rf"not found: {path}; run the prepare_dataset rule"):
        DatasetIndex.read(path)
    moved.rename(path)
    (path.parent / "dataset.json").unlink()
    with pytest.raises(DataError, match=r"not found: .*dataset\.json"):
        DatasetIndex.read(path)
    # An index of other classes than its info: a stale file, named as such.
    (path.parent / "dataset.json").write_text(json.dumps({"name": "toy", "class_names": ["bg"]}))
    (path.parent / "other.json").write_text(
        json.dumps({"name": "toy", "class_names": ["background", "cat", "emu"]})
    )
    with pytest.raises(DataError, match=r"toy lacks columns label_emu.*prepare_dataset"):
        DatasetIndex.read(path, path.parent / "other.json")


def test_read_index_accepts_either(written):
    index, path = written
    assert read_index(index) is index
    assert read_index(path).ids() == index.ids()
    assert read_index(str(path)).ids() == index.ids()


def test_info_path_for(tmp_path):
    assert info_path_for(tmp_path / "index.csv") == tmp_path / "dataset.json"
    assert info_path_for(tmp_path / "test_index.csv") == tmp_path / "test_index.json"
    assert str(info_path_for("a/index.csv")) == "a/dataset.json"


def test_rows_fingerprint_sees_only_the_rows_of_the_roles_a_job_reads(tmp_path):
    """What the workflow gives each job as `index_rows` (issue 21 item 9): an added val image
    changes val's fingerprint only; a label edit of a train_aug image changes train_aug's (and
    train's, the image is in both); the dataset.json counts change none."""

    def fingerprints(records, info=None):
        path = tmp_path / f"v{len(list(tmp_path.glob('v*')))}" / "index.csv"
        DatasetIndex.build(records, NAMES, info or {"name": "toy"}).write(path)
        return {r: rows_fingerprint(path, [r]) for r in ROLES} | {
            "all": rows_fingerprint(path, ALL_ROLES),
            "both": rows_fingerprint(path, ["train_aug", "val"]),
        }

    records = _records()
    before = fingerprints(records)
    assert len(set(before.values())) == len(before)  # every role reads other rows

    added = [*records, ImageRecord("new", "img/new.jpg", roles={"val"}, labels=np.ones(3))]
    after = fingerprints(added)
    assert [k for k in before if before[k] != after[k]] == ["val", "all", "both"]

    relabelled = _records()
    relabelled[0].labels = np.array([1, 1, 1], np.float32)  # 0042: train_aug and train
    after = fingerprints(relabelled)
    assert [k for k in before if before[k] != after[k]] == ["train_aug", "train", "all", "both"]

    # Counts and warnings are not what a job reads; a class name is.
    counted = fingerprints(records, {"name": "toy", "images": {"val": 9}, "warnings": ["x"]})
    assert counted == before
    assert fingerprints(records, {"name": "toy", "source": "other"})["val"] != before["val"]
    # A role no image has: the same (empty) rows whatever else changes.
    assert rows_fingerprint(tmp_path / "v0" / "index.csv", ["nothing"]) == rows_fingerprint(
        tmp_path / "v1" / "index.csv", ["nothing"]
    )

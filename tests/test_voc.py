"""VOC reader: layout, split lists, image-level labels (masks, XML, CSV, legacy .npy), the VOC
source adapter (train/val and test indexes) and SegmentationSet over its index."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from smaf.data import (
    DatasetIndex,
    labels_from_mask,
    load_legacy_cls_labels,
    read_labels_csv,
    write_labels_csv,
)
from smaf.data.datasets import SegmentationSet
from smaf.data.labels import labels_from_xml
from smaf.data.prepare import prepare_dataset, validate_index
from smaf.data.sources import voc
from smaf.data.sources.voc import TRAINVAL_ROLES, VOC_CLASSES, VOCLayout, image_labels
from smaf.errors import DataError
from smaf.io import load_mask, save_image, save_mask

NUM_FG = 20  # VOC foreground classes


# ------------------------------------------------------------------------------ real-data fixtures


@pytest.fixture(scope="session")
def layout(voc_mini_root: Path) -> VOCLayout:
    return VOCLayout.from_root(voc_mini_root)


@pytest.fixture(scope="session")
def subset_ids(layout: VOCLayout) -> list[str]:
    return layout.split_ids("subset")


@pytest.fixture(scope="session")
def subset_masks(layout: VOCLayout, subset_ids: list[str]) -> dict[str, np.ndarray]:
    """All 676 masks, read once for the whole session (about 1 s)."""
    return {i: load_mask(layout.mask_path(i)) for i in subset_ids}


@pytest.fixture(scope="session")
def reference_labels(voc_mini: Path) -> dict[str, np.ndarray]:
    """irn's cls_labels.npy via np.load(allow_pickle=True): a trusted file, in a test only."""
    raw = np.load(voc_mini / "extras" / "cls_labels.npy", allow_pickle=True).item()
    return {f"{int(k):010d}"[:4] + "_" + f"{int(k):010d}"[4:]: v for k, v in raw.items()}


# ------------------------------------------------------------------------- tiny synthetic dataset


def _make_tiny_voc(root: Path) -> VOCLayout:
    """A 3-image VOC tree: a (person+dog, with XML), b (cat), c (background only)."""
    rng = np.random.default_rng(0)
    masks = {
        "2007_000001": np.array([[0, 15, 15, 12], [0, 0, 255, 12], [0, 0, 0, 0]], np.uint8),
        "2007_000002": np.array([[8, 8, 0, 0], [8, 255, 0, 0], [0, 0, 0, 0]], np.uint8),
        "2007_000003": np.zeros((3, 4), np.uint8),
    }
    for image_id, mask in masks.items():
        save_image(
            root / "JPEGImages" / f"{image_id}.jpg", rng.integers(0, 255, (3, 4, 3), np.uint8)
        )
        save_mask(root / "SegmentationClass" / f"{image_id}.png", mask)
    split_dir = root / "ImageSets" / "Segmentation"
    split_dir.mkdir(parents=True)
    (split_dir / "train.txt").write_text("".join(f"{i}\n" for i in masks))
    (root / "Annotations").mkdir()
    (root / "Annotations" / "2007_000001.xml").write_text(
        "<annotation><filename>2007_000001.jpg</filename>"
        "<object><name>person</name><difficult>0</difficult>"
        "<part><name>head</name></part></object>"
        "<object><name> dog </name><difficult>1</difficult></object></annotation>"
    )
    return VOCLayout.from_root(root)


@pytest.fixture
def tiny(tmp_path: Path) -> VOCLayout:
    return _make_tiny_voc(tmp_path / "VOC2012")


def _tiny_index(layout: VOCLayout, **settings) -> DatasetIndex:
    """The tiny tree through the VOC adapter (not validated: 2007_000003 has no class), every
    image in every role."""
    splits = {role: "train" for role in TRAINVAL_ROLES}
    return voc.build(
        {"root": layout.root, "num_classes": NUM_FG, "splits": splits, **settings}, name="tiny"
    )


def _onehot(*classes: int) -> np.ndarray:
    out = np.zeros(NUM_FG, np.float32)
    out[[c - 1 for c in classes]] = 1.0
    return out


# ------------------------------------------------------------------------------ labels_from_mask


def test_voc_classes() -> None:
    assert len(VOC_CLASSES) == 21
    assert VOC_CLASSES[0] == "background"
    assert VOC_CLASSES[1] == "aeroplane"
    assert VOC_CLASSES[15] == "person"
    assert VOC_CLASSES[20] == "tvmonitor"


def test_labels_from_mask_basic() -> None:
    mask = np.array([[0, 3, 255], [20, 3, 0]], np.uint8)
    labels = labels_from_mask(mask, NUM_FG)
    assert labels.dtype == np.float32 and labels.shape == (NUM_FG,)
    np.testing.assert_array_equal(labels, _onehot(3, 20))
    # Background and ignore alone give no label; other integer dtypes work the same way.
    assert labels_from_mask(np.array([[0, 255]], np.int64), NUM_FG).sum() == 0


@pytest.mark.parametrize("bad", [30, 21])
def test_labels_from_mask_rejects_out_of_range(bad: int) -> None:
    mask = np.array([[0, 1], [bad, 255]], np.uint8)
    with pytest.raises(DataError, match=rf"\[{bad}\].*outside 0\.\.20"):
        labels_from_mask(mask, NUM_FG)


def test_labels_from_masks_match_reference_for_all_676(
    subset_masks: dict[str, np.ndarray], reference_labels: dict[str, np.ndarray]
) -> None:
    assert len(subset_masks) == 676
    for image_id, mask in subset_masks.items():
        np.testing.assert_array_equal(
            labels_from_mask(mask, NUM_FG), reference_labels[image_id], err_msg=image_id
        )


def test_image_labels_from_real_masks(
    layout: VOCLayout, subset_ids: list[str], reference_labels: dict[str, np.ndarray]
) -> None:
    # No CSV and no Annotations in the subset, so 'auto' falls back to the masks.
    ids = subset_ids[:25]
    labels = image_labels(layout, ids, NUM_FG)
    assert list(labels) == ids
    for i in ids:
        np.testing.assert_array_equal(labels[i], reference_labels[i])


# ------------------------------------------------------------------------- legacy cls_labels.npy


def test_load_legacy_cls_labels_matches_np_load(
    voc_mini: Path, reference_labels: dict[str, np.ndarray]
) -> None:
    labels = load_legacy_cls_labels(voc_mini / "extras" / "cls_labels.npy")
    assert len(labels) == len(reference_labels) == 12031
    assert "2007_000032" in labels
    assert labels.keys() == reference_labels.keys()
    for image_id, vec in labels.items():
        assert vec.dtype == np.float32
        np.testing.assert_array_equal(vec, reference_labels[image_id])
    subset = load_legacy_cls_labels(voc_mini / "extras" / "cls_labels_subset.npy")
    assert len(subset) == 676
    assert all(np.array_equal(v, labels[k]) for k, v in subset.items())


def test_load_legacy_cls_labels_refuses_malicious_pickle(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"echo pwned && echo pwned > {marker}",))

    path = tmp_path / "cls_labels.npy"
    np.save(path, np.array({np.int32(2007000032): Evil()}, dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=r"posix\.system|nt\.system|not allowed"):
        load_legacy_cls_labels(path)
    assert not marker.exists()
    assert "pwned" not in capfd.readouterr().out
    # Control: the payload is live; np.load(allow_pickle=True) would have run it.
    np.load(path, allow_pickle=True)
    assert marker.exists()


def test_load_legacy_cls_labels_rejects_other_files(tmp_path: Path) -> None:
    plain = tmp_path / "plain.npy"
    np.save(plain, np.zeros((3, 20), np.float32))
    with pytest.raises(DataError, match="not a pickled dict"):
        load_legacy_cls_labels(plain)
    with pytest.raises(DataError, match="not found"):
        load_legacy_cls_labels(tmp_path / "absent.npy")
    text = tmp_path / "text.npy"
    text.write_text("hello")
    with pytest.raises(DataError, match="legacy cls_labels"):
        load_legacy_cls_labels(text)


# --------------------------------------------------------------------------------- layout, splits


def test_split_ids(layout: VOCLayout, subset_ids: list[str]) -> None:
    train = layout.split_ids("subset_train")
    val = layout.split_ids("subset_val")
    assert len(train) == 330 and len(val) == 346 and len(subset_ids) == 676
    assert set(train) | set(val) == set(subset_ids)
    assert not set(train) & set(val)
    assert train[0] == "2007_000032"
    assert all(len(i) == 11 and i[4] == "_" for i in subset_ids)  # 'YYYY_NNNNNN', strings


def test_missing_split_list_names_the_file(layout: VOCLayout) -> None:
    with pytest.raises(DataError) as exc:
        layout.split_ids("train_aug")
    msg = str(exc.value)
    assert str(layout.split_dir / "train_aug.txt") in msg
    assert "subset_train" in msg  # lists what is available


def test_images_and_masks_align_for_all_676(
    layout: VOCLayout, subset_ids: list[str], subset_masks: dict[str, np.ndarray]
) -> None:
    for image_id in subset_ids:
        with Image.open(layout.image_path(image_id)) as img:  # header only, no decode
            width, height = img.size
        assert subset_masks[image_id].shape == (height, width), image_id


def test_validate_real_subset(layout: VOCLayout) -> None:
    ids = layout.validate("subset_train", require_masks=True)
    assert len(ids) == 330
    with pytest.raises(DataError, match="SegmentationClassAug"):
        layout.validate("subset_train", require_masks=True, aug=True)


def test_validate_missing_root(tmp_path: Path) -> None:
    layout = VOCLayout.from_root(tmp_path / "nowhere" / "VOC2012")
    with pytest.raises(
        DataError, match=r"dataset folder not found: .*nowhere.*datasets\.voc\.root"
    ):
        layout.validate("train", name="voc")


def test_validate_missing_image_and_mask(tiny: VOCLayout) -> None:
    index = _tiny_index(tiny)
    assert tiny.validate("train", require_masks=True) == [
        "2007_000001",
        "2007_000002",
        "2007_000003",
    ]
    tiny.image_path("2007_000002").unlink()
    with pytest.raises(DataError) as exc:
        tiny.validate("train")
    assert str(tiny.image_path("2007_000002")) in str(exc.value)
    assert "1 of 3 images" in str(exc.value)
    # The dataset stage checks the index up front, before any stage or worker starts.
    with pytest.raises(DataError, match=r"2007_000002\.jpg"):
        validate_index(index)


def test_validate_missing_mask(tiny: VOCLayout) -> None:
    tiny.mask_path("2007_000003").unlink()
    tiny.validate("train")  # masks not required
    with pytest.raises(DataError, match=r"1 of 3 masks .*2007_000003"):
        tiny.validate("train", require_masks=True)


# ------------------------------------------------------------------------------- label sources


def test_labels_from_xml(tiny: VOCLayout, tmp_path: Path) -> None:
    labels = labels_from_xml(tiny.annotation_path("2007_000001"), VOC_CLASSES)
    np.testing.assert_array_equal(labels, _onehot(12, 15))  # dog, person; 'head' is a part
    evil = tmp_path / "evil.xml"
    evil.write_text('<!DOCTYPE a [<!ENTITY x "y">]><annotation>&x;</annotation>')
    with pytest.raises(DataError, match="DOCTYPE"):
        labels_from_xml(evil, VOC_CLASSES)
    unknown = tmp_path / "unknown.xml"
    unknown.write_text("<annotation><object><name>unicorn</name></object></annotation>")
    with pytest.raises(DataError, match="unicorn"):
        labels_from_xml(unknown, VOC_CLASSES)
    with pytest.raises(DataError, match="annotation not found"):
        labels_from_xml(tmp_path / "absent.xml", VOC_CLASSES)


def test_image_labels_sources(tiny: VOCLayout, tmp_path: Path) -> None:
    ids = tiny.split_ids("train")
    from_masks = image_labels(tiny, ids, NUM_FG, source="masks")
    np.testing.assert_array_equal(from_masks["2007_000001"], _onehot(12, 15))
    np.testing.assert_array_equal(from_masks["2007_000002"], _onehot(8))
    assert from_masks["2007_000003"].sum() == 0

    # 'auto' without a CSV: XML where present (2007_000001), masks elsewhere.
    (tiny.annotation_path("2007_000001")).write_text(
        "<annotation><object><name>cow</name></object></annotation>"
    )
    auto = image_labels(tiny, ids, NUM_FG)
    np.testing.assert_array_equal(auto["2007_000001"], _onehot(10))
    np.testing.assert_array_equal(auto["2007_000002"], _onehot(8))

    # A CSV at root/cls_labels.csv wins in 'auto'.
    write_labels_csv(tiny.root / "cls_labels.csv", {i: _onehot(1) for i in ids}, VOC_CLASSES)
    auto = image_labels(tiny, ids, NUM_FG)
    assert all(np.array_equal(v, _onehot(1)) for v in auto.values())

    # A CSV that lacks ids is an error, not a silent fallback.
    partial = tmp_path / "partial.csv"
    write_labels_csv(partial, {ids[0]: _onehot(2)}, VOC_CLASSES)
    with pytest.raises(DataError, match=r"lacks 2 of 3 ids"):
        image_labels(tiny, ids, NUM_FG, source="csv", labels_csv=partial)


def test_image_labels_prefers_aug_masks(tmp_path: Path) -> None:
    layout = _make_tiny_voc(tmp_path / "VOC2012")
    aug_dir = tmp_path / "SegmentationClassAug"
    save_mask(aug_dir / "2007_000003.png", np.full((3, 4), 5, np.uint8))
    layout = VOCLayout.from_root(layout.root, aug_mask_dir=aug_dir)
    labels = image_labels(layout, layout.split_ids("train"), NUM_FG, source="masks")
    np.testing.assert_array_equal(labels["2007_000003"], _onehot(5))  # from the aug mask
    np.testing.assert_array_equal(labels["2007_000002"], _onehot(8))  # no aug mask: original


def test_image_labels_bad_mask_names_file(tiny: VOCLayout) -> None:
    save_mask(tiny.mask_path("2007_000002"), np.full((3, 4), 30, np.uint8))
    with pytest.raises(DataError, match=r"2007_000002\.png holds values \[30\]"):
        image_labels(tiny, tiny.split_ids("train"), NUM_FG, source="masks")


# -------------------------------------------------------------------------------------- CSV I/O


def test_labels_csv_round_trip(tmp_path: Path) -> None:
    labels = {"2007_000032": _onehot(1, 15), "2011_003276": _onehot(20), "0001": _onehot(3)}
    path = tmp_path / "labels.csv"
    write_labels_csv(path, labels, VOC_CLASSES)
    lines = path.read_text().splitlines()
    assert lines[0] == "image_id," + ",".join(VOC_CLASSES[1:])
    assert lines[1].startswith("2007_000032,1,0,")
    back = read_labels_csv(path, NUM_FG, class_names=VOC_CLASSES)
    assert list(back) == list(labels)  # ids stay strings, leading zeros kept, order kept
    for k, v in labels.items():
        assert back[k].dtype == np.float32
        np.testing.assert_array_equal(back[k], v)
    assert not list(tmp_path.glob(".*tmp*"))  # atomic write left no temporary behind


def test_labels_csv_round_trip_real(
    reference_labels: dict[str, np.ndarray], subset_ids: list[str], tmp_path: Path
) -> None:
    labels = {i: reference_labels[i] for i in subset_ids}
    write_labels_csv(tmp_path / "l.csv", labels, VOC_CLASSES[1:])
    back = read_labels_csv(tmp_path / "l.csv", NUM_FG)
    assert back.keys() == labels.keys()
    assert all(np.array_equal(back[i], labels[i]) for i in subset_ids)


def test_labels_csv_errors(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("id,a,b\n2007_000032,0,1\n")
    with pytest.raises(DataError) as exc:
        read_labels_csv(path, NUM_FG)
    assert str(path) in str(exc.value) and "image_id,<class1>,...,<class20>" in str(exc.value)
    with pytest.raises(DataError, match="image_id,aeroplane,bicycle"):
        read_labels_csv(path, NUM_FG, class_names=VOC_CLASSES)
    path.write_text("image_id," + ",".join(VOC_CLASSES[1:]) + "\n2007_000032" + ",2" * 20 + "\n")
    with pytest.raises(DataError, match="line 2 .*0 or 1"):
        read_labels_csv(path, NUM_FG)
    with pytest.raises(DataError, match="not found"):
        read_labels_csv(tmp_path / "absent.csv", NUM_FG)
    with pytest.raises(ValueError, match="shape"):
        write_labels_csv(tmp_path / "x.csv", {"a": np.ones(3)}, VOC_CLASSES)


# ------------------------------------------------------------------------------- the adapter


def test_adapter_trainval_index(tiny: VOCLayout) -> None:
    index = _tiny_index(tiny)
    ids = ["2007_000001", "2007_000002", "2007_000003"]
    assert index.class_names == list(VOC_CLASSES) and index.num_classes == NUM_FG
    assert all(index.ids(role) == ids for role in TRAINVAL_ROLES)
    np.testing.assert_array_equal(index.labels(ids[0]), _onehot(12, 15))  # XML (auto)
    np.testing.assert_array_equal(index.labels(ids[1]), _onehot(8))  # mask (no XML)
    assert index.mask_path(ids[1]) == tiny.mask_path(ids[1])
    assert index.image_path(ids[1]) == tiny.image_path(ids[1])
    assert index.saliency_path(ids[1]) is None and index.mask_path(ids[1], "aug_mask") is None
    assert index.info["label_source"] == "auto" and index.info["root"] == str(tiny.root)
    with pytest.raises(ValueError, match="roles must be"):
        voc.build({"root": tiny.root, "num_classes": NUM_FG, "splits": {}}, name="x", roles=["val"])


def _tiny_test_root(tmp_path: Path) -> Path:
    """A VOC2012test-like folder: two images and a test list, no masks."""
    root = tmp_path / "VOC2012test"
    rng = np.random.default_rng(1)
    for image_id in ("2008_000001", "2008_000002"):
        save_image(
            root / "JPEGImages" / f"{image_id}.jpg", rng.integers(0, 255, (5, 7, 3), np.uint8)
        )
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "test.txt").write_text("2008_000002\n2008_000001\n")
    return root


def test_adapter_test_index(tiny: VOCLayout, tmp_path: Path) -> None:
    """roles ("test",): the images of test_root's test list, without masks or labels, with the
    class names of the train/val dataset; prepared into test_index.csv / test_index.json."""
    test_root = _tiny_test_root(tmp_path)
    settings = {
        "root": str(tiny.root),
        "test_root": str(test_root),
        "num_classes": NUM_FG,
        "splits": {"test": "test"},
    }
    out = tmp_path / "data" / "test_index.csv"
    info = prepare_dataset(
        source="voc", settings=settings, out_index=out, name="tiny", roles=("test",)
    )
    assert info["images"] == {"test": 2}
    assert info["class_names"] == list(VOC_CLASSES) and info["root"] == str(test_root)
    assert (tmp_path / "data" / "test_index.json").is_file()
    assert not (tmp_path / "data" / "dataset.json").exists()
    index = DatasetIndex.read(out)
    assert index.ids("test") == ["2008_000002", "2008_000001"]  # the list's order
    for image_id in index.ids():
        assert index.image_path(image_id) == test_root / "JPEGImages" / f"{image_id}.jpg"
        assert index.mask_path(image_id) is None and not index.labels(image_id).any()
        assert index.size(image_id) == (5, 7)
    with pytest.raises(DataError, match="split 'val' of dataset tiny has no images"):
        index.ids("val")
    items = SegmentationSet(index, "test")
    assert items[0]["mask"] is None and items[0]["image"].shape == (5, 7, 3)

    # A missing test image is named; nothing is written.
    (test_root / "JPEGImages" / "2008_000001.jpg").unlink()
    again = tmp_path / "again" / "test_index.csv"
    with pytest.raises(DataError, match=r"1 of 2 images .*2008_000001"):
        prepare_dataset(
            source="voc", settings=settings, out_index=again, name="tiny", roles=("test",)
        )
    assert not again.parent.exists()


@pytest.mark.voc
def test_adapter_test_index_real(voc_mini_root: Path) -> None:
    """test_root defaults to root; here the val half stands in for the test list."""
    settings = {"root": voc_mini_root, "num_classes": NUM_FG, "splits": {"test": "subset_val"}}
    index = voc.build(settings, name="voc", roles=("test",))
    assert index.ids("test") == VOCLayout.from_root(voc_mini_root).split_ids("subset_val")
    assert not index.has_column("mask") and index.class_names == list(VOC_CLASSES)


# ----------------------------------------------------------------------------- SegmentationSet


def test_segmentation_set_items(
    voc_mini_index: Path, reference_labels: dict[str, np.ndarray]
) -> None:
    seen: list[str] = []

    def transform(item: dict) -> dict:
        seen.append(item["id"])
        item["flag"] = True
        return item

    ds = SegmentationSet(voc_mini_index, "val", masks="required", transform=transform)
    assert len(ds) == 346
    for index in (0, 100, 345):
        item = ds[index]
        assert item["id"] == ds.ids[index] and item["flag"]
        image, mask = item["image"], item["mask"]
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        assert mask.dtype == np.uint8 and mask.shape == image.shape[:2]
        assert item["labels"].dtype == np.float32 and item["labels"].shape == (NUM_FG,)
        np.testing.assert_array_equal(item["labels"], labels_from_mask(mask, NUM_FG))
        np.testing.assert_array_equal(item["labels"], reference_labels[item["id"]])
        assert "saliency" not in item
    assert seen == [ds.ids[0], ds.ids[100], ds.ids[345]]

    no_masks = SegmentationSet(voc_mini_index, "val", masks="none")
    assert no_masks[0]["mask"] is None
    np.testing.assert_array_equal(no_masks[0]["labels"], reference_labels[no_masks.ids[0]])
    assert len(SegmentationSet(voc_mini_index, None, masks="none")) == 676  # every image

    with pytest.raises(DataError, match="Google Drive"):
        SegmentationSet(voc_mini_index, "val", saliency=True)
    with pytest.raises(DataError, match="split 'test' of dataset voc has no images"):
        SegmentationSet(voc_mini_index, "test")
    with pytest.raises(ValueError, match="masks must be"):
        SegmentationSet(voc_mini_index, "val", masks="yes")


def test_segmentation_set_saliency_and_size_checks(tiny: VOCLayout, tmp_path: Path) -> None:
    sal_dir = tmp_path / "sal"
    sal_dir.mkdir()
    for i, image_id in enumerate(tiny.split_ids("train")):
        Image.fromarray(np.full((3, 4), 50 * i, np.uint8), mode="L").save(
            sal_dir / f"{image_id}.png"
        )
    index = _tiny_index(tiny, saliency_dir=sal_dir)
    ds = SegmentationSet(index, "train", saliency=True)
    item = ds[2]
    assert item["saliency"].dtype == np.uint8 and item["saliency"].shape == (3, 4)
    assert int(item["saliency"][0, 0]) == 100

    # A mask of the wrong size is reported with the image id (the dataset stage reports it
    # earlier still, see test_prepare; the Dataset checks what it reads all the same).
    save_mask(tiny.mask_path("2007_000002"), np.zeros((4, 4), np.uint8))
    with pytest.raises(DataError, match=r"image 2007_000002: mask .* is 4x4 but the image is 4x3"):
        ds[1]
    # 'auto' masks: an image without one gives None (e.g. test images), 'required' fails up front.
    table = index.table.copy()
    table.loc["2007_000003", "mask"] = ""
    no_mask = DatasetIndex(table, index.info)
    test_like = SegmentationSet(no_mask, "train")
    assert test_like[2]["mask"] is None
    with pytest.raises(DataError, match="2007_000003"):
        SegmentationSet(no_mask, "train", masks="required")

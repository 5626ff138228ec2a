"""COCO instance annotations → semantic masks (smaf.data.coco_masks) and the ``coco`` source
adapter.

Painting conventions are checked on hand-made instances whose result is written out by hand;
decoding against pycocotools' own ``COCO.annToMask``; the shards against one whole conversion;
the adapter on a small COCO layout written here (generated pictures, real file layout).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
from coco_data import COCO_CATEGORIES, uncompressed_rle
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from smaf.data.coco_masks import (
    check_masks,
    convert_masks,
    decode_segmentation,
    load_annotations,
    semantic_mask,
    shard_bounds,
)
from smaf.data.index import DatasetIndex
from smaf.data.prepare import prepare_dataset
from smaf.data.sources import ADAPTERS, WATCHED
from smaf.data.sources import coco as coco_source
from smaf.errors import ConfigError, DataError
from smaf.io import load_mask
from smaf.report.tables import per_class_table

LABEL_OF = {cat_id: k for k, (cat_id, _) in enumerate(COCO_CATEGORIES, start=1)}
PERSON, CAR, DOG = 1, 3, 18  # COCO category ids → labels 1, 3, 17 (id 12 does not exist)


def _box(h, w, y0, y1, x0, x1):
    region = np.zeros((h, w), np.uint8)
    region[y0:y1, x0:x1] = 1
    return region


def _ann(region, cat, *, ann_id=1, image_id=1, crowd=0, area=None):
    rle = mask_utils.encode(np.asfortranarray(region))
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": cat,
        "iscrowd": crowd,
        "area": float(region.sum() if area is None else area),
        "segmentation": uncompressed_rle(region)
        if crowd
        else {"counts": rle["counts"].decode("ascii"), "size": list(rle["size"])},
    }


# --------------------------------------------------------------------------------- decoding
def test_uncompressed_rle_hand_case() -> None:
    # Column-major runs on a 3x4 image: 2 zeros, 3 ones (flat 2, 3, 4), 7 zeros.
    got = decode_segmentation({"counts": [2, 3, 7], "size": [3, 4]}, 3, 4)
    want = np.array([[0, 1, 0, 0], [0, 1, 0, 0], [1, 0, 0, 0]], np.uint8)
    np.testing.assert_array_equal(got, want)


def test_decoding_matches_pycocotools_ann_to_mask() -> None:
    h, w = 20, 30
    anns = [
        # a polygon of two parts (merged), a compressed RLE, an uncompressed (crowd) RLE
        {"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 1.0,
         "segmentation": [[2, 2, 12, 2, 12, 9, 2, 9], [15.5, 3, 25, 4, 20, 15]]},
        _ann(_box(h, w, 3, 17, 5, 11), CAR, ann_id=2),
        _ann(_box(h, w, 10, 20, 18, 30), DOG, ann_id=3, crowd=1),
    ]  # fmt: skip
    api = COCO()
    api.dataset = {
        "images": [{"id": 1, "height": h, "width": w, "file_name": "a.jpg"}],
        "annotations": anns,
        "categories": [{"id": c, "name": n} for c, n in COCO_CATEGORIES],
    }
    api.createIndex()
    for ann in anns:
        np.testing.assert_array_equal(
            decode_segmentation(ann["segmentation"], h, w), api.annToMask(ann)
        )
    assert decode_segmentation([], h, w).sum() == 0


# --------------------------------------------------------------------------------- painting
def test_smaller_instances_lie_on_top_whatever_the_file_order() -> None:
    big = _box(6, 6, 0, 6, 0, 6)  # person, 36 px
    small = _box(6, 6, 1, 3, 2, 5)  # car, 6 px, inside it
    want = np.array(
        [
            [1, 1, 1, 1, 1, 1],
            [1, 1, 3, 3, 3, 1],
            [1, 1, 3, 3, 3, 1],
            [1, 1, 1, 1, 1, 1],
            [1, 1, 1, 1, 1, 1],
            [1, 1, 1, 1, 1, 1],
        ]
    )
    for anns in ([_ann(big, PERSON), _ann(small, CAR)], [_ann(small, CAR), _ann(big, PERSON)]):
        np.testing.assert_array_equal(semantic_mask(anns, 6, 6, LABEL_OF), want)


def test_equal_areas_the_first_listed_ends_on_top() -> None:
    a = _box(2, 4, 0, 2, 0, 3)  # 6 px
    b = _box(2, 4, 0, 2, 1, 4)  # 6 px, overlapping columns 1-2
    got = semantic_mask([_ann(a, PERSON), _ann(b, DOG)], 2, 4, LABEL_OF)
    np.testing.assert_array_equal(got, [[1, 1, 1, 17], [1, 1, 1, 17]])
    got = semantic_mask([_ann(b, DOG), _ann(a, PERSON)], 2, 4, LABEL_OF)
    np.testing.assert_array_equal(got, [[1, 17, 17, 17], [1, 17, 17, 17]])


def test_the_area_field_orders_the_instances() -> None:
    # As coco2voc: the annotation's `area` decides, not its pixel count.
    a = _box(2, 4, 0, 2, 0, 3)  # 6 px, but declared small
    b = _box(2, 4, 0, 1, 2, 4)  # 2 px
    got = semantic_mask([_ann(a, PERSON, area=1.0), _ann(b, DOG)], 2, 4, LABEL_OF)
    np.testing.assert_array_equal(got, [[1, 1, 1, 17], [1, 1, 1, 0]])


def test_crowd_regions_get_their_class_or_255() -> None:
    crowd = _box(4, 4, 0, 4, 0, 4)
    person = _box(4, 4, 1, 3, 1, 3)
    anns = [_ann(crowd, CAR, crowd=1), _ann(person, PERSON, ann_id=2)]
    inner = np.zeros((4, 4), bool)
    inner[1:3, 1:3] = True
    got = semantic_mask(anns, 4, 4, LABEL_OF)
    np.testing.assert_array_equal(got, np.where(inner, 1, 3))
    got = semantic_mask(anns, 4, 4, LABEL_OF, crowd="ignore")
    np.testing.assert_array_equal(got, np.where(inner, 1, 255))


def test_segmentation_of_another_size_is_a_data_error() -> None:
    ann = _ann(_box(5, 5, 0, 2, 0, 2), PERSON, ann_id=7)
    with pytest.raises(DataError, match="annotation 7 is 5x5 but its image"):
        semantic_mask([ann], 4, 6, LABEL_OF, source="x.json")


# --------------------------------------------------------------------- files, shards, resume
def _instances(n_images=7, empty=(2, 5), size=(12, 16)):
    """An instances dict of ``n_images`` images (ids 10, 20, ...); ``empty`` have no annotation."""
    h, w = size
    images, anns = [], []
    for k in range(n_images):
        image_id = 10 * (k + 1)
        images.append(
            {"id": image_id, "file_name": f"COCO_val2014_{image_id:012d}.jpg", "height": h,
             "width": w}
        )  # fmt: skip
        if k in empty:
            continue
        anns.append(_ann(_box(h, w, 0, h, 0, w // 2 + k), PERSON, ann_id=len(anns) + 1,
                         image_id=image_id))  # fmt: skip
        anns.append(_ann(_box(h, w, k % 5, k % 5 + 4, 3, 9), DOG, ann_id=len(anns) + 1,
                         image_id=image_id, crowd=int(k == 3)))  # fmt: skip
    categories = [{"supercategory": "x", "id": c, "name": n} for c, n in COCO_CATEGORIES]
    return {"images": images, "annotations": anns, "categories": categories}


def _write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def test_shard_bounds_tile_the_images() -> None:
    assert [shard_bounds(10, (k, 3)) for k in (1, 2, 3)] == [(0, 3), (3, 6), (6, 10)]
    assert [shard_bounds(2, (k, 3)) for k in (1, 2, 3)] == [(0, 0), (0, 1), (1, 2)]
    with pytest.raises(ValueError):
        shard_bounds(10, (0, 3))


def test_shards_together_equal_one_conversion_and_gather(tmp_path) -> None:
    src = _write(tmp_path / "instances_val2014.json", _instances())
    whole = convert_masks(src, tmp_path / "whole")
    assert (whole["written"], whole["skipped"], whole["without_annotations"]) == (7, 0, 2)
    markers = [tmp_path / "m" / f"shard{k}of3.done" for k in (1, 2, 3)]
    results = [
        convert_masks(src, tmp_path / "sharded", shard=(k, 3), marker=markers[k - 1])
        for k in (1, 2, 3)
    ]
    assert [r["stems"] for r in results] == [
        whole["stems"][a:b] for a, b in ((0, 2), (2, 4), (4, 7))
    ]
    for stem in whole["stems"]:
        a = load_mask(tmp_path / "whole" / f"{stem}.png")
        b = load_mask(tmp_path / "sharded" / f"{stem}.png")
        np.testing.assert_array_equal(a, b)
    # Images without annotations get an all-background mask.
    assert not load_mask(tmp_path / "whole" / "COCO_val2014_000000000030.png").any()
    summary = check_masks(markers, tmp_path / "sharded", out=tmp_path / "val2014.done")
    assert summary == {
        "annotations": str(src),
        "images": 7,
        "with_annotations": 5,
        "without_annotations": 2,
        "crowd": "class",
        "shards": 3,
    }
    assert json.loads((tmp_path / "val2014.done").read_text()) == summary

    with pytest.raises(DataError, match="do not form one conversion"):
        check_masks(markers[:2], tmp_path / "sharded")
    (tmp_path / "sharded" / f"{whole['stems'][5]}.png").unlink()
    with pytest.raises(DataError, match=f"1 masks are missing .*{whole['stems'][5]}.png"):
        check_masks(markers, tmp_path / "sharded")


def test_a_shard_resumes_and_reconverts_when_its_settings_change(tmp_path) -> None:
    src = _write(tmp_path / "instances_val2014.json", _instances())
    out = tmp_path / "masks"
    first = convert_masks(src, out, shard=(2, 2))
    assert (first["written"], first["skipped"]) == (4, 0)
    victim = out / f"{first['stems'][1]}.png"
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    victim.unlink()  # as if the job had been killed before writing it
    again = convert_masks(src, out, shard=(2, 2))
    assert (again["written"], again["skipped"]) == (1, 3)
    assert victim.is_file()
    kept = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png") if p != victim}
    assert kept == {k: v for k, v in mtimes.items() if k != victim.name}
    # Another crowd convention rewrites every mask of the shard.
    ignore = convert_masks(src, out, shard=(2, 2), crowd="ignore")
    assert (ignore["written"], ignore["skipped"]) == (4, 0)
    crowd_image = out / "COCO_val2014_000000000040.png"  # k = 3: its dog is a crowd
    assert (load_mask(crowd_image) == 255).any()


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda text, data: text[: len(text) // 2], "is not valid JSON"),
        (lambda text, data: json.dumps({"images": []}), "no `images`, `annotations`"),
        (
            lambda text, data: json.dumps(
                {
                    **data,
                    "annotations": [
                        *data["annotations"],
                        {**data["annotations"][0], "id": 77, "image_id": 999},
                    ],
                }  # fmt: skip
            ),
            "annotation 77 points at image id 999, not in `images`",
        ),
        (
            lambda text, data: json.dumps(
                {
                    **data,
                    "annotations": [
                        *data["annotations"],
                        {**data["annotations"][0], "id": 78, "category_id": 12},
                    ],
                }  # fmt: skip
            ),
            "annotation 78 has category id 12, not in `categories`",
        ),
        (
            lambda text, data: json.dumps({**data, "images": data["images"] + data["images"][:1]}),
            "image id 10 is listed twice",
        ),
    ],
    ids=["truncated", "not-coco", "unknown-image", "unknown-category", "duplicate-image"],
)
def test_bad_annotation_files_fail_before_anything_is_written(tmp_path, damage, message) -> None:
    data = _instances()
    src = tmp_path / "instances_val2014.json"
    src.write_text(damage(json.dumps(data), data))
    out, marker = tmp_path / "masks", tmp_path / "shard1of1.done"
    with pytest.raises(DataError, match=message) as err:
        convert_masks(src, out, marker=marker)
    assert str(src) in str(err.value) and "\n" not in str(err.value)
    assert not marker.exists()
    assert not out.exists() or not any(out.iterdir())


def test_missing_annotation_file_names_it(tmp_path) -> None:
    with pytest.raises(DataError, match="annotation file not found: .*instances_val2014.json"):
        load_annotations(tmp_path / "annotations" / "instances_val2014.json")


# ----------------------------------------------------------------------------------- adapter
@pytest.fixture()
def coco_root(tmp_path):
    """A COCO layout: train2014 (5 images, 1 without annotations), val2014 (4, 1 without)."""
    root = tmp_path / "coco"
    rng = np.random.default_rng(0)
    sets = {}
    for coco_set, n, empty in (("train2014", 5, (4,)), ("val2014", 4, (0,))):
        data = _instances(n, empty=empty)
        offset = 0 if coco_set == "train2014" else 1000
        for im in data["images"]:
            im["id"] += offset
            im["file_name"] = f"COCO_{coco_set}_{im['id']:012d}.jpg"
            pixels = rng.integers(0, 255, (im["height"], im["width"], 3), dtype=np.uint8)
            (root / coco_set).mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(root / coco_set / im["file_name"])
        for ann in data["annotations"]:
            ann["image_id"] += offset
        src = _write(root / "annotations" / f"instances_{coco_set}.json", data)
        convert_masks(src, tmp_path / "masks" / coco_set)
        sets[coco_set] = data
    return root, sets


def _settings(root, **kw):
    return {
        "source": "coco",
        "root": str(root),
        "num_classes": 80,
        "masks_dir": str(root.parent / "masks"),
        **kw,
    }


def test_adapter_indexes_annotated_images_with_labels_and_masks(coco_root, tmp_path) -> None:
    root, _ = coco_root
    assert ADAPTERS["coco"] is coco_source.build and WATCHED["coco"] is coco_source.watched
    sal = tmp_path / "sal"
    sal.mkdir()
    Image.new("L", (16, 12)).save(sal / "COCO_train2014_000000000010.png")
    out = tmp_path / "results" / "index.csv"
    info = prepare_dataset(
        source="coco",
        settings=_settings(root, saliency_dir=str(sal)),
        out_index=out,
        name="coco2014",
    )
    index = DatasetIndex.read(out)
    assert index.class_names == ["background", *(n for _, n in COCO_CATEGORIES)]
    assert index.num_classes == 80 and info["num_classes"] == 80
    train = [f"COCO_train2014_{i:012d}" for i in (10, 20, 30, 40)]  # 50 has no annotation
    val = [f"COCO_val2014_{i:012d}" for i in (1020, 1030, 1040)]  # 1010 has none
    assert index.ids("train_aug") == train and index.ids("train") == train
    assert index.ids("val") == val
    assert info["images"] == {"train_aug": 4, "train": 4, "val": 3}
    assert info["images_without_annotations"] == {"train2014": 1, "val2014": 1}
    # Labels: person (label 1) and dog (COCO id 18 → label 17), the crowd dog included.
    want = np.zeros(80, np.float32)
    want[[0, 16]] = 1
    for image_id in train + val:
        np.testing.assert_array_equal(index.labels(image_id), want)
    assert index.mask_path(val[0]) == tmp_path / "masks" / "val2014" / f"{val[0]}.png"
    assert index.image_path(train[0]) == root / "train2014" / f"{train[0]}.jpg"
    assert index.saliency_path(train[0]) == sal / f"{train[0]}.png"
    assert index.saliency_path(train[1]) is None
    assert index.size(train[0]) == (12, 16)
    watched = coco_source.watched(_settings(root, saliency_dir=str(sal)))
    assert (
        root / "train2014" in watched and root / "annotations" / "instances_val2014.json" in watched
    )
    assert sal in watched


def test_adapter_takes_a_list_file_as_a_split(coco_root, tmp_path) -> None:
    root, _ = coco_root
    subset = tmp_path / "train_subset.txt"
    subset.write_text("COCO_train2014_000000000030\nCOCO_train2014_000000000010\n")
    index = coco_source.build(_settings(root, splits={"train": str(subset)}), name="coco2014")
    # Rows keep the training order (index order), whatever the list's order.
    assert index.ids("train") == ["COCO_train2014_000000000010", "COCO_train2014_000000000030"]
    assert len(index.ids("train_aug")) == 4
    subset.write_text("COCO_train2014_000000000050\n")  # listed in the json, no annotation
    with pytest.raises(DataError, match="not annotated images of train2014, val2014"):
        coco_source.build(_settings(root, splits={"train": str(subset)}), name="coco2014")


def test_adapter_errors_name_the_file_and_the_fix(coco_root, tmp_path) -> None:
    root, _ = coco_root
    with pytest.raises(ConfigError, match="num_classes is 20 but .* has 80 categories"):
        coco_source.build(_settings(root, num_classes=20), name="coco2014")
    with pytest.raises(DataError, match="no test images"):
        coco_source.build(_settings(root), name="coco2014", roles=("test",))
    (root / "val2014" / "COCO_val2014_000000001030.jpg").unlink()
    with pytest.raises(DataError, match=r"1 of 3 images listed in .*instances_val2014.json are "
                       r"missing .*COCO_val2014_000000001030.jpg\). Re-extract val2014.zip"):  # fmt: skip
        coco_source.build(_settings(root), name="coco2014")


def test_adapter_asks_for_the_conversion_when_masks_are_missing(coco_root, tmp_path) -> None:
    root, _ = coco_root
    (tmp_path / "masks" / "train2014" / "COCO_train2014_000000000020.png").unlink()
    with pytest.raises(DataError, match=r"1 train images have no converted mask .*"
                       r"resources/coco2014/masks/train2014.done"):  # fmt: skip
        coco_source.build(_settings(root), name="coco2014")


def test_81_classes_are_evaluated_and_tabled(coco_root, tmp_path) -> None:
    from smaf.stages.evaluate import evaluate_split

    root, _ = coco_root
    out = tmp_path / "results" / "index.csv"
    prepare_dataset(source="coco", settings=_settings(root), out_index=out, name="coco2014")
    # The ground truth scored against itself: IoU 1 for the classes present, NaN for the rest.
    csv = tmp_path / "eval.csv"
    record = evaluate_split(tmp_path / "masks" / "val2014", out, "val", out_csv=csv)
    assert record["miou"] == pytest.approx(1.0)
    table = per_class_table({"smaf_seed_val": csv})
    assert len(table) == 82 and table.index[-1] == "mean"
    assert list(table.index[:81]) == ["background", *(n for _, n in COCO_CATEGORIES)]
    assert table.loc["dog", "smaf_seed_val"] == 100.0
    assert pd.isna(table.loc["traffic light", "smaf_seed_val"])
    assert os.path.getsize(csv) > 0

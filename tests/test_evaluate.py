"""Seed / CRF evaluation: hand-computed scores, the per-class CSV and JSON record, the summary
table, the SegmentationClassAug switch, and the real VOC subset."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from smaf.data.index import DatasetIndex, ImageRecord
from smaf.data.sources.voc import VOC_CLASSES, class_names_for
from smaf.errors import ConfigError, DataError
from smaf.io import load_mask, save_image, save_mask
from smaf.stages.evaluate import (
    SUMMARY_COLUMNS,
    config_digest,
    evaluate_split,
    merge_summaries,
    write_ablations,
    write_summary,
)

NAMES = ["background", "cat", "dog"]
GTS = {"a": [[0, 1], [2, 255]], "b": [[0, 0], [2, 2]]}


def _hand_index(tmp_path, name="index", names=NAMES, aug_dir=None) -> DatasetIndex:
    """The hand case as an index (val = a, b), written to ``data/<name>.csv`` and read back."""
    root = tmp_path / "VOC2012"
    records = []
    for i in GTS:
        aug = aug_dir / f"{i}.png" if aug_dir is not None else ""
        records.append(
            ImageRecord(
                i,
                str(root / "JPEGImages" / f"{i}.jpg"),
                mask=str(root / "SegmentationClass" / f"{i}.png"),
                aug_mask=str(aug),
                roles={"val"},
                labels=np.ones(2, np.float32),
                width=2,
                height=2,
            )
        )
    path = tmp_path / "data" / f"{name}.csv"
    DatasetIndex.build(records, names, {"name": "toy"}).write(path)
    return DatasetIndex.read(path)


@pytest.fixture()
def hand(tmp_path):
    """Two 2x2 masks (C = 2, 255 = ignore) and predictions with a known confusion matrix."""
    root = tmp_path / "VOC2012"
    preds = {"a": [[0, 1], [1, 0]], "b": [[0, 2], [2, 2]]}
    for i in GTS:
        save_image(root / "JPEGImages" / f"{i}.jpg", np.zeros((2, 2, 3), np.uint8))
        save_mask(root / "SegmentationClass" / f"{i}.png", np.array(GTS[i], np.uint8))
        save_mask(tmp_path / "pred" / f"{i}.png", np.array(preds[i], np.uint8))
    return tmp_path, _hand_index(tmp_path)


def test_scores_by_hand_and_outputs(hand):
    tmp, index = hand
    # Valid pixels (gt, pred): (0,0) (1,1) (2,1) | (0,0) (0,2) (2,2) (2,2).
    # IoU bg = 2 / (3 + 2 - 2), cat = 1 / (1 + 2 - 1), dog = 2 / (3 + 3 - 2).
    record = evaluate_split(
        tmp / "pred",
        index,
        "val",
        out_csv=tmp / "eval.csv",
        out_json=tmp / "eval.json",
        meta={"dataset": "toy", "experiment": "default", "model": "eps", "stage": "eps_seed"},
    )
    assert record["iou"] == pytest.approx({"background": 2 / 3, "cat": 0.5, "dog": 0.5})
    assert record["miou"] == pytest.approx((2 / 3 + 0.5 + 0.5) / 3)
    assert record["pixel_acc"] == pytest.approx(5 / 7)
    assert record["n_images"] == 2 and record["split"] == "val"
    assert record["stage"] == "eps_seed" and record["gt"] == "SegmentationClass"
    assert json.loads((tmp / "eval.json").read_text()) == record  # floats round-trip exactly

    table = pd.read_csv(tmp / "eval.csv")
    assert list(table.columns) == [
        "class",
        "iou",
        "precision",
        "recall",
        "gt_pixels",
        "pred_pixels",
        "tp",
        "pixel_acc",
    ]
    assert list(table["class"]) == [*NAMES, "mean"]
    np.testing.assert_allclose(table["iou"], [2 / 3, 0.5, 0.5, record["miou"]], atol=1e-6)
    assert list(table["gt_pixels"]) == [3, 1, 3, 7]
    assert list(table["pred_pixels"]) == [2, 2, 3, 7]
    assert list(table["tp"]) == [2, 1, 2, 5]
    assert table["pixel_acc"].iloc[-1] == pytest.approx(5 / 7, abs=1e-6)
    assert table["pixel_acc"].iloc[:-1].isna().all()
    # meta's split (the experiment's name for it) wins over the role.
    assert evaluate_split(tmp / "pred", index, "val", meta={"split": "v"})["split"] == "v"


def test_ground_truth_against_itself_and_aug_switch(hand):
    tmp, _ = hand
    root = tmp / "VOC2012"
    # Without a label CSV the VOC adapter names C = 2 classes generically.
    generic = _hand_index(tmp, "generic", class_names_for(root, 2))
    record = evaluate_split(root / "SegmentationClass", generic, "val")
    assert record["miou"] == 1.0 and record["pixel_acc"] == 1.0
    assert list(record["iou"]) == ["background", "class_1", "class_2"]

    # SegmentationClassAug: absent -> one clear error; present -> used instead.
    assert not generic.has_column("SegmentationClassAug")
    with pytest.raises(DataError, match="SegmentationClassAug"):
        evaluate_split(tmp / "pred", generic, "val", gt="SegmentationClassAug")
    aug = tmp / "aug"
    for i in ("a", "b"):
        save_mask(aug / f"{i}.png", load_mask(tmp / "pred" / f"{i}.png"))
    with_aug = _hand_index(tmp, "with_aug", aug_dir=aug)
    assert with_aug.has_column("SegmentationClassAug")
    record = evaluate_split(tmp / "pred", with_aug, "val", gt="SegmentationClassAug")
    assert record["miou"] == 1.0 and record["gt"] == "SegmentationClassAug"
    with pytest.raises(ConfigError, match="gt must be"):
        evaluate_split(tmp / "pred", with_aug, "val", gt="SegmentationObject")


def test_bad_predictions(hand):
    tmp, index = hand
    (tmp / "pred" / "b.png").unlink()
    with pytest.raises(DataError, match="1 of 2 predictions are missing"):
        evaluate_split(tmp / "pred", index, "val")
    save_mask(tmp / "pred" / "b.png", np.array([[0, 3], [0, 0]], np.uint8))  # 3 > C
    with pytest.raises(DataError, match="image b"):
        evaluate_split(tmp / "pred", index, "val")
    save_mask(tmp / "pred" / "b.png", np.zeros((3, 2), np.uint8))
    with pytest.raises(DataError, match="full image resolution"):
        evaluate_split(tmp / "pred", index, "val")


def test_write_summary_gathers_and_sorts(tmp_path):
    base = {"dataset": "voc", "split": "train", "gt": "SegmentationClass", "n_images": 3}
    records = [
        {**base, "experiment": "default", "stage": "smaf_seed", "model": "smaf", "miou": 0.6},
        {**base, "experiment": "default", "stage": "eps_crf", "model": "eps", "miou": 0.7},
        {**base, "experiment": "abl", "stage": "eps_seed", "model": "eps", "miou": 0.5},
        {**base, "experiment": "default", "stage": "eps_crf", "model": "eps", "miou": 0.65}
        | {"gt": "SegmentationClassAug", "iou": {"background": 0.9}},
    ]
    files = []
    for k, r in enumerate(records[:2]):
        files.append(tmp_path / f"r{k}.json")
        files[-1].write_text(json.dumps(r))
    out = tmp_path / "results" / "summary.csv"
    df = write_summary([*files, *records[2:]], out)
    back = pd.read_csv(out)
    assert list(back.columns[: len(SUMMARY_COLUMNS)]) == list(SUMMARY_COLUMNS)
    assert "iou" not in back.columns
    assert list(zip(back["experiment"], back["stage"], back["gt"], strict=True)) == [
        ("abl", "eps_seed", "SegmentationClass"),
        ("default", "eps_crf", "SegmentationClass"),
        ("default", "eps_crf", "SegmentationClassAug"),
        ("default", "smaf_seed", "SegmentationClass"),
    ]
    np.testing.assert_allclose(back["miou"], [0.5, 0.7, 0.65, 0.6])
    assert len(df) == 4 and [p.name for p in out.parent.iterdir()] == ["summary.csv"]
    with pytest.raises(DataError, match="not found"):
        write_summary([tmp_path / "missing.json"], out)


def test_every_datasets_rows_stay_in_the_summary_each_with_its_config(tmp_path):
    """Issue 21 item 7: a second dataset (or one without masks) never drops the first's rows."""
    rec = {"split": "val", "gt": "SegmentationClass", "n_images": 3, "model": "deeplab"}
    voc = [
        {**rec, "dataset": "voc", "experiment": "default", "stage": "deeplab", "miou": 0.1234567}
        | {"group": "default", "seed": 0, "thr": 0.2},
        {**rec, "dataset": "voc", "experiment": "abl", "stage": "deeplab", "miou": 0.5}
        | {"group": "abl", "seed": 0, "thr": 0.3},
    ]
    configs = {"default": {"seeds": {"thr": 0.2}}, "abl": {"seeds": {"thr": 0.3}}}
    files = {d: tmp_path / d / "summary.csv" for d in ("voc", "leaves", "nomasks")}
    write_summary(voc, files["voc"], configs, configs_json=tmp_path / "voc" / "configs.json")
    leaves = [{**rec, "dataset": "leaves", "experiment": "default", "stage": "deeplab_crf"}]
    write_summary([leaves[0] | {"miou": 0.75, "n_images_without_gt": 2}], files["leaves"], {})
    write_summary([], files["nomasks"], {"default": {}})  # no masks: no evaluation, header only
    one = pd.read_csv(files["voc"])
    assert list(one.columns) == [*SUMMARY_COLUMNS, "group", "seed", "thr", "config"]
    assert dict(zip(one["experiment"], one["config"], strict=True)) == {
        name: config_digest(cfg) for name, cfg in configs.items()
    }
    assert config_digest(configs["abl"]) != config_digest(configs["default"])
    stored = json.loads((tmp_path / "voc" / "configs.json").read_text())
    assert stored == {config_digest(c): c for c in configs.values()}

    out = tmp_path / "summary.csv"
    merged = merge_summaries([files["nomasks"], files["voc"], files["leaves"]], out)
    back = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert list(back.columns) == [
        *SUMMARY_COLUMNS,
        "group",
        "seed",
        "thr",
        "n_images_without_gt",
        "config",
    ]
    assert list(zip(back["dataset"], back["experiment"], strict=True)) == [
        ("leaves", "default"),
        ("voc", "abl"),
        ("voc", "default"),
    ]
    # Cells are copied as text: the metric values are the per-dataset files' own.
    assert list(back["miou"]) == ["0.750000", "0.500000", "0.123457"]
    assert list(back["n_images_without_gt"]) == ["2", "", ""]
    assert back["config"].iloc[0] == "" and len(merged) == 3
    assert len(merge_summaries([files["nomasks"]], out)) == 0
    with pytest.raises(DataError, match="not found"):
        merge_summaries([tmp_path / "gone" / "summary.csv"], out)


@pytest.mark.voc
def test_write_ablations_keeps_row_order_and_reads_each_records_miou(tmp_path):
    rows = []
    for i, (table, row, run, seed) in enumerate(
        [
            ("table3", "{0.5, 1}", "small", 0),
            ("table3", "{0.5, 1}", "small_seed1", 1),
            ("table5", "w/ reactivation", "default", 0),
        ]
    ):
        record = tmp_path / f"{i}.json"
        record.write_text(json.dumps({"miou": 0.5 + i / 10}))
        rows.append(
            {
                "table": table,
                "row": row,
                "experiment": run,
                "seed": seed,
                "stage": "smaf_seed",
                "record": str(record),
            }
        )
    df = write_ablations(rows, tmp_path / "ablations.csv")
    back = pd.read_csv(tmp_path / "ablations.csv")
    assert list(back.columns) == ["table", "row", "experiment", "seed", "stage", "miou"]
    assert back["miou"].tolist() == pytest.approx([0.5, 0.6, 0.7])
    assert (
        back["experiment"].tolist()
        == ["small", "small_seed1", "default"]
        == df["experiment"].tolist()
    )
    rows[1]["record"] = str(tmp_path / "missing.json")
    with pytest.raises(DataError, match="missing.json"):
        write_ablations(rows, tmp_path / "again.csv")
    assert not (tmp_path / "again.csv").exists()


def test_real_voc_ground_truth_and_all_background(voc_mini_index, tmp_path):
    full = DatasetIndex.read(voc_mini_index)
    ids = full.ids("train")[:20]
    index = full.subset(ids)
    gt_dir = full.mask_path(ids[0]).parent
    record = evaluate_split(gt_dir, index, "train")
    assert record["miou"] == 1.0 and record["pixel_acc"] == 1.0 and record["n_images"] == 20
    assert list(record["iou"]) == list(VOC_CLASSES)

    # All background: IoU(bg) = bg pixels / valid pixels, every class present in the ground
    # truth gets 0, classes absent from both are left out of the mean.
    bg = valid = 0
    present: set[int] = set()
    for i in ids:
        gt = load_mask(index.mask_path(i))
        save_mask(tmp_path / "bg" / f"{i}.png", np.zeros_like(gt))
        valid += int((gt != 255).sum())
        bg += int((gt == 0).sum())
        present |= set(np.unique(gt[(gt != 0) & (gt != 255)]).tolist())
    record = evaluate_split(tmp_path / "bg", index, "train")
    assert record["iou"]["background"] == pytest.approx(bg / valid)
    assert record["miou"] == pytest.approx(bg / valid / (1 + len(present)))
    assert record["pixel_acc"] == pytest.approx(bg / valid)
    for k in range(1, 21):
        expected = 0.0 if k in present else None
        assert record["iou"][VOC_CLASSES[k]] == expected

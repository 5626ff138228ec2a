"""The background-threshold sweep is tuned on held-out train_aug images, never an evaluation split."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from smaf.data.index import DatasetIndex, ImageRecord
from smaf.errors import DataError
from smaf.io import save_maps, save_mask
from smaf.report.tables import pseudo_label_table, threshold_notes
from smaf.stages.thr_sweep import choose, holdout_ids, sweep_scores, thr_sweep

NAMES = ["background", "cat", "dog"]


def _index(tmp_path, records) -> DatasetIndex:
    return DatasetIndex.build(records, NAMES, {"name": "toy"})


def _voc_like(tmp_path) -> DatasetIndex:
    """train_aug = a..j (a, b also in train), v in val, t in test; aug masks for a..i only."""
    records = []
    for name in "abcdefghij":
        roles = {"train_aug"} | ({"train"} if name in "ab" else set())
        aug = str(tmp_path / f"{name}.png") if name != "j" else ""
        records.append(ImageRecord(name, f"{name}.jpg", aug_mask=aug, roles=roles))
    records.append(ImageRecord("v", "v.jpg", aug_mask=str(tmp_path / "v.png"), roles={"val"}))
    records.append(ImageRecord("t", "t.jpg", roles={"test"}))
    return _index(tmp_path, records)


def test_held_out_images_are_train_aug_outside_every_evaluation_split(tmp_path):
    index = _voc_like(tmp_path)
    everything = holdout_ids(index, "SegmentationClassAug", 1.0, 0)
    assert everything == list("cdefghi")  # not train (a, b), not without masks (j), not val
    half = holdout_ids(index, "SegmentationClassAug", 0.5, 3)
    assert len(half) == 4 and set(half) <= set(everything) and half == sorted(half)
    assert holdout_ids(index, "SegmentationClassAug", 0.5, 3) == half  # seeded
    assert len(holdout_ids(index, "SegmentationClassAug", 0.01, 0)) == 1  # at least one


def test_no_held_out_image_is_a_clear_error(tmp_path):
    index = _voc_like(tmp_path)
    with pytest.raises(DataError, match="no train_aug image outside the train, val, test"):
        holdout_ids(index, "SegmentationClass", 1.0, 0)  # no SegmentationClass masks at all


def _toy_sweep(tmp_path):
    """One held-out 1x4 image: cat scores (0.1, 0.3, 0.6, 0.9), ground truth (bg, cat, cat, cat)."""
    records = [
        ImageRecord("a", "a.jpg", mask=str(tmp_path / "gt_a.png"), roles={"train_aug", "train"}),
        ImageRecord(
            "h",
            "h.jpg",
            mask=str(tmp_path / "gt_h.png"),
            roles={"train_aug"},
            labels=np.array([1, 0], np.float32),
        ),
    ]
    index = _index(tmp_path, records)
    save_mask(tmp_path / "gt_h.png", np.array([[0, 1, 1, 1]], np.uint8))
    seeds = tmp_path / "seeds" / "smaf_train_aug"
    maps = np.array([[[0.1, 0.3, 0.6, 0.9]], [[0.0, 0.0, 0.0, 0.0]]], np.float32)
    save_maps(seeds / "maps" / "h.npz", maps, np.array([1, 0]))
    return index, seeds


def test_seed_miou_per_threshold_by_hand(tmp_path):
    index, seeds = _toy_sweep(tmp_path)
    scores = sweep_scores(seeds, index, ["h"], [0.05, 0.2, 0.25, 0.5], "SegmentationClass")
    # thr 0.05: all cat -> bg IoU 0/1, cat 3/4; 0.2 and 0.25: exact; 0.5: (bg, bg, cat, cat)
    # -> bg 1/2, cat 2/3. mIoU over the classes present (bg, cat; dog is empty).
    want = [(0 + 3 / 4) / 2, 1.0, 1.0, (1 / 2 + 2 / 3) / 2]
    np.testing.assert_allclose(scores["miou"], want, atol=1e-6)
    assert choose(scores) == 0.2  # a tie goes to the smaller thr


def test_sweep_writes_the_table_and_the_chosen_thr(tmp_path):
    index, seeds = _toy_sweep(tmp_path)
    record = thr_sweep(
        {"smaf": seeds},
        index,
        values=[0.5, 0.05],
        holdout=1.0,
        seed=0,
        gt="SegmentationClass",
        configured_thr=0.2,
        out_csv=tmp_path / "thr_sweep.csv",
        out_json=tmp_path / "thr_sweep.json",
        meta={"dataset": "toy", "experiment": "default"},
    )
    assert record["holdout"] == ["h"]  # "a" is in train: never used for tuning
    assert record["models"]["smaf"] == {
        "thr": 0.2,
        "miou": 1.0,
        "configured_thr": 0.2,
        "configured_miou": 1.0,
    }
    table = pd.read_csv(tmp_path / "thr_sweep.csv")
    assert table["thr"].tolist() == [0.05, 0.2, 0.5]  # the configured thr is always scored
    assert table["chosen"].tolist() == [False, True, False]
    assert (table["gt"] == "SegmentationClass").all() and (table["model"] == "smaf").all()
    assert json.loads((tmp_path / "thr_sweep.json").read_text()) == record


def test_missing_maps_name_the_seeds_rule(tmp_path):
    index, seeds = _toy_sweep(tmp_path)
    (seeds / "maps" / "h.npz").unlink()
    with pytest.raises(DataError, match="rerun the seeds rule"):
        sweep_scores(seeds, index, ["h"], [0.2], "SegmentationClass")


# ----------------------------------------------------------------- the report marks the thr
def _table2_rows(thr: float) -> list[dict]:
    return [
        {
            "dataset": "voc2012",
            "experiment": "default",
            "stage": stage,
            "split": "train",
            "gt": "SegmentationClass",
            "miou": 0.7,
            "model": stage.split("_")[0],
            "thr": thr,
        }
        for stage in ("eps_seed", "eps_crf", "smaf_seed", "smaf_crf")
    ]


def test_table2_shows_thr_and_marks_it_as_not_tuned_without_a_sweep():
    summary = pd.DataFrame(_table2_rows(0.2))
    table = pseudo_label_table(summary)
    assert table["thr"].tolist() == ["0.2", "0.2"]
    (note,) = threshold_notes(summary)
    assert note.startswith("default: thr 0.2 is set in the configuration")
    assert "evaluated split's ground truth" in note and "snakemake thr_sweep" in note
    assert threshold_notes(summary.drop(columns="thr")) == []  # older summaries: no claim
    assert "thr" not in pseudo_label_table(summary.drop(columns="thr")).columns


def test_table2_notes_the_held_out_sweep():
    summary = pd.DataFrame(_table2_rows(0.2))
    sweep = {
        "experiment": "default",
        "gt": "SegmentationClassAug",
        "holdout": ["x", "y"],
        "models": {
            "smaf": {"thr": 0.2, "miou": 0.61, "configured_thr": 0.2, "configured_miou": 0.61}
        },
    }
    (same,) = threshold_notes(summary, {"default": sweep})
    assert "thr 0.2 is also the best of the held-out sweep (smaf seeds, 2 train_aug" in same
    assert "without the evaluated split's ground truth" in same
    sweep["models"]["smaf"].update(thr=0.3, miou=0.65)
    (other,) = threshold_notes(summary, {"default": sweep})
    assert "prefers thr 0.3 (mIoU 65.0 vs 61.0 at 0.2); this table uses 0.2" in other

"""Confusion matrix and IoU scores: hand-computed cases, tensors, accumulation, real masks."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from smaf.data import DatasetIndex
from smaf.data.sources.voc import VOC_CLASSES
from smaf.io import load_mask
from smaf.metrics import ConfusionMeter, confusion_matrix, iou_scores

# A 2x3 example with one ignore pixel; 3 classes.
GT = np.array([[0, 1, 255], [1, 2, 2]], np.uint8)
PRED = np.array([[0, 2, 1], [1, 2, 0]], np.uint8)
# Counted pixels (gt, pred): (0,0) (1,2) (1,1) (2,2) (2,0); the (255, 1) pixel is ignored.
CONF = np.array([[1, 0, 0], [0, 1, 1], [1, 0, 1]], np.int64)


def test_confusion_matrix_by_hand() -> None:
    conf = confusion_matrix(PRED, GT, 3)
    assert conf.dtype == np.int64 and conf.shape == (3, 3)
    np.testing.assert_array_equal(conf, CONF)
    assert conf.sum() == 5


def test_iou_scores_by_hand() -> None:
    s = iou_scores(CONF)
    # class 0: TP 1, union 1+2-1 = 2; class 1: TP 1, union 2+1-1 = 2; class 2: TP 1, union 3.
    np.testing.assert_allclose(s["iou"], [1 / 2, 1 / 2, 1 / 3])
    assert s["miou"] == pytest.approx((1 / 2 + 1 / 2 + 1 / 3) / 3)
    assert s["pixel_acc"] == pytest.approx(3 / 5)
    assert s["mean_acc"] == pytest.approx((1 / 1 + 1 / 2 + 1 / 2) / 3)
    assert s["fwiou"] == pytest.approx(1 / 5 * 1 / 2 + 2 / 5 * 1 / 2 + 2 / 5 * 1 / 3)


def test_class_with_empty_union_is_nan_and_excluded() -> None:
    conf = confusion_matrix(PRED, GT, 4)  # class 3 appears in neither gt nor prediction
    np.testing.assert_array_equal(conf[:3, :3], CONF)
    s = iou_scores(conf)
    assert math.isnan(s["iou"][3])
    assert s["miou"] == pytest.approx((1 / 2 + 1 / 2 + 1 / 3) / 3)
    assert s["mean_acc"] == pytest.approx(2 / 3)
    # A class only predicted (FP, no gt) has a union, IoU 0, and counts in the mean.
    s = iou_scores(confusion_matrix(np.array([3, 0]), np.array([0, 0]), 4))
    np.testing.assert_array_equal(s["iou"][[0, 3]], [0.5, 0.0])
    assert s["miou"] == pytest.approx(0.25)


def test_all_zero_matrix_gives_nan_without_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = iou_scores(np.zeros((21, 21), np.int64))
        only_ignore = confusion_matrix(np.zeros((2, 2), int), np.full((2, 2), 255), 21)
    assert only_ignore.sum() == 0
    assert math.isnan(s["miou"]) and math.isnan(s["pixel_acc"]) and math.isnan(s["mean_acc"])
    assert math.isnan(s["fwiou"]) and np.isnan(s["iou"]).all()


def test_tensors_and_int_dtypes() -> None:
    expected = confusion_matrix(PRED, GT, 3)
    np.testing.assert_array_equal(
        confusion_matrix(torch.from_numpy(PRED), torch.from_numpy(GT), 3), expected
    )
    np.testing.assert_array_equal(
        confusion_matrix(torch.from_numpy(PRED).long(), GT.astype(np.int32), 3), expected
    )
    # Batched [B, H, W] inputs work too.
    batched = confusion_matrix(np.stack([PRED, PRED]), np.stack([GT, GT]), 3)
    np.testing.assert_array_equal(batched, 2 * expected)


def test_input_errors() -> None:
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 2\)"):
        confusion_matrix(PRED, GT.T, 3)
    bad = PRED.copy()
    bad[0, 0] = 7
    with pytest.raises(ValueError, match=r"prediction holds values \[7\]"):
        confusion_matrix(bad, GT, 3)
    # Out-of-range predictions at ignored pixels do not matter.
    ok = PRED.copy()
    ok[0, 2] = 200
    np.testing.assert_array_equal(confusion_matrix(ok, GT, 3), CONF)
    with pytest.raises(ValueError, match=r"ground truth holds values \[5\]"):
        confusion_matrix(PRED, np.where(GT == 2, 5, GT), 3)
    with pytest.raises(ValueError, match="integer"):
        confusion_matrix(PRED.astype(np.float32), GT, 3)
    with pytest.raises(ValueError, match="square"):
        iou_scores(np.zeros((2, 3)))


def test_meter_equals_one_big_matrix() -> None:
    rng = np.random.default_rng(0)
    preds, gts = [], []
    for h, w in [(5, 7), (11, 3), (8, 8), (1, 20)]:
        gt = rng.integers(0, 5, (h, w))
        gt[rng.random((h, w)) < 0.1] = 255
        preds.append(rng.integers(0, 5, (h, w)))
        gts.append(gt)
    meter = ConfusionMeter(5)
    for p, g in zip(preds, gts, strict=True):
        meter.update(p, g)
    big = confusion_matrix(
        np.concatenate([p.ravel() for p in preds]), np.concatenate([g.ravel() for g in gts]), 5
    )
    np.testing.assert_array_equal(meter.conf, big)
    assert meter.scores()["miou"] == pytest.approx(iou_scores(big)["miou"])

    # Parallel halves combine to the same counts, whichever way they are merged.
    a, b = ConfusionMeter(5), ConfusionMeter(5)
    for i, (p, g) in enumerate(zip(preds, gts, strict=True)):
        (a if i % 2 else b).update(p, g)
    np.testing.assert_array_equal((a + b).conf, big)
    np.testing.assert_array_equal(sum([a, b]).conf, big)
    np.testing.assert_array_equal(a.merge(b).conf, big)
    with pytest.raises(ValueError, match="num_classes"):
        a + ConfusionMeter(6)
    meter.reset()
    assert meter.conf.sum() == 0


# ---------------------------------------------------------------------------------- real masks


@pytest.fixture(scope="module")
def val_masks(voc_mini_index: Path) -> list[np.ndarray]:
    index = DatasetIndex.read(voc_mini_index)
    return [load_mask(index.mask_path(i)) for i in index.ids("val")]


def test_real_mask_against_itself(val_masks: list[np.ndarray]) -> None:
    meter = ConfusionMeter(len(VOC_CLASSES))
    for mask in val_masks:
        meter.update(mask, mask)
    s = meter.scores()
    assert s["miou"] == 1.0 and s["pixel_acc"] == 1.0
    assert not np.isnan(s["iou"]).any()  # all 21 classes occur in the val half


def test_real_all_background_prediction(val_masks: list[np.ndarray]) -> None:
    meter = ConfusionMeter(len(VOC_CLASSES))
    n_bg = n_valid = 0
    for mask in val_masks:
        meter.update(np.zeros_like(mask), mask)
        n_bg += int((mask == 0).sum())
        n_valid += int((mask != 255).sum())
    s = meter.scores()
    # Everything counted is predicted background: TP = #bg, union = every non-ignore pixel.
    assert s["iou"][0] == pytest.approx(n_bg / n_valid)
    np.testing.assert_array_equal(s["iou"][1:], 0.0)
    assert s["pixel_acc"] == pytest.approx(n_bg / n_valid)
    assert s["miou"] == pytest.approx(n_bg / n_valid / 21)

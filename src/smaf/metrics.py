"""Segmentation metrics, all derived from one confusion matrix.

``conf[i, j]`` counts pixels whose ground truth is class ``i`` and prediction is class ``j``
(rows = ground truth, columns = prediction). Pixels whose ground truth is the ignore label (255 in
VOC: object boundaries) are not counted. IoU = TP / (TP + FP + FN); mIoU is the mean over the
classes whose union TP + FP + FN is non-empty (a class absent from both ground truth and
prediction says nothing and is left out rather than counted as 0 or 1).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from smaf.io import IGNORE_INDEX


def _to_numpy(x: Any) -> np.ndarray:
    """numpy view of an array-like; torch tensors are detached and moved to the CPU.

    Duck-typed so that this module does not import torch (evaluation runs without it).
    """
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def confusion_matrix(
    pred: Any, gt: Any, num_classes: int, ignore_index: int = IGNORE_INDEX
) -> np.ndarray:
    """Confusion matrix of one prediction against its ground truth.

    Args:
        pred: integer label map, numpy array or torch tensor, any shape (e.g. ``[H, W]`` or
            ``[B, H, W]``), values in ``[0, num_classes)`` wherever ``gt`` is not ignored.
        gt: integer label map of the same shape; values in ``[0, num_classes)`` or
            ``ignore_index``.
        num_classes: number of classes including background (21 for VOC).
        ignore_index: ground-truth value whose pixels are skipped.

    Returns:
        int64 ``[num_classes, num_classes]``; rows = ground truth, columns = prediction.

    Raises:
        ValueError: shapes differ, non-integer inputs, or labels outside ``[0, num_classes)``
            (a prediction with C+1 channels argmaxed over the wrong axis, a mask of another
            dataset, ...).
    """
    pred = _to_numpy(pred)
    gt = _to_numpy(gt)
    if pred.shape != gt.shape:
        raise ValueError(
            f"prediction shape {pred.shape} does not match ground-truth shape {gt.shape}"
        )
    for name, arr in (("prediction", pred), ("ground truth", gt)):
        if not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"{name} must hold integer labels, got dtype {arr.dtype}")
    gt = gt.ravel().astype(np.int64)
    pred = pred.ravel().astype(np.int64)
    valid = gt != ignore_index
    gt = gt[valid]
    pred = pred[valid]
    bad_gt = (gt < 0) | (gt >= num_classes)
    if bad_gt.any():
        raise ValueError(
            f"ground truth holds values {np.unique(gt[bad_gt]).tolist()} outside "
            f"[0, {num_classes}) that are not the ignore index {ignore_index}"
        )
    bad_pred = (pred < 0) | (pred >= num_classes)
    if bad_pred.any():
        raise ValueError(
            f"prediction holds values {np.unique(pred[bad_pred]).tolist()} outside "
            f"[0, {num_classes}) at pixels with valid ground truth"
        )
    # Each (gt, pred) pair maps to one bin of a flattened C x C matrix: a single vectorised pass.
    counts = np.bincount(num_classes * gt + pred, minlength=num_classes**2)
    return counts.reshape(num_classes, num_classes).astype(np.int64, copy=False)


def iou_scores(conf: np.ndarray) -> dict[str, Any]:
    """Scores of a confusion matrix (rows = ground truth, columns = prediction).

    Returns:
        dict with

        - ``'iou'``: float64 ``[C]``, TP / (TP + FP + FN), NaN where that union is empty;
        - ``'miou'``: mean of ``iou`` over classes with a non-empty union (NaN if none);
        - ``'pixel_acc'``: correctly labelled / counted pixels (NaN if none counted);
        - ``'mean_acc'``: mean per-class recall TP / (TP + FN) over classes with ground-truth
          pixels (NaN if none);
        - ``'fwiou'``: IoU weighted by each class's share of ground-truth pixels (NaN if none).

        All values are fractions in [0, 1], not percentages.
    """
    conf = np.asarray(conf)
    if conf.ndim != 2 or conf.shape[0] != conf.shape[1]:
        raise ValueError(f"confusion matrix must be square [C, C], got shape {conf.shape}")
    if (conf < 0).any():
        raise ValueError("confusion matrix holds negative counts")
    conf = conf.astype(np.float64)
    tp = np.diag(conf)
    gt_count = conf.sum(axis=1)  # TP + FN
    pred_count = conf.sum(axis=0)  # TP + FP
    union = gt_count + pred_count - tp
    total = conf.sum()

    # Divide only where the denominator is non-zero, so empty classes give NaN without warnings.
    iou = np.full(conf.shape[0], np.nan)
    np.divide(tp, union, out=iou, where=union > 0)
    recall = np.full(conf.shape[0], np.nan)
    np.divide(tp, gt_count, out=recall, where=gt_count > 0)

    has_union = union > 0
    has_gt = gt_count > 0
    miou = float(iou[has_union].mean()) if has_union.any() else float("nan")
    mean_acc = float(recall[has_gt].mean()) if has_gt.any() else float("nan")
    if total > 0:
        pixel_acc = float(tp.sum() / total)
        # Classes with ground truth always have a non-empty union, so iou is defined there.
        fwiou = float((gt_count[has_gt] / total * iou[has_gt]).sum())
    else:
        pixel_acc = fwiou = float("nan")
    return {
        "miou": miou,
        "iou": iou,
        "pixel_acc": pixel_acc,
        "mean_acc": mean_acc,
        "fwiou": fwiou,
    }


class ConfusionMeter:
    """Accumulates one confusion matrix over many (prediction, ground truth) pairs.

    Meters filled in parallel (one per worker) combine with ``a + b`` (a new meter),
    ``a.merge(b)`` (in place) or ``sum(meters)``.

    Args:
        num_classes: classes including background (21 for VOC).
        ignore_index: ground-truth value to skip.
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.conf = np.zeros((num_classes, num_classes), dtype=np.int64)  # [gt, pred]

    def update(self, pred: Any, gt: Any) -> None:
        """Add one prediction/ground-truth pair (see :func:`confusion_matrix`)."""
        self.conf += confusion_matrix(pred, gt, self.num_classes, self.ignore_index)

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        self.conf[:] = 0

    def scores(self) -> dict[str, Any]:
        """:func:`iou_scores` of the accumulated matrix."""
        return iou_scores(self.conf)

    def _check_compatible(self, other: ConfusionMeter) -> None:
        if not isinstance(other, ConfusionMeter):
            raise TypeError(f"cannot combine a ConfusionMeter with {type(other).__name__}")
        if (other.num_classes, other.ignore_index) != (self.num_classes, self.ignore_index):
            raise ValueError(
                f"cannot combine meters with (num_classes, ignore_index) "
                f"{(self.num_classes, self.ignore_index)} and "
                f"{(other.num_classes, other.ignore_index)}"
            )

    def merge(self, other: ConfusionMeter) -> ConfusionMeter:
        """Add ``other``'s counts into this meter; returns ``self``."""
        self._check_compatible(other)
        self.conf += other.conf
        return self

    def __add__(self, other: ConfusionMeter) -> ConfusionMeter:
        self._check_compatible(other)
        out = ConfusionMeter(self.num_classes, self.ignore_index)
        out.conf = self.conf + other.conf
        return out

    def __radd__(self, other: Any) -> ConfusionMeter:
        # sum(meters) starts from 0.
        if isinstance(other, int) and other == 0:
            out = ConfusionMeter(self.num_classes, self.ignore_index)
            out.conf = self.conf.copy()
            return out
        return NotImplemented

    def __repr__(self) -> str:
        return (
            f"ConfusionMeter(num_classes={self.num_classes}, ignore_index={self.ignore_index}, "
            f"pixels={int(self.conf.sum())})"
        )

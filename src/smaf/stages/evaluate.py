"""Stage 7 (seeds / CRF part): score a folder of label PNGs against a split's ground truth.

One confusion matrix over the C+1 labels (pixels whose ground truth is 255 ignored), IoU =
TP / (TP + FP + FN), mIoU over the classes with a non-empty union (:mod:`smaf.metrics`). The
ground truth is either VOC's ``SegmentationClass`` (Table 2 of the paper: VOC train) or the
SBD-derived ``SegmentationClassAug``, whose boundaries are coarser and carry no 255 band, so
the same predictions score differently: both are reported, under separate names.

Outputs of one evaluation: a per-class CSV (one row per class plus a ``mean`` row) and a JSON
record; :func:`write_summary` gathers a dataset's records into ``results/<dataset>/summary.csv``
(each row with the digest of the config that made it), and :func:`merge_summaries` every
dataset's file into ``results/summary.csv``: running another dataset adds rows, never drops any.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from smaf.config import chosen_thr, is_auto
from smaf.data.index import GT_COLUMNS, DatasetIndex, read_index
from smaf.errors import ConfigError, DataError
from smaf.io import atomic_write, load_mask
from smaf.metrics import ConfusionMeter, iou_scores
from smaf.progress import Progress
from smaf.staging import shard_ids

log = logging.getLogger(__name__)

#: Ground truths an evaluation can use, as results/summary.csv names them (VOC's folder
#: names): the index's ``mask`` and ``aug_mask`` columns.
GT_KINDS = tuple(GT_COLUMNS)
#: summary.csv's ``thr_source`` of a threshold chosen by ``thr: auto`` (else empty: configured).
THR_AUTO_SOURCE = "auto (held-out sweep)"
#: Columns of ``results/summary.csv``, in order (extra record fields follow them).
SUMMARY_COLUMNS = (
    "dataset",
    "experiment",
    "stage",
    "split",
    "gt",
    "miou",
    "pixel_acc",
    "mean_acc",
    "fwiou",
    "n_images",
    "model",
    "path",
)
_SORT = ["dataset", "experiment", "stage", "split", "gt"]
#: What each number used (smaf.provenance): after the other record fields, before the config.
PROVENANCE_COLUMNS = ("base", "supervision")
#: The last column of a summary: :func:`config_digest` of the config that made the row.
CONFIG_COLUMN = "config"


def config_digest(config: Mapping[str, Any]) -> str:
    """12 hex digits of sha256 over ``config`` as sorted JSON: same settings, same digest."""
    text = json.dumps(config, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _masks_required(index: DatasetIndex) -> list[str]:
    """Roles whose every image has a mask (VOC: train and val; a user's folder: none)."""
    return list(index.info.get("masks_required", ("train", "val")))


def _nan_to_none(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def evaluate_split(
    pred_dir: str | os.PathLike[str],
    index: DatasetIndex | str | os.PathLike[str],
    role: str,
    gt: str = "SegmentationClass",
    *,
    out_csv: str | os.PathLike[str] | None = None,
    out_json: str | os.PathLike[str] | None = None,
    meta: Mapping[str, Any] | None = None,
    log_every: int = 500,
    shard: str | tuple[int, int] | None = None,
    out_conf: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Score ``pred_dir/<id>.png`` for every image of split ``role`` against its ground truth.

    Args:
        pred_dir: folder of uint8 ``[H, W]`` label PNGs with values 0..C (it may hold more
            images than the split: only the split's are read).
        index: the dataset index (or its path): ground-truth paths, C and the class names.
        role: the split; every image needs a prediction and a ``gt`` mask (a user's dataset
            with masks for a subset: the images that have one are scored, and counted).
        gt: ``'SegmentationClass'`` (the index's ``mask``) or ``'SegmentationClassAug'``
            (``aug_mask``).
        out_csv: per-class table: columns ``class, iou, precision, recall, gt_pixels,
            pred_pixels, tp, pixel_acc``; one row per class then a ``mean`` row (iou = mIoU,
            precision / recall = their class means, pixel counts summed, pixel_acc set).
        out_json: the returned record as JSON (NaN written as null).
        meta: extra fields copied into the record (dataset, experiment, model, stage, ...).
        log_every: progress line every this many images.
        shard / out_conf: score only shard ``k`` of ``n`` (``"3of8"``) and write its confusion
            matrix to ``out_conf`` (``.npz``) for :func:`evaluate_gather`, which sums the
            shards' matrices (never their mIoUs). Returns ``{"images", "without_gt"}`` then.

    Returns:
        The record: ``meta`` fields, ``split``, ``gt``, ``path`` (= ``pred_dir``),
        ``n_images``, ``miou``, ``pixel_acc``, ``mean_acc``, ``fwiou`` (fractions in [0, 1]) and
        ``iou`` (``{class name: IoU or None}``).

    Raises:
        DataError: missing predictions or masks, size mismatches, labels outside 0..C.
    """
    if gt not in GT_KINDS:
        raise ConfigError(f"evaluation gt must be one of {', '.join(GT_KINDS)}, got {gt!r}")
    index = read_index(index)
    ids = shard_ids(index.ids(role, allow_empty=True), shard)
    no_gt = [i for i in ids if index.mask_path(i, gt) is None]
    if no_gt and (gt == "SegmentationClassAug" or role in _masks_required(index)):
        raise DataError(
            f"{len(no_gt)} of {len(ids)} {role} images have no {gt} ground truth (first: "
            f"{no_gt[0]}). "
            + (
                "SegmentationClassAug is optional: set the dataset's aug_source / aug_mask_dir, "
                "or drop it from evaluation.gt."
                if gt == "SegmentationClassAug"
                else "Evaluate a split with masks."
            )
        )
    if no_gt:  # masks for a subset (a user's own data): score the images that have one
        log.info(
            "evaluate: %d of %d %s images have a mask; scoring those",
            len(ids) - len(no_gt),
            len(ids),
            role,
        )
        ids = [i for i in ids if index.mask_path(i, gt) is not None]
    conf = confusion(pred_dir, index, ids, gt, log_every)
    if out_conf is not None:
        with atomic_write(out_conf) as tmp, open(tmp, "wb") as f:
            np.savez(f, conf=conf, images=len(ids), without_gt=len(no_gt))
        return {"images": len(ids), "without_gt": len(no_gt)}
    return _score(conf, index, role, gt, pred_dir, len(ids), len(no_gt), out_csv, out_json, meta)


def evaluate_gather(
    conf_files: Sequence[str | os.PathLike[str]],
    index: DatasetIndex | str | os.PathLike[str],
    role: str,
    gt: str,
    pred_dir: str | os.PathLike[str],
    *,
    out_csv: str | os.PathLike[str] | None = None,
    out_json: str | os.PathLike[str] | None = None,
    meta: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The record of a split scored in shards: the sum of their confusion matrices, scored once
    (the same numbers as one :func:`evaluate_split` over the whole split)."""
    index = read_index(index)
    total = np.zeros((index.num_classes + 1,) * 2, dtype=np.int64)
    images = without = 0
    for path in conf_files:
        with np.load(path) as z:
            total += z["conf"].astype(np.int64)
            images += int(z["images"])
            without += int(z["without_gt"])
    return _score(total, index, role, gt, pred_dir, images, without, out_csv, out_json, meta)


def confusion(
    pred_dir: str | os.PathLike[str],
    index: DatasetIndex,
    ids: Sequence[str],
    gt: str,
    log_every: int = 500,
) -> np.ndarray:
    """Confusion matrix ``[C+1, C+1]`` (int64; rows = ground truth) of ``ids``' predictions."""
    pred_dir = Path(pred_dir)
    have = {p.name for p in pred_dir.iterdir()} if pred_dir.is_dir() else set()
    missing = [i for i in ids if f"{i}.png" not in have]
    if missing:
        raise DataError(
            f"{len(missing)} of {len(ids)} predictions are missing from {pred_dir} (first: "
            f"{missing[0]}.png)."
        )
    meter = ConfusionMeter(index.num_classes + 1)
    progress = Progress("evaluate", len(ids), every=log_every, log=log)
    for image_id in ids:
        pred = load_mask(pred_dir / f"{image_id}.png")  # [H, W] 0..C
        mask_path = index.mask_path(image_id, gt)
        mask = load_mask(mask_path)  # [H, W] 0..C, 255
        if pred.shape != mask.shape:
            raise DataError(
                f"prediction {pred_dir / image_id}.png is {pred.shape} but its {gt} mask "
                f"{mask_path} is {mask.shape} (H, W); predictions must be at full image "
                "resolution."
            )
        try:
            meter.update(pred, mask)
        except ValueError as exc:
            raise DataError(f"image {image_id}: {exc}") from None
        progress.update()
    return meter.conf.astype(np.int64)


def _score(
    conf: np.ndarray,
    index: DatasetIndex,
    role: str,
    gt: str,
    pred_dir: str | os.PathLike[str],
    n_images: int,
    n_without_gt: int,
    out_csv: str | os.PathLike[str] | None,
    out_json: str | os.PathLike[str] | None,
    meta: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The per-class table and the record of one confusion matrix; written when asked."""
    names = index.class_names
    s = iou_scores(conf)
    conf = conf.astype(np.float64)
    tp = np.diag(conf)
    gt_px = conf.sum(1)
    pred_px = conf.sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(pred_px > 0, tp / pred_px, np.nan)
        recall = np.where(gt_px > 0, tp / gt_px, np.nan)
    table = pd.DataFrame(
        {
            "class": names,
            "iou": s["iou"],
            "precision": precision,
            "recall": recall,
            "gt_pixels": gt_px.astype(np.int64),
            "pred_pixels": pred_px.astype(np.int64),
            "tp": tp.astype(np.int64),
            "pixel_acc": np.nan,
        }
    )
    mean_row = {
        "class": "mean",
        "iou": s["miou"],
        "precision": float(np.nanmean(precision)) if np.isfinite(precision).any() else np.nan,
        "recall": s["mean_acc"],
        "gt_pixels": int(gt_px.sum()),
        "pred_pixels": int(pred_px.sum()),
        "tp": int(tp.sum()),
        "pixel_acc": s["pixel_acc"],
    }
    table = pd.concat([table, pd.DataFrame([mean_row])], ignore_index=True)
    record: dict[str, Any] = {
        **dict(meta or {}),
        "split": (meta or {}).get("split", role),
        "gt": gt,
        "path": str(pred_dir),
        "n_images": n_images,
        **({"n_images_without_gt": n_without_gt} if n_without_gt else {}),
        "miou": _nan_to_none(s["miou"]),
        "pixel_acc": _nan_to_none(s["pixel_acc"]),
        "mean_acc": _nan_to_none(s["mean_acc"]),
        "fwiou": _nan_to_none(s["fwiou"]),
        "iou": {n: _nan_to_none(v) for n, v in zip(names, s["iou"], strict=True)},
    }
    if out_csv is not None:
        with atomic_write(out_csv) as tmp:
            table.to_csv(tmp, index=False, float_format="%.6f")
    if out_json is not None:
        with atomic_write(out_json) as tmp:
            tmp.write_text(json.dumps(record, indent=2))
    log.info(
        "evaluate %s vs %s (%d images): mIoU %.2f %%, pixel acc %.2f %%",
        pred_dir,
        gt,
        n_images,
        100 * s["miou"],
        100 * s["pixel_acc"],
    )
    return record


def _column_order(found: Iterable[str]) -> list[str]:
    """Columns of a summary: :data:`SUMMARY_COLUMNS`, the other fields in order of appearance,
    the :data:`PROVENANCE_COLUMNS` present, :data:`CONFIG_COLUMN` when present (last)."""
    found = list(found)
    tail = [c for c in (*PROVENANCE_COLUMNS, CONFIG_COLUMN) if c in found]
    extra = [c for c in dict.fromkeys(found) if c not in (*SUMMARY_COLUMNS, *tail)]
    return [*SUMMARY_COLUMNS, *extra, *tail]


def write_summary(
    rows_or_files: Iterable[Mapping[str, Any] | str | os.PathLike[str]],
    out_csv: str | os.PathLike[str],
    configs: Mapping[str, Mapping[str, Any]] | None = None,
    configs_json: str | os.PathLike[str] | None = None,
) -> pd.DataFrame:
    """Gather evaluation records (dicts or JSON files of them) into one sorted CSV.

    Columns: :data:`SUMMARY_COLUMNS` (``dataset, experiment, stage, split, gt, miou, ...``;
    missing fields left empty), the records' other fields, :data:`PROVENANCE_COLUMNS` (when
    the records have them), then with ``configs`` (experiment → the config its run was made
    with) :data:`CONFIG_COLUMN`, the config's digest; rows sorted by dataset, experiment,
    stage, split, gt. The per-class ``iou`` dicts stay in the JSON files; ``configs_json``
    gets ``{digest: config}``. A record of ``thr: auto`` gets the value its ``thr_from``
    record chose in ``thr`` and ``thr_source`` = ``auto (held-out sweep)``. Written
    atomically.

    Returns:
        The table written.
    """
    records = []
    for item in rows_or_files:
        if isinstance(item, Mapping):
            records.append(dict(item))
            continue
        try:
            records.append(json.loads(Path(item).read_text()))
        except FileNotFoundError:
            raise DataError(f"evaluation record not found: {item}.") from None
        except ValueError as exc:
            raise DataError(f"evaluation record {item} is not valid JSON ({exc}).") from None
    for r in records:
        if is_auto(r.get("thr")):
            r["thr"] = chosen_thr(r["thr"], r.get("thr_from"))
            r["thr_source"] = THR_AUTO_SOURCE
    rows = [{k: v for k, v in r.items() if k not in ("iou", "thr_from")} for r in records]
    df = pd.DataFrame(rows)
    for col in SUMMARY_COLUMNS:
        if col not in df.columns:
            df[col] = pd.NA
    df = df[_column_order(df.columns)]
    if "n_images_without_gt" in df.columns:  # a count, empty where every image had a mask
        df["n_images_without_gt"] = df["n_images_without_gt"].astype("Int64")
    if configs is not None:
        digests = {str(k): config_digest(v) for k, v in configs.items()}
        df = df.drop(columns=[CONFIG_COLUMN], errors="ignore")
        df[CONFIG_COLUMN] = [digests.get(str(e), pd.NA) for e in df["experiment"]]
    if len(df):
        df = df.sort_values(_SORT, kind="stable", na_position="last").reset_index(drop=True)
    with atomic_write(out_csv) as tmp:
        df.to_csv(tmp, index=False, float_format="%.6f")
    if configs_json is not None:
        documents = {config_digest(v): v for v in (configs or {}).values()}
        with atomic_write(configs_json) as tmp:
            tmp.write_text(json.dumps(documents, indent=1, sort_keys=True, default=str) + "\n")
    log.info("summary: %d evaluations -> %s", len(df), out_csv)
    return df


def merge_summaries(
    files: Iterable[str | os.PathLike[str]], out_csv: str | os.PathLike[str]
) -> pd.DataFrame:
    """Every dataset's summary (``results/<dataset>/summary.csv``) as one CSV, cells as they
    are (text: no number is reformatted), rows sorted by :data:`SUMMARY_COLUMNS`' keys (empty
    last). Columns: :data:`SUMMARY_COLUMNS`, the other columns in order of appearance,
    :data:`PROVENANCE_COLUMNS`, :data:`CONFIG_COLUMN` last. A header-only file adds no row. Written atomically.

    Raises:
        DataError: a file is missing or not a summary.
    """
    tables = []
    for path in files:
        try:
            df = pd.read_csv(path, dtype=str, keep_default_na=False)
        except FileNotFoundError:
            raise DataError(f"summary not found: {path}.") from None
        except (ValueError, pd.errors.ParserError) as exc:
            raise DataError(f"{path} is not a summary CSV ({exc}).") from None
        if not set(_SORT) <= set(df.columns):
            raise DataError(f"{path} is not a summary CSV (no {', '.join(_SORT)} columns).")
        tables.append(df)
    columns = _column_order(c for df in tables for c in df.columns)
    rows = [df for df in tables if len(df)]
    merged = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=columns)
    merged = merged.reindex(columns=columns).fillna("")
    if len(merged):
        keys = sorted(
            range(len(merged)), key=lambda i: [(v == "", v) for v in merged.loc[i, _SORT]]
        )
        merged = merged.loc[keys].reset_index(drop=True)
    with atomic_write(out_csv) as tmp:
        merged.to_csv(tmp, index=False)
    log.info("summary: %d evaluations of %d file(s) -> %s", len(merged), len(tables), out_csv)
    return merged


#: Columns of the ablation table (``results/<dataset>/ablations.csv``).
ABLATION_COLUMNS = ("table", "row", "experiment", "seed", "stage", "miou")


def write_ablations(
    rows: Iterable[Mapping[str, Any]], out_csv: str | os.PathLike[str]
) -> pd.DataFrame:
    """Write the paper's ablation tables (3–5) as one long CSV, rows in the given order.

    Args:
        rows: one mapping per (table, row, run, stage) with the keys of
            :data:`ABLATION_COLUMNS` except ``miou``, plus ``record``: the evaluation JSON
            (written by :func:`evaluate_split`) whose ``miou`` the row reports.
        out_csv: written atomically; :data:`PROVENANCE_COLUMNS` follow ``miou`` when the
            records have them (what each row used, as in the summary).

    Returns:
        The table written.

    Raises:
        DataError: a record is missing or not valid JSON.
    """
    out = []
    for row in rows:
        path = Path(row["record"])
        try:
            record = json.loads(path.read_text())
        except FileNotFoundError:
            raise DataError(f"evaluation record not found: {path}.") from None
        except ValueError as exc:
            raise DataError(f"evaluation record {path} is not valid JSON ({exc}).") from None
        out.append(
            {
                **{k: row[k] for k in ABLATION_COLUMNS if k != "miou"},
                "miou": record["miou"],
                **{k: record[k] for k in PROVENANCE_COLUMNS if k in record},
            }
        )
    found = {k for r in out for k in r}
    df = pd.DataFrame(
        out, columns=[*ABLATION_COLUMNS, *(c for c in PROVENANCE_COLUMNS if c in found)]
    )
    with atomic_write(out_csv) as tmp:
        df.to_csv(tmp, index=False, float_format="%.6f")
    log.info("ablations: %d rows -> %s", len(df), out_csv)
    return df

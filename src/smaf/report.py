"""The workflow's report: one self-contained HTML page with the paper's tables and figures.

:func:`build_report` gathers what the pipeline has produced and writes ``results/report.html``:

* Table 1 (DeepLab on val) and Table 2 (seeds and CRF pseudo labels on train) from
  ``results/summary.csv``; replicates of one experiment (``<name>_seed<k>``) are shown as
  ``mean ± std (n=k)``; on VOC the paper's numbers (:data:`PAPER`) stand beside ours;
* the ablations (Tables 3–5) from an optional ``ablations.csv``;
* per-class IoU of the evaluation CSVs, the training curves (inline SVG) and Figures 1, 3, 4
  and 5 (PNG, base64-embedded), computed from the trained classifiers and the label folders.

Only the summary is required; every other missing piece becomes a one-line note in the page.
The builders are small and separately usable: table builders return DataFrames, chart builders
SVG strings, figure builders PIL images.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import math
import os
import re
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageDraw, ImageFont

from smaf.cam import attention
from smaf.data.index import DatasetIndex
from smaf.errors import ConfigError, DataError, SmafError
from smaf.fusion import denoise, fuse_scales, multiscale_maps, reactivate
from smaf.io import atomic_write, load_image, load_maps, load_mask, voc_palette
from smaf.models.build import Classifier
from smaf.models.checkpoint import load_model
from smaf.train import resolve_device, use_threads
from smaf.transforms import normalize

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

# ------------------------------------------------------------------------- the paper's numbers
#: mIoU (%) published in the SMAF paper (Yang, Zhu, Zhang, "A Self-Training Framework Based on
#: Multi-Scale Attention Fusion for WSSS"), all on PASCAL VOC 2012. Shown beside our numbers
#: only for VOC datasets (names starting with "voc").
PAPER: dict[str, dict[Any, Any]] = {
    # Table 1: DeepLab-ASPP (ResNet-101) trained on the pseudo labels, val and test sets.
    # "Ours w/EPS" = SMAF pseudo labels; "EPS*" = the EPS baseline's labels.
    "table1": {"smaf": {"val": 72.4, "test": 72.4}, "eps": {"val": 70.9, "test": 70.8}},
    # Table 2: seeds (Seed) and seeds + DenseCRF (+DenseCRF) on VOC train (1,464 images).
    "table2": {"smaf": {"seed": 72.0, "crf": 73.8}, "eps": {"seed": 69.5, "crf": 71.4}},
    # Table 3: seed mIoU (train) for the scale sets the teacher fuses: small-scale {0.5, 1},
    # large-scale 1 {1, 1.5}, large-scale 2 {1, 2}, full-scale {0.5, 1, 1.5, 2}.
    "table3": {
        (0.5, 1.0): 71.1,
        (1.0, 1.5): 70.5,
        (1.0, 2.0): 70.5,
        (0.5, 1.0, 1.5, 2.0): 72.0,
    },
    # Table 4: seed mIoU (train) after self-training on one scale's maps, or on the fused maps.
    "table4": {(0.5,): 69.2, (1.0,): 70.7, (1.5,): 67.7, (2.0,): 63.0, "fused": 72.0},
    # Table 5: seed mIoU (train) without / with reactivation (Eq. 8), full-scale fusion.
    "table5": {"without": 71.1, "with": 72.0},
}

#: Titles of the ablation tables (the ``table`` column of ablations.csv).
ABLATION_TITLES = {
    "table3": "Table 3. Scale sets fused by the teacher",
    "table4": "Table 4. Self-training from a single scale vs fused",
    "table5": "Table 5. Reactivation",
}

#: Table 1 columns: the DeepLab stages of summary.csv (val split).
TABLE1_STAGES = {"deeplab": "DeepLab (MSC)", "deeplab_crf": "DeepLab (MSC) + CRF"}
#: Table 2: seed stages of summary.csv → (method, column).
TABLE2_STAGES = {
    "eps_seed": ("EPS", "seed"),
    "eps_crf": ("EPS", "+CRF"),
    "smaf_seed": ("SMAF", "seed"),
    "smaf_crf": ("SMAF", "+CRF"),
}
#: Ablation columns: stage of ablations.csv → column title.
ABLATION_STAGES = {"smaf_seed": "seed mIoU", "smaf_crf": "+CRF mIoU"}

_REPLICATE = re.compile(r"_seed\d+$")
NA = "–"


def is_voc(dataset: str | None) -> bool:
    """Whether the paper's (PASCAL VOC) numbers apply to ``dataset``."""
    return bool(dataset) and str(dataset).lower().startswith("voc")


# ------------------------------------------------------------------------------ summary tables
def replicate_group(experiment: str) -> str:
    """Experiment name without a replicate suffix: ``'default_seed3'`` → ``'default'``."""
    return _REPLICATE.sub("", str(experiment))


def read_summary(path: PathLike) -> pd.DataFrame:
    """Read ``results/summary.csv``; add ``group`` / ``seed`` when the file lacks them.

    ``group`` defaults to the experiment without a trailing ``_seed<digits>``, ``seed`` to NaN.
    """
    try:
        df = pd.read_csv(path, dtype={"dataset": str, "experiment": str, "group": str})
    except FileNotFoundError:
        raise DataError(
            f"{path} not found: run the summary rule first (snakemake {path})."
        ) from None
    return with_replicates(df)


def with_replicates(summary: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``summary`` with ``group`` and ``seed`` columns (derived where missing)."""
    df = summary.copy()
    derived = df["experiment"].astype(str).map(replicate_group)
    if "group" not in df.columns:
        df["group"] = derived
    else:
        df["group"] = df["group"].where(df["group"].notna(), derived).astype(str)
    if "seed" not in df.columns:
        df["seed"] = np.nan
    return df


def format_miou(values: Iterable[float]) -> str:
    """mIoU fractions → ``'57.7'`` (one value) or ``'57.7 ± 1.2 (n=3)'`` (mean ± sample std).

    NaN values are dropped; no value at all gives ``'–'``.
    """
    v = pd.to_numeric(pd.Series(list(values), dtype=object), errors="coerce").dropna()
    v = v.to_numpy(dtype=float) * 100.0
    if v.size == 0:
        return NA
    if v.size == 1:
        return f"{v[0]:.1f}"
    return f"{v.mean():.1f} ± {v.std(ddof=1):.1f} (n={v.size})"


def _paper_value(value: float | None) -> str:
    return NA if value is None else f"{value:.1f}"


def _wants_paper(df: pd.DataFrame, paper: bool | None) -> bool:
    if paper is not None:
        return paper
    return any(is_voc(d) for d in df["dataset"].dropna().unique())


def segmentation_table(summary: pd.DataFrame, *, paper: bool | None = None) -> pd.DataFrame:
    """Table 1: DeepLab val mIoU (MSC and MSC + CRF) per experiment group.

    Args:
        summary: rows of results/summary.csv (``group`` / ``seed`` optional).
        paper: add the paper's val / test columns; None = when a dataset is VOC. Values are
            filled for VOC rows only, by the source of the pseudo labels (``model``).

    Returns:
        One row per (dataset, experiment group, pseudo labels, gt); cells are display strings.
    """
    df = with_replicates(summary)
    df = df[df["stage"].isin(TABLE1_STAGES) & (df["split"] == "val")]
    keys = ["dataset", "group", "model", "gt"]
    rows = []
    for key, g in df.groupby(keys, sort=False, dropna=False):
        row = dict(zip(["dataset", "experiment", "pseudo labels", "gt"], key, strict=True))
        for stage, col in TABLE1_STAGES.items():
            row[col] = format_miou(g.loc[g["stage"] == stage, "miou"])
        rows.append(row)
    columns = ["dataset", "experiment", "pseudo labels", "gt", *TABLE1_STAGES.values()]
    out = pd.DataFrame(rows, columns=columns)
    if _wants_paper(summary, paper):
        for split in ("val", "test"):
            out[f"paper {split}"] = [
                _paper_value(PAPER["table1"].get(str(m), {}).get(split)) if is_voc(d) else NA
                for d, m in zip(out["dataset"], out["pseudo labels"], strict=True)
            ]
    return out


def pseudo_label_table(summary: pd.DataFrame, *, paper: bool | None = None) -> pd.DataFrame:
    """Table 2: mIoU of the EPS / SMAF seeds and their CRF refinement per experiment group.

    Args:
        summary: rows of results/summary.csv.
        paper: add the paper's seed / +CRF columns; None = when a dataset is VOC. Values are
            filled for VOC rows on the train split only.

    Returns:
        One row per (dataset, experiment group, split, gt, method), EPS before SMAF.
    """
    df = with_replicates(summary)
    df = df[df["stage"].isin(TABLE2_STAGES)].copy()
    df["method"] = df["stage"].map(lambda s: TABLE2_STAGES[s][0])
    keys = ["dataset", "group", "split", "gt", "method"]
    rows = []
    for key, g in df.groupby(keys, sort=False, dropna=False):
        row = dict(zip(["dataset", "experiment", "split", "gt", "method"], key, strict=True))
        for stage, (method, col) in TABLE2_STAGES.items():
            if method == row["method"]:
                row[col] = format_miou(g.loc[g["stage"] == stage, "miou"])
        rows.append(row)
    out = pd.DataFrame(
        rows, columns=["dataset", "experiment", "split", "gt", "method", "seed", "+CRF"]
    )
    if len(out):
        # EPS before SMAF inside each (dataset, experiment, split, gt), first-seen order kept.
        block = out[["dataset", "experiment", "split", "gt"]].astype(str).agg("|".join, axis=1)
        out["_k"] = block.map({k: i for i, k in enumerate(pd.unique(block))})
        out = out.sort_values(["_k", "method"], kind="stable").drop(columns="_k")
        out = out.reset_index(drop=True)
    if _wants_paper(summary, paper):
        for col, field in (("paper seed", "seed"), ("paper +CRF", "crf")):
            out[col] = [
                _paper_value(PAPER["table2"][m.lower()][field])
                if is_voc(d) and s == "train"
                else NA
                for d, s, m in zip(out["dataset"], out["split"], out["method"], strict=True)
            ]
    return out


# ---------------------------------------------------------------------------- ablation tables
def paper_ablation_miou(table: str, row: str) -> float | None:
    """The paper's seed mIoU (%) for an ablation row label, or None if it has no counterpart.

    Row labels are matched loosely: Table 3 and 4 by the scales they name (``'{0.5, 1}'``,
    ``'scale 1.5'``; ``'fused'`` / ``'all'`` = every scale), Table 5 by ``'w/o'`` / ``'without'``
    / ``'no'`` (else with reactivation).
    """
    label = str(row).strip().lower()
    if table == "table5":
        off = any(w in label for w in ("w/o", "without", "no ", "off", "false")) or label == "no"
        return PAPER["table5"]["without" if off else "with"]
    if table not in ("table3", "table4"):
        return None
    if any(w in label for w in ("fused", "full", "all", "multi")):
        return (
            PAPER["table3"][(0.5, 1.0, 1.5, 2.0)] if table == "table3" else PAPER["table4"]["fused"]
        )
    scales = tuple(sorted(float(x) for x in re.findall(r"\d+(?:\.\d+)?", label)))
    return PAPER[table].get(scales)


def read_ablations(path: PathLike) -> pd.DataFrame:
    """Read ablations.csv (``table,row,experiment,seed,stage,miou``; miou a fraction)."""
    df = pd.read_csv(path, dtype={"table": str, "row": str, "experiment": str, "stage": str})
    missing = {"table", "row", "stage", "miou"} - set(df.columns)
    if missing:
        raise DataError(
            f"{path} lacks the columns {sorted(missing)} (table,row,experiment,seed,stage,miou)."
        )
    return df


def ablation_tables(ablations: pd.DataFrame, *, paper: bool = False) -> dict[str, pd.DataFrame]:
    """Tables 3–5: one DataFrame per ``table`` value, rows in file order.

    Columns: ``row``, ``seed mIoU`` and ``+CRF mIoU`` (mean ± std over the seeds of the row),
    ``experiments`` (the experiment groups behind the row) and, with ``paper``, the paper's
    seed mIoU of the matching row.
    """
    tables: dict[str, pd.DataFrame] = {}
    df = ablations.copy()
    df["table"] = df["table"].astype(str)
    df["row"] = df["row"].astype(str)
    for table in sorted(pd.unique(df["table"])):
        sub = df[df["table"] == table]
        rows = []
        for label in pd.unique(sub["row"]):
            r = sub[sub["row"] == label]
            row: dict[str, Any] = {"row": label}
            for stage, col in ABLATION_STAGES.items():
                row[col] = format_miou(r.loc[r["stage"] == stage, "miou"])
            if "experiment" in r.columns:
                groups = dict.fromkeys(replicate_group(e) for e in r["experiment"].dropna())
                row["experiments"] = ", ".join(groups)
            if paper:
                row["paper seed mIoU"] = _paper_value(paper_ablation_miou(table, label))
            rows.append(row)
        tables[table] = pd.DataFrame(rows)
    return tables


# ------------------------------------------------------------------------------ per-class IoU
def eval_names(paths: Sequence[PathLike]) -> dict[str, Path]:
    """Column names for evaluation CSVs: the file stem, prefixed by the experiment when the
    files come from several experiments (``results/<ds>/<exp>/eval/<stem>.csv``)."""
    paths = [Path(p) for p in paths]
    experiments = {p.parent.parent.name for p in paths}
    if len(experiments) > 1:
        return {f"{p.parent.parent.name}/{p.stem}": p for p in paths}
    return {p.stem: p for p in paths}


def per_class_table(evals: Mapping[str, PathLike]) -> pd.DataFrame:
    """IoU (%) per class (rows, the ``mean`` row last) × evaluation (columns), 1 decimal.

    ``evals`` maps a column name to an evaluation CSV (``class, iou, ...`` with a final
    ``mean`` row) as written by the evaluate rule.
    """
    columns: dict[str, pd.Series] = {}
    order: list[str] = []
    for name, path in evals.items():
        df = pd.read_csv(path, dtype={"class": str})
        if not {"class", "iou"} <= set(df.columns):
            raise DataError(f"{path} is not an evaluation CSV (no class / iou columns).")
        s = pd.Series(df["iou"].to_numpy(dtype=float) * 100.0, index=df["class"])
        columns[name] = s
        order += [c for c in s.index if c not in order]
    order = [c for c in order if c != "mean"] + (["mean"] if "mean" in order else [])
    out = pd.DataFrame({k: v.reindex(order) for k, v in columns.items()}, index=order)
    out.index.name = "class"
    return out.round(1)


# ----------------------------------------------------------------------------- training curves
#: Line colours of the charts (the tab10 palette).
CURVE_COLORS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip
#: History columns that are not losses (never plotted).
NON_LOSS_COLUMNS = ("step", "lr", "epoch", "time", "images_per_s")


def read_history(path: PathLike) -> pd.DataFrame:
    """A training history CSV (``step, lr, loss, ...``)."""
    df = pd.read_csv(path)
    if "step" not in df.columns:
        raise DataError(f"{path} is not a training history (no 'step' column).")
    return df


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average over ``window`` points (shorter windows at the start)."""
    values = np.asarray(values, dtype=float)
    if window <= 1 or values.size == 0:
        return values
    return pd.Series(values).rolling(window, min_periods=1).mean().to_numpy()


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values (1, 2, 2.5, 5 × 10^k steps) covering ``[lo, hi]``."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        hi = lo + 1.0
    span = hi - lo
    mag = 10.0 ** math.floor(math.log10(span / n))
    step = mag
    for m in (1.0, 2.0, 2.5, 5.0, 10.0):
        step = m * mag
        if span / step <= n:
            break
    first = math.ceil(lo / step - 1e-9) * step
    ticks = []
    k = 0
    while first + k * step <= hi + 1e-9 * step:
        ticks.append(round(first + k * step, 12))
        k += 1
    return ticks


def _log_ticks(lo: float, hi: float) -> list[float]:
    """Powers of ten in ``[lo, hi]`` (plus 2× and 5× when the range spans few decades)."""
    a, b = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    mults = (1.0, 2.0, 5.0) if b - a <= 3 else (1.0,)
    ticks = [m * 10.0**e for e in range(a, b + 1) for m in mults]
    return [t for t in ticks if lo * (1 - 1e-9) <= t <= hi * (1 + 1e-9)]


def _fmt_tick(value: float) -> str:
    if value != 0 and abs(value) >= 10000:
        return f"{value / 1000:g}k"
    return f"{value:.4g}"


def _auto_log(series: Sequence[np.ndarray]) -> bool:
    """Log scale when every value is positive and the curves span more than 1.5 decades."""
    values = np.concatenate([s[np.isfinite(s)] for s in series]) if series else np.array([])
    if values.size == 0 or values.min() <= 0:
        return False
    return math.log10(values.max() / values.min()) > 1.5


def svg_line_chart(
    history: pd.DataFrame,
    *,
    title: str = "",
    x: str = "step",
    columns: Sequence[str] | None = None,
    smooth: int = 1,
    log_y: bool | None = None,
    width: int = 760,
    height: int = 320,
    max_points: int = 600,
) -> str:
    """One SVG line chart of a training history: every loss column against ``x``.

    Args:
        history: the history table (``step, lr, loss, ...``).
        title: drawn above the plot.
        x: the x column.
        columns: y columns; default every column except :data:`NON_LOSS_COLUMNS`.
        smooth: trailing moving-average window (points); > 1 also draws the raw curve faintly.
        log_y: log-scale y axis; None = automatic (positive values spanning > 1.5 decades,
            e.g. a loss weighted ×100 beside unweighted ones).
        width, height: size in px.
        max_points: longest polyline (longer curves are subsampled after smoothing).

    Returns:
        A standalone ``<svg>`` element (valid XML, SVG namespace) to inline in HTML.
    """
    if columns is None:
        columns = [c for c in history.columns if c != x and c not in NON_LOSS_COLUMNS]
    xs = pd.to_numeric(history[x], errors="coerce").to_numpy(dtype=float)
    raw = {c: pd.to_numeric(history[c], errors="coerce").to_numpy(dtype=float) for c in columns}
    main = {c: moving_average(v, smooth) for c, v in raw.items()}
    if log_y is None:
        log_y = _auto_log(list(main.values()))
    left, right, top, bottom = 64, 16, 58, 44
    pw, ph = width - left - right, height - top - bottom
    finite_x = xs[np.isfinite(xs)]
    x_lo, x_hi = (float(finite_x.min()), float(finite_x.max())) if finite_x.size else (0.0, 1.0)
    if x_hi <= x_lo:
        x_hi = x_lo + 1.0
    ys = np.concatenate([v[np.isfinite(v)] for v in main.values()]) if main else np.array([])
    if log_y:
        ys = ys[ys > 0]
    if ys.size == 0:
        y_lo, y_hi = (0.1, 1.0) if log_y else (0.0, 1.0)
    else:
        y_lo, y_hi = float(ys.min()), float(ys.max())
    if log_y:
        a, b = math.log10(y_lo), math.log10(y_hi)
        pad = max(b - a, 0.1) * 0.05
        ty_lo, ty_hi = a - pad, b + pad
    else:
        pad = max(y_hi - y_lo, abs(y_hi) * 0.05, 1e-12) * 0.05
        ty_lo, ty_hi = y_lo - pad, y_hi + pad

    def px(v: np.ndarray) -> np.ndarray:
        return left + (v - x_lo) / (x_hi - x_lo) * pw

    def py(v: np.ndarray) -> np.ndarray:
        t = np.log10(np.maximum(v, 10.0**ty_lo)) if log_y else v
        return top + (1.0 - (t - ty_lo) / (ty_hi - ty_lo)) * ph

    def polyline(xv: np.ndarray, yv: np.ndarray, attrs: str) -> str:
        ok = np.isfinite(xv) & np.isfinite(yv)
        xv, yv = xv[ok], yv[ok]
        if xv.size > max_points:
            idx = np.unique(np.linspace(0, xv.size - 1, max_points).round().astype(int))
            xv, yv = xv[idx], yv[idx]
        pts = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(px(xv), py(yv), strict=True))
        return f'<polyline fill="none" {attrs} points="{pts}"/>'

    # A stable id, unique per chart of a page (the clip path is referenced by id).
    clip = f"clip{zlib.crc32(f'{title}|{columns}|{len(xs)}'.encode()):08x}"
    e = html.escape
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12" '
        f'role="img" aria-label="{e(title)}">',
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
        f'<clipPath id="{clip}"><rect x="{left}" y="{top}" width="{pw}" height="{ph}"/></clipPath>',
    ]
    if title:
        out.append(f'<text x="{left}" y="18" font-size="14" font-weight="bold">{e(title)}</text>')
    # Grid and ticks.
    y_ticks = _log_ticks(10.0**ty_lo, 10.0**ty_hi) if log_y else nice_ticks(ty_lo, ty_hi)
    for t in y_ticks:
        y = float(py(np.array([t]))[0])
        out.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" stroke="#e6e6e6"/>'
        )
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{_fmt_tick(t)}</text>')
    for t in nice_ticks(x_lo, x_hi, 6):
        xx = float(px(np.array([t]))[0])
        out.append(
            f'<line x1="{xx:.1f}" y1="{top}" x2="{xx:.1f}" y2="{top + ph}" stroke="#f0f0f0"/>'
        )
        out.append(
            f'<text x="{xx:.1f}" y="{top + ph + 16}" text-anchor="middle">{_fmt_tick(t)}</text>'
        )
    out.append(
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#444444"/>'
    )
    out.append(f'<text x="{left + pw / 2:.1f}" y="{height - 6}" text-anchor="middle">{e(x)}</text>')
    y_label = "loss (log scale)" if log_y else "loss"
    out.append(
        f'<text x="14" y="{top + ph / 2:.1f}" text-anchor="middle" '
        f'transform="rotate(-90 14 {top + ph / 2:.1f})">{y_label}</text>'
    )
    # Curves (raw faint under the smoothed one) and the legend.
    lx = left
    for i, c in enumerate(columns):
        color = CURVE_COLORS[i % len(CURVE_COLORS)]
        if smooth > 1:
            out.append(
                polyline(
                    xs,
                    raw[c],
                    f'stroke="{color}" stroke-opacity="0.22" stroke-width="1" clip-path="url(#{clip})"',
                )
            )
        out.append(
            polyline(xs, main[c], f'stroke="{color}" stroke-width="1.8" clip-path="url(#{clip})"')
        )
        out.append(
            f'<line x1="{lx}" y1="38" x2="{lx + 22}" y2="38" stroke="{color}" stroke-width="3"/>'
        )
        out.append(f'<text x="{lx + 27}" y="42">{e(str(c))}</text>')
        lx += 40 + 7 * len(str(c))
    if smooth > 1:
        note = f"moving average over {smooth} steps (raw values faint)"
        out.append(
            f'<text x="{left + pw}" y="18" text-anchor="end" fill="#666666">{e(note)}</text>'
        )
    out.append("</svg>")
    return "\n".join(out)


def history_title(path: PathLike) -> str:
    """Chart title from a history path: ``results/<ds>/pretrain/...`` → ``'EPS pretraining'``."""
    p = Path(path)
    stage = p.parent.name
    if stage == "pretrain":
        return f"EPS pretraining ({p.parent.parent.name})"
    names = {"self_train": "SMAF self-training", "deeplab": "DeepLab"}
    return f"{names.get(stage, stage)}: {p.parent.parent.name}"


# ------------------------------------------------------------------------ image primitives
_PALETTE = np.asarray(voc_palette(), dtype=np.uint8).reshape(256, 3)


def jet(values: np.ndarray) -> np.ndarray:
    """Jet colour map: floats in [0, 1] (clipped; NaN = 0) → uint8 ``[..., 3]`` RGB.

    Dark blue (0) → cyan → yellow → dark red (1), the usual CAM colouring.
    """
    v = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float32)), 0.0, 1.0)
    r = np.clip(1.5 - np.abs(4.0 * v - 3.0), 0.0, 1.0)
    g = np.clip(1.5 - np.abs(4.0 * v - 2.0), 0.0, 1.0)
    b = np.clip(1.5 - np.abs(4.0 * v - 1.0), 0.0, 1.0)
    return (np.stack([r, g, b], axis=-1) * 255.0 + 0.5).astype(np.uint8)


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend uint8 ``[H, W, 3]`` ``image`` with the jet colours of ``heat`` ``[H, W]`` in [0, 1]."""
    mixed = (1.0 - alpha) * image.astype(np.float32) + alpha * jet(heat).astype(np.float32)
    return np.clip(mixed + 0.5, 0, 255).astype(np.uint8)


def colorize(mask: np.ndarray) -> np.ndarray:
    """uint8 ``[H, W]`` label map → uint8 ``[H, W, 3]`` in the VOC palette (255 = cream)."""
    return _PALETTE[np.asarray(mask, dtype=np.uint8)]


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled font (ASCII only: figure text avoids ×, –, ′)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def _wrap(draw: ImageDraw.ImageDraw, text: str, font: Any, width: int) -> list[str]:
    """Split ``text`` (newlines kept) into lines no wider than ``width`` px, at spaces."""
    lines: list[str] = []
    for para in str(text).split("\n"):
        line = ""
        for word in para.split(" "):
            cand = f"{line} {word}" if line else word
            if line and draw.textlength(cand, font=font) > width:
                lines.append(line)
                line = word
            else:
                line = cand
        lines.append(line)
    return lines


def fit_tile(array: np.ndarray, tile: int, *, nearest: bool = False) -> Image.Image:
    """Resize an ``[H, W, 3]`` uint8 array so its longer side is ``tile`` px (aspect kept)."""
    img = Image.fromarray(np.asarray(array, dtype=np.uint8))
    h, w = array.shape[:2]
    scale = tile / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return img.resize(size, Image.NEAREST if nearest else Image.BILINEAR)


def placeholder(tile: int, text: str = "missing") -> Image.Image:
    """A grey ``tile × tile`` cell with ``text`` in the middle."""
    img = Image.new("RGB", (tile, tile), (200, 200, 200))
    draw = ImageDraw.Draw(img)
    font = _font(13)
    w = draw.textlength(text, font=font)
    draw.text(((tile - w) / 2, tile / 2 - 8), text, fill=(60, 60, 60), font=font)
    return img


def grid_figure(
    cells: Sequence[Sequence[Image.Image | None]],
    *,
    col_titles: Sequence[str] = (),
    row_titles: Sequence[str] = (),
    tile: int = 160,
    title: str | None = None,
    footer: Sequence[Image.Image] = (),
) -> Image.Image:
    """Lay ``cells`` (rows of PIL images, None = empty) on a white grid with text labels.

    Each cell is centred in a ``tile × tile`` box; column titles go above, row titles to the
    left (wrapped), ``title`` on top, the ``footer`` images (legends) below.
    """
    gap, margin = 6, 10
    n_rows = len(cells)
    n_cols = max((len(r) for r in cells), default=0)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    f_title, f_label = _font(17), _font(13)
    line_h = 16
    col_lines = [_wrap(probe, t, f_label, tile) for t in col_titles]
    head_h = (max((len(x) for x in col_lines), default=0) * line_h + 4) if col_titles else 0
    row_w = 150 if row_titles else 0
    title_h = 30 if title else 0
    grid_w = n_cols * tile + (n_cols - 1) * gap
    width = margin * 2 + row_w + grid_w
    footer_h = sum(f.height + gap for f in footer)
    height = margin * 2 + title_h + head_h + n_rows * (tile + gap) + footer_h
    width = max(width, *(f.width + 2 * margin for f in footer)) if footer else width
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    y0 = margin
    if title:
        draw.text((margin, y0), title, fill=(0, 0, 0), font=f_title)
        y0 += title_h
    x0 = margin + row_w
    for j, lines in enumerate(col_lines):
        for k, line in enumerate(lines):
            w = draw.textlength(line, font=f_label)
            x = x0 + j * (tile + gap) + (tile - w) / 2
            draw.text((x, y0 + k * line_h), line, fill=(0, 0, 0), font=f_label)
    y0 += head_h
    for i, row in enumerate(cells):
        top = y0 + i * (tile + gap)
        if i < len(row_titles):
            lines = _wrap(draw, row_titles[i], f_label, row_w - 8)
            ty = top + (tile - len(lines) * line_h) / 2
            for k, line in enumerate(lines):
                draw.text((margin, ty + k * line_h), line, fill=(0, 0, 0), font=f_label)
        for j, cell in enumerate(row):
            if cell is None:
                continue
            left = x0 + j * (tile + gap)
            canvas.paste(cell, (left + (tile - cell.width) // 2, top + (tile - cell.height) // 2))
    y = y0 + n_rows * (tile + gap)
    for f in footer:
        canvas.paste(f, (margin, y))
        y += f.height + gap
    return canvas


def colorbar(width: int = 320, label: str = "attention") -> Image.Image:
    """A horizontal jet colour bar from 0 to 1 with its label."""
    img = Image.new("RGB", (width, 34), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    font = _font(13)
    lw = int(draw.textlength(label, font=font)) + 8
    bar_w = width - lw - 30
    bar = jet(np.linspace(0.0, 1.0, bar_w)[None].repeat(12, axis=0))
    draw.text((0, 2), label, fill=(0, 0, 0), font=font)
    img.paste(Image.fromarray(bar), (lw, 4))
    draw.text((lw, 18), "0", fill=(0, 0, 0), font=font)
    draw.text((lw + bar_w - 6, 18), "1", fill=(0, 0, 0), font=font)
    return img


def class_legend(
    class_names: Sequence[str], classes: Iterable[int], width: int = 900
) -> Image.Image:
    """Colour swatches and names of ``classes`` (label values; 255 = ignore) in the VOC palette."""
    font = _font(13)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    items = []
    for c in sorted(set(int(c) for c in classes)):
        name = "ignore" if c == 255 else (class_names[c] if c < len(class_names) else str(c))
        items.append((c, f"{c}: {name}" if c != 255 else "255: ignore"))
    x, y, rows = 0, 0, []
    for c, text in items:
        w = 22 + int(probe.textlength(text, font=font)) + 16
        if x and x + w > width:
            x, y = 0, y + 20
        rows.append((x, y, c, text))
        x += w
    img = Image.new("RGB", (width, y + 20), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    for x, y, c, text in rows:
        draw.rectangle(
            [x, y + 2, x + 16, y + 16], fill=tuple(int(v) for v in _PALETTE[c]), outline=(0, 0, 0)
        )
        draw.text((x + 22, y + 2), text, fill=(0, 0, 0), font=font)
    return img


# ----------------------------------------------------------------------------- sample choice
@dataclass
class Sample:
    """One image shown in the figures, with the class its heat maps show."""

    image_id: str
    image: np.ndarray  # uint8 [H, W, 3]
    mask: np.ndarray | None  # uint8 [H, W] ground truth (255 = ignore), None if unknown
    labels: np.ndarray  # float32 [C] image-level labels (from the mask)
    cls: int  # class shown, 1..C
    note: str = ""  # why this image was chosen (row title)


def mask_areas(index: DatasetIndex, ids: Sequence[str], num_classes: int) -> dict[str, np.ndarray]:
    """Area fraction of every class ``[C+1]`` (index 0 = background) of each id's GT mask.

    Ids without a mask are skipped; ignore pixels count in no class.
    """
    areas = {}
    for image_id in ids:
        path = index.mask_path(image_id)
        if path is None:
            continue
        mask = load_mask(path)
        counts = np.bincount(mask.ravel(), minlength=256)[: num_classes + 1]
        areas[image_id] = counts / max(mask.size, 1)
    return areas


def pick_scale_samples(
    areas: Mapping[str, np.ndarray], min_area: float = 0.005
) -> list[tuple[str, int, str]]:
    """The image/class with the largest object and the one with the smallest (≥ ``min_area``).

    Returns ``[(id, class, note), ...]`` (one entry when both are the same); first id wins ties.
    """
    pairs = [
        (i, c, float(a[c])) for i, a in areas.items() for c in range(1, a.size) if a[c] >= min_area
    ]
    if not pairs:
        return []
    large = max(pairs, key=lambda p: p[2])
    small = min(pairs, key=lambda p: p[2])
    out = [(large[0], large[1], f"large object ({large[2]:.0%} of the image)")]
    if small[:2] != large[:2]:
        out.append((small[0], small[1], f"small object ({small[2]:.1%} of the image)"))
    return out


def pick_class_samples(areas: Mapping[str, np.ndarray], k: int) -> tuple[int, list[str]]:
    """The class present in the most images (lowest index on ties) and its first ``k`` ids."""
    if not areas:
        return 0, []
    present = np.stack([a[1:] > 0 for a in areas.values()])  # [N, C]
    cls = int(present.sum(0).argmax()) + 1
    ids = [i for i, a in areas.items() if a[cls] > 0][:k]
    return cls, ids


def load_sample(
    index: DatasetIndex, image_id: str, num_classes: int, cls: int, note: str = ""
) -> Sample:
    """Image, GT mask and mask-derived image labels of ``image_id``."""
    image = load_image(index.image_path(image_id))
    mask_path = index.mask_path(image_id)
    mask = load_mask(mask_path) if mask_path is not None else None
    labels = np.zeros(num_classes, dtype=np.float32)
    if mask is not None:
        values = np.unique(mask)
        values = values[(values >= 1) & (values <= num_classes)]
        labels[values.astype(int) - 1] = 1.0
    labels[cls - 1] = 1.0
    return Sample(image_id, image, mask, labels, cls, note)


# ------------------------------------------------------------------------------- attention maps
@torch.no_grad()
def scale_maps(
    model: Classifier,
    image: np.ndarray,
    labels: np.ndarray,
    scales: Sequence[float] = (0.5, 1.0, 1.5, 2.0),
    flip: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-scale and fused class attention of one image, as the teacher and seeds compute it.

    Returns:
        ``per_scale`` float32 ``[S, C, H, W]``: each scale (with its flip) fused alone, i.e.
        max-normalised per class (Eq. 5 on one scale), denoised; ``fused`` float32
        ``[C, H, W]``: Eq. 5–6 over every scale, denoised (= :func:`smaf.cam.class_maps`).
    """
    device = next(model.parameters()).device
    x = normalize(image)[None].to(device)  # [1, 3, H, W]
    lab = torch.as_tensor(np.asarray(labels), dtype=torch.float32, device=device)[None]  # [1, C]
    maps = multiscale_maps(lambda t: attention(model, t), x, scales, flip)
    size = tuple(image.shape[:2])
    per = len(maps) // len(scales)
    per_scale = [
        denoise(fuse_scales(maps[i * per : (i + 1) * per], size), lab)[0]  # [C, H, W]
        for i in range(len(scales))
    ]
    fused = denoise(fuse_scales(maps, size), lab)[0]  # [C, H, W]
    return torch.stack(per_scale).cpu().numpy(), fused.cpu().numpy()


@torch.no_grad()
def raw_attention(model: Classifier, image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Single-scale attention (softmax, not normalised) at image size, denoised: ``[C, H, W]``.

    What the student outputs and L_mac compares with the teacher's target.
    """
    device = next(model.parameters()).device
    x = normalize(image)[None].to(device)
    att = attention(model, x)  # [1, C, H/8, W/8]
    att = torch.nn.functional.interpolate(
        att, size=image.shape[:2], mode="bilinear", align_corners=False
    )
    lab = torch.as_tensor(np.asarray(labels), dtype=torch.float32, device=device)[None]
    return denoise(att, lab)[0].cpu().numpy()


def fused_maps(
    model: Classifier | None,
    sample: Sample,
    scales: Sequence[float],
    flip: bool,
    maps_dir: PathLike | None = None,
) -> np.ndarray | None:
    """Fused maps ``[C, H, W]`` of a sample: the seeds stage's ``<maps_dir>/<id>.npz`` when it
    exists (no forward pass), else computed with ``model``; None if neither is available."""
    if maps_dir is not None:
        path = Path(maps_dir) / f"{sample.image_id}.npz"
        if path.is_file():
            maps = load_maps(path)
            if maps.shape == (sample.labels.size, *sample.image.shape[:2]):
                return maps
    if model is None:
        return None
    return scale_maps(model, sample.image, sample.labels, scales, flip)[1]


# ------------------------------------------------------------------------------------ figures
def _gt_tile(sample: Sample, tile: int) -> Image.Image:
    if sample.mask is None:
        return placeholder(tile, "no ground truth")
    return fit_tile(colorize(sample.mask), tile, nearest=True)


def _heat(sample: Sample, heat: np.ndarray, tile: int) -> Image.Image:
    return fit_tile(overlay(sample.image, heat), tile)


def scale_attention_figure(
    samples: Sequence[Sample],
    per_scale: Sequence[np.ndarray],
    fused: Sequence[np.ndarray],
    class_names: Sequence[str],
    *,
    scales: Sequence[float],
    tile: int = 160,
) -> Image.Image:
    """Fig. 1: one row per sample: image, GT, the class's attention at each scale, fused.

    ``per_scale[i]`` is ``[S, C, H, W]`` and ``fused[i]`` ``[C, H, W]`` of ``samples[i]``
    (:func:`scale_maps`).
    """
    rows, titles = [], []
    for s, per, fu in zip(samples, per_scale, fused, strict=True):
        c = s.cls - 1
        row = [fit_tile(s.image, tile), _gt_tile(s, tile)]
        row += [_heat(s, m[c], tile) for m in per]
        row.append(_heat(s, fu[c], tile))
        rows.append(row)
        titles.append(f"{s.image_id}\n{_name(class_names, s.cls)}\n{s.note}".strip())
    cols = ["image", "ground truth", *[f"scale x{g:g}" for g in scales], "fused (Eq. 5-6)"]
    return grid_figure(
        rows,
        col_titles=cols,
        row_titles=titles,
        tile=tile,
        title="Fig. 1. Class attention of the EPS model at each scale, and fused",
        footer=[colorbar()],
    )


def eps_smaf_figure(
    samples: Sequence[Sample],
    eps: Sequence[np.ndarray],
    smaf: Sequence[np.ndarray],
    class_names: Sequence[str],
    *,
    tile: int = 160,
) -> Image.Image:
    """Fig. 3: one column per sample; rows image, GT, EPS fused map, SMAF fused map.

    ``eps[i]`` / ``smaf[i]``: fused maps ``[C, H, W]`` of ``samples[i]`` (:func:`fused_maps`);
    each column shows the channel of its sample's class.
    """
    cols = [
        [fit_tile(s.image, tile), _gt_tile(s, tile), _heat(s, e[s.cls - 1], tile)]
        + [_heat(s, m[s.cls - 1], tile)]
        for s, e, m in zip(samples, eps, smaf, strict=True)
    ]
    rows = [list(r) for r in zip(*cols, strict=True)] if cols else []
    names = dict.fromkeys(_name(class_names, s.cls) for s in samples)
    name = ", ".join(names)
    return grid_figure(
        rows,
        col_titles=[s.image_id for s in samples],
        row_titles=["image", "ground truth", f"EPS: {name}", f"SMAF: {name}"],
        tile=tile,
        title=f"Fig. 3. Fused attention of '{name}': EPS vs SMAF",
        footer=[colorbar()],
    )


def reactivation_figure(
    samples: Sequence[Sample],
    single: Sequence[np.ndarray],
    fused: Sequence[np.ndarray],
    class_names: Sequence[str],
    *,
    thr: float = 0.2,
    student: Sequence[np.ndarray] | None = None,
    tile: int = 160,
) -> Image.Image:
    """Fig. 4: per sample, the teacher's single-scale map, its fused map F, the reactivated
    target F' (Eq. 8, computed here from F) and, if given, the student's single-scale output.

    ``single[i]``, ``fused[i]``, ``student[i]``: ``[C, H, W]`` maps of ``samples[i]``.
    """
    rows, titles = [], []
    for i, s in enumerate(samples):
        target = reactivate(torch.from_numpy(np.asarray(fused[i]))[None], thr)[0].numpy()
        c = s.cls - 1
        row = [
            fit_tile(s.image, tile),
            _gt_tile(s, tile),
            _heat(s, single[i][c], tile),
            _heat(s, fused[i][c], tile),
            _heat(s, target[c + 1], tile),  # [C+1, H, W]: background first
        ]
        if student is not None:
            row.append(_heat(s, student[i][c], tile))
        rows.append(row)
        titles.append(f"{s.image_id}\n{_name(class_names, s.cls)}")
    cols = [
        "image",
        "ground truth",
        "EPS x1 (single scale)",
        "fused F (w/o reactivation)",
        f"reactivated F' (thr={thr:g})",
    ]
    if student is not None:
        cols.append("SMAF student x1 (softmax)")
    return grid_figure(
        rows,
        col_titles=cols,
        row_titles=titles,
        tile=tile,
        title="Fig. 4. Single-scale vs fused attention, and the reactivated target",
        footer=[colorbar()],
    )


def label_figure(
    index: DatasetIndex,
    ids: Sequence[str],
    columns: Mapping[str, PathLike],
    class_names: Sequence[str],
    *,
    title: str,
    tile: int = 160,
) -> Image.Image:
    """Fig. 5: one row per id: image, GT, then each label folder's ``<id>.png`` in VOC colours.

    ``columns`` maps a column title to a folder of label PNGs; a missing file is a grey cell.
    """
    rows, seen = [], set()
    for image_id in ids:
        image = load_image(index.image_path(image_id))
        row = [fit_tile(image, tile)]
        gt = index.mask_path(image_id)
        for path in [gt, *(Path(folder) / f"{image_id}.png" for folder in columns.values())]:
            if path is not None and path.is_file():
                mask = load_mask(path)
                seen.update(np.unique(mask).tolist())
                row.append(fit_tile(colorize(mask), tile, nearest=True))
            else:
                row.append(placeholder(tile))
        rows.append(row)
    n_cols = 2 + len(columns)
    legend = class_legend(class_names, seen, width=max(400, 150 + n_cols * (tile + 6)))
    return grid_figure(
        rows,
        col_titles=["image", "ground truth", *columns],
        row_titles=list(ids),
        tile=tile,
        title=title,
        footer=[legend],
    )


def _name(class_names: Sequence[str], cls: int) -> str:
    return class_names[cls] if 0 <= cls < len(class_names) else f"class {cls}"


# ---------------------------------------------------------------------------------- HTML page
_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1280px;
       margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #333; padding-bottom: .2em; }
h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
table.tbl { border-collapse: collapse; margin: .8em 0; font-size: 14px; }
table.tbl th, table.tbl td { border: 1px solid #ccc; padding: 4px 10px; text-align: right; }
table.tbl th { background: #f0f0f0; }
table.tbl td:first-child, table.tbl th:first-child { text-align: left; }
table.tbl tr:nth-child(even) td { background: #fafafa; }
.note { color: #8a5a00; background: #fff8e5; border-left: 4px solid #f0b429; padding: .4em .8em; }
.caption, figcaption { color: #444; font-size: 14px; max-width: 1100px; }
figure { margin: 1.2em 0; }
figure img { max-width: 100%; border: 1px solid #ddd; }
svg { max-width: 100%; height: auto; border: 1px solid #ddd; margin: .4em 0; }
code { background: #f3f3f3; padding: 0 .25em; }
"""


def png_data_uri(img: Image.Image) -> str:
    """``data:image/png;base64,...`` of a PIL image."""
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def table_html(df: pd.DataFrame, *, index: bool = False, float_format: str = "{:.1f}") -> str:
    """A DataFrame as an escaped HTML table (class ``tbl``); NaN shown as ``–``."""
    return df.to_html(
        index=index,
        escape=True,
        border=0,
        classes="tbl",
        na_rep=NA,
        float_format=float_format.format,
    )


def note_html(text: str) -> str:
    """A highlighted one-line note (missing inputs)."""
    return f'<p class="note">{html.escape(text)}</p>'


def figure_html(img: Image.Image, caption: str, alt: str) -> str:
    """An embedded PNG with its caption."""
    return (
        f'<figure><img src="{png_data_uri(img)}" alt="{html.escape(alt)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _missing(what: str, path: PathLike | None, target: str | None = None) -> str:
    if path is None:
        return note_html(f"{what}: not available (no input given).")
    run = target or str(path)
    return note_html(f"{what}: not available ({path} is missing; run target {run}).")


def _exists(path: PathLike | None) -> bool:
    return path is not None and Path(path).exists()


# ------------------------------------------------------------------------------------ builder
def build_report(
    summary_csv: PathLike,
    out_html: PathLike,
    *,
    dataset: str | None = None,
    ablations_csv: PathLike | None = None,
    eval_csvs: Sequence[PathLike] = (),
    histories: Sequence[PathLike] = (),
    index: PathLike | None = None,
    train_role: str = "train",
    val_role: str = "val",
    eps_model: PathLike | None = None,
    smaf_model: PathLike | None = None,
    label_dirs: Mapping[str, PathLike] | None = None,
    pred_dirs: Mapping[str, PathLike] | None = None,
    maps_dirs: Mapping[str, PathLike] | None = None,
    scales: Sequence[float] = (0.5, 1.0, 1.5, 2.0),
    flip: bool = True,
    thr: float = 0.2,
    n_images: int = 4,
    scan: int = 200,
    tile: int = 160,
    smooth: int | None = None,
    device: str = "cpu",
    threads: int | None = None,
    figure_dir: PathLike | None = None,
    title: str | None = None,
) -> Path:
    """Write the report: one self-contained HTML file (inline CSS, SVG charts, base64 PNGs).

    Args:
        summary_csv: results/summary.csv (required).
        out_html: the page to write (atomically).
        dataset: keep only this dataset's summary rows; None = every dataset in the summary.
            VOC datasets (``voc*``) get the paper's numbers beside ours.
        ablations_csv: optional ablations table (``table,row,experiment,seed,stage,miou``).
        eval_csvs: per-class evaluation CSVs (results/<ds>/<exp>/eval/*.csv).
        histories: training history CSVs, one chart each.
        index: results/<ds>/data/index.csv (images, masks, class names); needed for figures.
        train_role, val_role: splits; figures 1, 3, 4 and 5a show train images, 5b val ones.
        eps_model, smaf_model: the EPS (pretrain) and SMAF (self_train) classifiers.
        label_dirs: Fig. 5a columns, title → folder of train label PNGs (seeds, CRF).
        pred_dirs: Fig. 5b columns, title → folder of val label PNGs (DeepLab predictions).
        maps_dirs: ``{'eps': ..., 'smaf': ...}``: the seeds stage's fused maps of the train ids
            (``seeds/<model>_train/maps``); Fig. 3 reads them instead of running the models.
        scales, flip: multi-scale attention settings (the seeds' / teacher's).
        thr: reactivation background score (Eq. 8).
        n_images: images per figure; ``scan``: how many train ids are read to choose them.
        tile: figure cell size in px.
        smooth: moving-average window of the curves; None = 1/50 of the history length.
        device: torch device of the figure computations ('auto', 'cpu', 'cuda', ...).
        threads: torch CPU threads (None = torch's default).
        figure_dir: also write the figures there as PNG files (None = only in the page).
        title: page title.

    Returns:
        The path written.
    """
    use_threads(threads)
    summary = read_summary(summary_csv)
    if dataset is not None:
        summary = summary[summary["dataset"] == dataset]
    datasets = list(pd.unique(summary["dataset"].dropna())) or ([dataset] if dataset else [])
    name = dataset or (datasets[0] if len(datasets) == 1 else ", ".join(map(str, datasets)))
    voc = any(is_voc(d) for d in datasets) or is_voc(dataset)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title or f'SMAF report: {name}')}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title or f'SMAF report: {name}')}</h1>",
        f'<p class="caption">From <code>{html.escape(str(summary_csv))}</code>: '
        f"{len(summary)} evaluations, experiments "
        f"{html.escape(', '.join(map(str, pd.unique(summary['group']))) or NA)}. "
        "mIoU in %; replicates of one experiment (seeds) as mean ± sample std (n runs)."
        + (" Paper columns: the SMAF paper on PASCAL VOC 2012." if voc else "")
        + "</p>",
    ]
    parts += _tables_section(summary, voc, ablations_csv)
    parts += _per_class_section(eval_csvs)
    parts += _curves_section(histories, smooth)
    parts += _figures_section(
        index=index,
        train_role=train_role,
        val_role=val_role,
        eps_model=eps_model,
        smaf_model=smaf_model,
        label_dirs=label_dirs or {},
        pred_dirs=pred_dirs or {},
        maps_dirs=maps_dirs or {},
        scales=scales,
        flip=flip,
        thr=thr,
        n_images=n_images,
        scan=scan,
        tile=tile,
        device=device,
        figure_dir=figure_dir,
    )
    parts.append("</body></html>")
    with atomic_write(out_html) as tmp:
        Path(tmp).write_text("\n".join(parts) + "\n", encoding="utf-8")
    log.info("report -> %s", out_html)
    return Path(out_html)


def _tables_section(summary: pd.DataFrame, voc: bool, ablations_csv: PathLike | None) -> list[str]:
    parts = ["<h2>Table 1. Semantic segmentation (DeepLab-ASPP) on val</h2>"]
    t1 = segmentation_table(summary, paper=voc)
    parts.append(
        table_html(t1) if len(t1) else note_html("no DeepLab val evaluations in the summary.")
    )
    parts.append(
        '<p class="caption">mIoU of DeepLab trained on the CRF-refined pseudo labels of '
        "train_aug (<i>pseudo labels</i>: whose), multi-scale inference, then DeepLab's dense "
        "CRF. The paper reports the CRF-refined val and test mIoU.</p>"
    )
    parts.append("<h2>Table 2. Pseudo labels (seeds and CRF) on train</h2>")
    t2 = pseudo_label_table(summary, paper=voc)
    parts.append(table_html(t2) if len(t2) else note_html("no seed evaluations in the summary."))
    parts.append(
        '<p class="caption">mIoU of the CAM seeds of the EPS model (pretraining) and of the SMAF '
        "model (self-training), and of their dense-CRF refinement.</p>"
    )
    parts.append("<h2>Tables 3–5. Ablations</h2>")
    if not _exists(ablations_csv):
        parts.append(_missing("ablations", ablations_csv, "ablations"))
        return parts
    tables = ablation_tables(read_ablations(ablations_csv), paper=voc)
    for table, df in tables.items():
        parts.append(f"<h3>{html.escape(ABLATION_TITLES.get(table, table))}</h3>")
        parts.append(table_html(df))
    parts.append(
        '<p class="caption">Self-training variants on train; mean ± std over the seeds of each '
        "row. The paper reports seed mIoU.</p>"
    )
    return parts


def _per_class_section(eval_csvs: Sequence[PathLike]) -> list[str]:
    parts = ["<h2>Per-class IoU (%)</h2>"]
    present = [p for p in eval_csvs if _exists(p)]
    for p in eval_csvs:
        if not _exists(p):
            parts.append(_missing("evaluation", p))
    if not present:
        if not eval_csvs:
            parts.append(note_html("per-class IoU: not available (no evaluation CSVs given)."))
        return parts
    parts.append(table_html(per_class_table(eval_names(present)).reset_index()))
    parts.append(
        '<p class="caption">Columns: <i>&lt;classifier&gt;_&lt;stage&gt;_&lt;split&gt;_'
        "&lt;ground truth&gt;</i> (seed = CAM seeds, crf = CRF pseudo labels, deeplab = "
        "segmentation predictions). The last row is the mean over classes (mIoU).</p>"
    )
    return parts


def _curves_section(histories: Sequence[PathLike], smooth: int | None) -> list[str]:
    parts = ["<h2>Training curves</h2>"]
    if not histories:
        parts.append(note_html("training curves: not available (no history CSVs given)."))
    for path in histories:
        if not _exists(path):
            parts.append(_missing("training history", path))
            continue
        df = read_history(path)
        window = smooth if smooth is not None else max(1, len(df) // 50)
        parts.append(svg_line_chart(df, title=history_title(path), smooth=window))
    parts.append(
        '<p class="caption">Every loss column of each stage\'s history.csv against the step '
        "(pretrain: loss = cls + sal; self_train: loss = w_cls·cls + α·mac; DeepLab: the sum of "
        "the per-scale cross-entropies).</p>"
    )
    return parts


def _figures_section(
    *,
    index: PathLike | None,
    train_role: str,
    val_role: str,
    eps_model: PathLike | None,
    smaf_model: PathLike | None,
    label_dirs: Mapping[str, PathLike],
    pred_dirs: Mapping[str, PathLike],
    maps_dirs: Mapping[str, PathLike],
    scales: Sequence[float],
    flip: bool,
    thr: float,
    n_images: int,
    scan: int,
    tile: int,
    device: str,
    figure_dir: PathLike | None,
) -> list[str]:
    parts = ["<h2>Figures</h2>"]
    if not _exists(index):
        return parts + [_missing("figures", index, "prepare_dataset")]
    index = DatasetIndex.read(index)
    num_classes = index.num_classes
    class_names = index.class_names
    train_ids = _ids(index, train_role)
    val_ids = _ids(index, val_role)
    areas = mask_areas(index, train_ids[:scan], num_classes)
    if not areas:
        parts.append(
            note_html("figures 1, 3, 4: not available (no ground-truth masks for the train ids).")
        )

    def emit(key: str, img: Image.Image, caption: str) -> None:
        if figure_dir is not None:
            with atomic_write(Path(figure_dir) / f"{key}.png") as tmp:
                img.save(tmp, format="PNG")
        parts.append(figure_html(img, caption, key))

    try:
        dev = resolve_device(device)
    except ConfigError as exc:  # e.g. 'cuda' on a login node: the report runs locally
        log.warning("%s Computing the figures on the CPU.", exc)
        dev = torch.device("cpu")
    models: dict[str, Classifier | None] = {}
    for key, path in (("eps", eps_model), ("smaf", smaf_model)):
        models[key] = None
        if _exists(path):
            try:
                models[key] = load_model(path, num_classes=num_classes)[0].eval().to(dev)
            except SmafError as exc:
                parts.append(note_html(f"{key} model unusable: {exc}"))
        else:
            parts.append(_missing(f"{key.upper()} model (figures 1, 3, 4)", path))
    teacher, student = models["eps"], models["smaf"]

    scale_samples = [
        load_sample(index, i, num_classes, c, note) for i, c, note in pick_scale_samples(areas)
    ]
    if teacher is not None and scale_samples:
        per_scale, fused = zip(
            *(scale_maps(teacher, s.image, s.labels, scales, flip) for s in scale_samples),
            strict=True,
        )
        emit(
            "fig1_scales",
            scale_attention_figure(
                scale_samples, per_scale, fused, class_names, scales=scales, tile=tile
            ),
            "Fig. 1. The EPS model's attention for one class at each image scale (each scale with "
            "its flip, max-normalised) and the fused map of all scales (Eq. 5–6), on the train image "
            "with the largest object and the one with the smallest object. The paper's observation: "
            "reduced images cover large objects better, enlarged ones recover small objects, and "
            "the fused map keeps both.",
        )
    cls, class_ids = pick_class_samples(areas, n_images)
    class_samples = [load_sample(index, i, num_classes, cls) for i in class_ids]
    if class_samples:
        eps = [fused_maps(teacher, s, scales, flip, maps_dirs.get("eps")) for s in class_samples]
        smaf = [fused_maps(student, s, scales, flip, maps_dirs.get("smaf")) for s in class_samples]
        if all(m is not None for m in [*eps, *smaf]):
            emit(
                "fig3_eps_vs_smaf",
                eps_smaf_figure(class_samples, eps, smaf, class_names, tile=tile),
                f"Fig. 3. Fused multi-scale attention (Eq. 5–6, denoised) of class "
                f"'{_name(class_names, cls)}' on the first {len(class_samples)} train images "
                "containing it: the EPS model (before self-training) and the SMAF model (after), "
                "as the seeds stage computes them. SMAF should cover the objects more completely.",
            )
        else:
            parts.append(note_html("Fig. 3: not available (needs both models or their seed maps)."))
    if teacher is not None and scale_samples:  # Fig. 4 reuses the fused maps of Fig. 1
        single = [
            scale_maps(teacher, s.image, s.labels, (1.0,), False)[0][0] for s in scale_samples
        ]
        after = (
            [raw_attention(student, s.image, s.labels) for s in scale_samples]
            if student is not None
            else None
        )
        emit(
            "fig4_reactivation",
            reactivation_figure(
                scale_samples, single, fused, class_names, thr=thr, student=after, tile=tile
            ),
            "Fig. 4. The teacher's (EPS) attention at the original scale only, its fused "
            "multi-scale map F (Eq. 5–6: the target without reactivation), and the reactivated "
            f"target F′ (Eq. 8, background {thr:g}: where every class is below {thr:g} the classes "
            f"are scaled by 1/{thr:g}, boosting under-activated regions)"
            + (
                ", and the SMAF student's single-scale output (softmax) after self-training."
                if student is not None
                else "."
            ),
        )
    shown_train = [i for i in train_ids if i in areas][:n_images] or train_ids[:n_images]
    present = {t: d for t, d in label_dirs.items() if _exists(d)}
    for t, d in label_dirs.items():
        if not _exists(d):
            parts.append(_missing(f"label folder '{t}'", d))
    if present and shown_train:
        emit(
            "fig5a_pseudo_labels",
            label_figure(
                index,
                shown_train,
                present,
                class_names,
                title="Fig. 5a. Pseudo labels on train",
                tile=tile,
            ),
            "Fig. 5a. The first train images: ground truth, CAM seeds and CRF pseudo labels in the "
            "VOC palette (cream = ignore band along object boundaries).",
        )
    present = {t: d for t, d in pred_dirs.items() if _exists(d)}
    for t, d in pred_dirs.items():
        if not _exists(d):
            parts.append(_missing(f"prediction folder '{t}'", d))
    if present and val_ids:
        emit(
            "fig5b_segmentation",
            label_figure(
                index,
                val_ids[:n_images],
                present,
                class_names,
                title="Fig. 5b. DeepLab on val",
                tile=tile,
            ),
            "Fig. 5b. The first val images: ground truth and the DeepLab predictions (multi-scale "
            "inference, and with DeepLab's dense CRF).",
        )
    return parts


def _ids(index: DatasetIndex, role: str) -> list[str]:
    """Ids of split ``role`` of the index, [] when the split is empty or unknown."""
    try:
        return index.ids(role)
    except DataError:
        return []

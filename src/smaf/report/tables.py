"""The report's tables: pandas DataFrames of display strings, built from the pipeline's CSVs.

* Table 1 (DeepLab on val) and Table 2 (seeds and CRF pseudo labels on train) from
  ``results/summary.csv``; replicates of one experiment (``<name>_seed<k>``) are shown as
  ``mean ± std (n=k)``; on VOC the paper's numbers (:data:`PAPER`) stand beside ours;
* Tables 3–5 (ablations) from ``ablations.csv``;
* per-class IoU from the evaluation CSVs.

:func:`write_tables` writes them as CSV (for people and scripts) and as small HTML pages (for
Snakemake's report, which shows HTML results inline).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from smaf.errors import DataError
from smaf.io import PathLike
from smaf.provenance import SAM

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
#: Table 2: seed stages of summary.csv → (method, column); CLIP is the CLIP base (no paper value).
TABLE2_STAGES = {
    "clip_seed": ("CLIP", "seed"),
    "clip_crf": ("CLIP", "+CRF"),
    "eps_seed": ("EPS", "seed"),
    "eps_crf": ("EPS", "+CRF"),
    "smaf_seed": ("SMAF", "seed"),
    "smaf_crf": ("SMAF", "+CRF"),
    "clip_sam": ("CLIP", "+SAM"),
    "clip_sam_crf": ("CLIP", "+SAM+CRF"),
    "eps_sam": ("EPS", "+SAM"),
    "eps_sam_crf": ("EPS", "+SAM+CRF"),
    "smaf_sam": ("SMAF", "+SAM"),
    "smaf_sam_crf": ("SMAF", "+SAM+CRF"),
}
#: Table 2 columns shown only when the summary has them (config `refine:`).
TABLE2_OPTIONAL = ("+SAM", "+SAM+CRF")
#: Ablation columns: stage of ablations.csv → column title.
ABLATION_STAGES = {"smaf_seed": "seed mIoU", "smaf_crf": "+CRF mIoU"}

#: What each number used (summary.csv / ablations.csv columns, smaf.provenance): shown after
#: the mIoU columns of every table whose input has them.
PROVENANCE = ("base", "supervision")

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
        text = dict.fromkeys(("dataset", "experiment", "group", *PROVENANCE), str)
        df = pd.read_csv(path, dtype=text)
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


def _provenance(rows: pd.DataFrame, columns: Sequence[str]) -> dict[str, str]:
    """The ``base`` / ``supervision`` cells of a table row: its rows' values, once each (the
    replicates of an experiment share them; different ones are joined with " | ")."""
    return {c: " | ".join(str(v) for v in pd.unique(rows[c].dropna())) or NA for c in columns}


def _table2_provenance(rows: pd.DataFrame, columns: Sequence[str]) -> dict[str, str]:
    """:func:`_provenance` of a Table 2 row: its seed / CRF rows', with ``SAM`` added for the
    ``+SAM`` columns when they are there (one cell, not the two chains joined by " | ")."""
    sam = rows["stage"].str.contains("_sam")
    out = _provenance(rows[~sam] if (~sam).any() else rows, columns)
    if sam.any() and "supervision" in columns and (~sam).any():
        out["supervision"] = f"{out['supervision']}; {SAM} (+SAM columns)"
    return out


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
        With an ``init`` column in the summary (the evaluation records'), an ``init`` column
        says which weights DeepLab started from (the replicates' values joined if they differ);
        with :data:`PROVENANCE` columns, ``base`` and ``supervision`` follow the mIoU columns.
    """
    df = with_replicates(summary)
    df = df[df["stage"].isin(TABLE1_STAGES) & (df["split"] == "val")]
    keys = ["dataset", "group", "model", "gt"]
    with_init = "init" in df.columns
    used = [c for c in PROVENANCE if c in df.columns]
    rows = []
    for key, g in df.groupby(keys, sort=False, dropna=False):
        row = dict(zip(["dataset", "experiment", "pseudo labels", "gt"], key, strict=True))
        if with_init:
            inits = [str(v) for v in pd.unique(g["init"].dropna())]
            row["init"] = "; ".join(inits) or NA
        for stage, col in TABLE1_STAGES.items():
            row[col] = format_miou(g.loc[g["stage"] == stage, "miou"])
        rows.append({**row, **_provenance(g, used)})
    columns = ["dataset", "experiment", "pseudo labels", "gt"]
    columns += ["init", *TABLE1_STAGES.values()] if with_init else [*TABLE1_STAGES.values()]
    columns += used
    out = pd.DataFrame(rows, columns=columns)
    if _wants_paper(summary, paper):
        for split in ("val", "test"):
            out[f"paper {split}"] = [
                _paper_value(PAPER["table1"].get(str(m), {}).get(split)) if is_voc(d) else NA
                for d, m in zip(out["dataset"], out["pseudo labels"], strict=True)
            ]
    return out


def pseudo_label_table(summary: pd.DataFrame, *, paper: bool | None = None) -> pd.DataFrame:
    """Table 2: mIoU of the EPS / SMAF seeds and their CRF refinement per experiment group
    (and their SAM / SAM + CRF refinements, columns ``+SAM`` / ``+SAM+CRF``, where scored).

    Args:
        summary: rows of results/summary.csv.
        paper: add the paper's seed / +CRF columns; None = when a dataset is VOC. Values are
            filled for VOC rows on the train split only.

    Returns:
        One row per (dataset, experiment group, split, gt, method), EPS before SMAF. With a
        ``thr`` column in the summary (the seeds' background score), a ``thr`` column too
        (see :func:`threshold_notes` for how it was chosen); with :data:`PROVENANCE`
        columns, ``base`` and ``supervision`` follow the mIoU columns.
    """
    df = with_replicates(summary)
    df = df[df["stage"].isin(TABLE2_STAGES)].copy()
    df["method"] = df["stage"].map(lambda s: TABLE2_STAGES[s][0])
    keys = ["dataset", "group", "split", "gt", "method"]
    with_thr = "thr" in df.columns
    used = [c for c in PROVENANCE if c in df.columns]
    rows = []
    for key, g in df.groupby(keys, sort=False, dropna=False):
        row = dict(zip(["dataset", "experiment", "split", "gt", "method"], key, strict=True))
        if with_thr:
            row["thr"] = _thr_cell(g)
        for stage, (method, col) in TABLE2_STAGES.items():
            if method == row["method"]:
                row[col] = format_miou(g.loc[g["stage"] == stage, "miou"])
        rows.append({**row, **_table2_provenance(g, used)})
    columns = ["dataset", "experiment", "split", "gt", "method", *(["thr"] if with_thr else [])]
    present = {TABLE2_STAGES[s][1] for s in pd.unique(df["stage"])}
    extra = [c for c in TABLE2_OPTIONAL if c in present]
    out = pd.DataFrame(rows, columns=[*columns, "seed", "+CRF", *extra, *used])
    if len(out):
        # EPS before SMAF inside each (dataset, experiment, split, gt), first-seen order kept.
        block = out[["dataset", "experiment", "split", "gt"]].astype(str).agg("|".join, axis=1)
        out["_k"] = block.map({k: i for i, k in enumerate(pd.unique(block))})
        out = out.sort_values(["_k", "method"], kind="stable").drop(columns="_k")
        out = out.reset_index(drop=True)
    if _wants_paper(summary, paper):
        for col, field in (("paper seed", "seed"), ("paper +CRF", "crf")):
            out[col] = [
                _paper_value(PAPER["table2"].get(m.lower(), {}).get(field))
                if is_voc(d) and s == "train"
                else NA
                for d, s, m in zip(out["dataset"], out["split"], out["method"], strict=True)
            ]
    return out


def _is_auto(g: pd.DataFrame) -> bool:
    """Whether the rows' thr was chosen by ``thr: auto`` (summary column ``thr_source``)."""
    return "thr_source" in g.columns and g["thr_source"].notna().any()


def _thr_cell(g: pd.DataFrame) -> str:
    """Table 2's thr cell: the value(s), ``(auto, held-out)`` when ``thr: auto`` chose them."""
    shown = ", ".join(f"{v:g}" for v in sorted(pd.unique(g["thr"].dropna().astype(float))))
    if not shown:
        return NA
    return f"{shown} (auto, held-out)" if _is_auto(g) else shown


def threshold_notes(
    summary: pd.DataFrame, sweeps: Mapping[str, Mapping[str, Any]] | None = None
) -> list[str]:
    """How Table 2's background score ``thr`` was chosen, one line per experiment group.

    A thr picked by looking at Table 2 uses the ground truth of the split it reports (the
    leakage users ask about: SEAM #31, ReCAM #3). ``sweeps`` maps a run name to its
    ``thr_sweep.json`` record (:func:`smaf.stages.thr_sweep.thr_sweep`): tuned on held-out
    train_aug images that are in no evaluation split. A group without one is marked as set in
    the configuration, i.e. possibly chosen with ground-truth access.
    """
    df = with_replicates(summary)
    df = df[df["stage"].isin(TABLE2_STAGES)]
    if "thr" not in df.columns or not len(df):
        return []
    sweeps = dict(sweeps or {})
    notes = []
    for group, g in df.groupby("group", sort=False):
        thrs = sorted(float(v) for v in pd.unique(g["thr"].dropna()))
        if not thrs:
            continue
        shown = ", ".join(f"{v:g}" for v in thrs)
        if _is_auto(g):
            notes.append(
                f"{group}: thr {shown} was chosen automatically (`thr: auto`): the best seed "
                "mIoU of the held-out sweep on train_aug images that are in no evaluation "
                "split, per model; the evaluated split's ground truth was not used."
            )
            continue
        runs = [str(e) for e in pd.unique(g["experiment"]) if str(e) in sweeps]
        if not runs:
            notes.append(
                f"{group}: thr {shown} is set in the configuration (default: the paper's 0.2), "
                "not tuned on held-out data: a value picked by looking at this table was chosen "
                "with the evaluated split's ground truth. `snakemake thr_sweep` tunes it on "
                "held-out train_aug images that are in no evaluation split."
            )
            continue
        sweep = sweeps[runs[0]]
        n = len(sweep.get("holdout", []))
        for model, result in sweep.get("models", {}).items():
            if result.get("configured_thr") is None:
                continue  # a sweep of thr: auto seeds: nothing configured to compare
            best, at = float(result["thr"]), float(result["configured_thr"])
            if best == at:
                notes.append(
                    f"{group}: thr {at:g} is also the best of the held-out sweep ({model} seeds, "
                    f"{n} train_aug images in no evaluation split, {sweep.get('gt')}: mIoU "
                    f"{100 * result['miou']:.1f}): chosen without the evaluated split's ground "
                    "truth."
                )
            else:
                notes.append(
                    f"{group}: the held-out sweep ({model} seeds, {n} train_aug images in no "
                    f"evaluation split) prefers thr {best:g} (mIoU {100 * result['miou']:.1f} "
                    f"vs {100 * result['configured_miou']:.1f} at {at:g}); this table uses "
                    f"{at:g}, set in the configuration."
                )
    return notes


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
    """Read ablations.csv (``table,row,experiment,seed,stage,miou``; miou a fraction; then
    ``base,supervision`` where the evaluation records had them)."""
    text = dict.fromkeys(("table", "row", "experiment", "stage", *PROVENANCE), str)
    df = pd.read_csv(path, dtype=text)
    missing = {"table", "row", "stage", "miou"} - set(df.columns)
    if missing:
        raise DataError(
            f"{path} lacks the columns {sorted(missing)} (table,row,experiment,seed,stage,miou)."
        )
    return df


def ablation_tables(ablations: pd.DataFrame, *, paper: bool = False) -> dict[str, pd.DataFrame]:
    """Tables 3–5: one DataFrame per ``table`` value, rows in file order.

    Columns: ``row``, ``seed mIoU`` and ``+CRF mIoU`` (mean ± std over the seeds of the row),
    ``experiments`` (the experiment groups behind the row), ``base`` and ``supervision`` when
    ablations.csv has them and, with ``paper``, the paper's seed mIoU of the matching row.
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
            row.update(_provenance(r, [c for c in PROVENANCE if c in r.columns]))
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

"""The report pages: ``results/report.html`` and the tables' own pages, from jinja2 templates.

:func:`build_report` (rule ``report``) assembles what the other rules produced into one
self-contained page (inline CSS, figures as base64 PNGs): the tables computed from
``results/summary.csv`` (:mod:`smaf.report.tables`), the training-curve and figure PNGs of the
figure rules. Only the summary is required; every other missing piece becomes a one-line note.

:func:`write_tables` (rule ``report_tables``) writes each table as CSV and as a small HTML page,
the form in which Snakemake's own report (``snakemake --report``) shows it.

The templates are package data: ``smaf/templates/*.j2`` (and the shared ``report.css``).
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import jinja2
import pandas as pd

from smaf.io import PathLike, atomic_write
from smaf.report.tables import (
    ABLATION_TITLES,
    NA,
    ablation_tables,
    eval_names,
    is_voc,
    per_class_table,
    pseudo_label_table,
    read_ablations,
    read_summary,
    segmentation_table,
    threshold_notes,
)

log = logging.getLogger(__name__)

#: The paper's figures the page shows, in page order: key (file stem) → short name.
FIGURES = {
    "fig1_scales": "Fig. 1",
    "fig3_eps_vs_smaf": "Fig. 3",
    "fig4_reactivation": "Fig. 4",
    "fig5a_pseudo_labels": "Fig. 5a",
    "fig5b_segmentation": "Fig. 5b",
}
#: Files of :func:`write_tables`: key → (file stem, title). The ablations page has no CSV
#: (ablations.csv itself is the machine-readable table).
TABLE_FILES = {
    "table1": ("table1_segmentation", "Table 1. Semantic segmentation (DeepLab-ASPP) on val"),
    "table2": ("table2_pseudo_labels", "Table 2. Pseudo labels (seeds and CRF) on train"),
    "per_class": ("per_class_iou", "Per-class IoU (%)"),
    "ablations": ("ablations", "Tables 3–5. Ablations"),
}


def environment() -> jinja2.Environment:
    """The jinja2 environment of the package's templates (HTML autoescaped)."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("smaf", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


def table_html(df: pd.DataFrame, *, index: bool = False) -> str:
    """A DataFrame as an escaped HTML table (class ``tbl``); NaN shown as ``–``."""
    return df.to_html(
        index=index, escape=True, border=0, classes="tbl", na_rep=NA, float_format="{:.1f}".format
    )


def png_data_uri(path: PathLike) -> str:
    """``data:image/png;base64,...`` of a PNG file."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def missing_note(what: str, path: PathLike | None, target: str | None = None) -> str:
    """The one-line note for an input that is not there (``target``: what to run)."""
    if path is None:
        return f"{what}: not available (no input given)."
    return f"{what}: not available ({path} is missing; run target {target or path})."


def _exists(path: PathLike | None) -> bool:
    return path is not None and Path(path).exists()


@dataclass
class _Tables:
    """Every table of the report: HTML strings / DataFrames, and notes for missing ones."""

    table1: pd.DataFrame
    table2: pd.DataFrame
    table2_notes: list[str]
    ablations: dict[str, pd.DataFrame]
    ablation_notes: list[str]
    per_class: pd.DataFrame | None
    per_class_notes: list[str]


def _summary(summary_csv: PathLike, dataset: str | None) -> tuple[pd.DataFrame, bool, str]:
    """The summary rows of ``dataset`` (all for None), whether the paper applies, the name."""
    summary = read_summary(summary_csv)
    if dataset is not None:
        summary = summary[summary["dataset"] == dataset]
    datasets = list(pd.unique(summary["dataset"].dropna())) or ([dataset] if dataset else [])
    name = dataset or (datasets[0] if len(datasets) == 1 else ", ".join(map(str, datasets)))
    return summary, any(is_voc(d) for d in datasets) or is_voc(dataset), str(name)


def other_datasets(summary_csv: PathLike, dataset: str | None) -> list[str]:
    """``"<name> (<n> evaluations)"`` of each dataset in the summary other than ``dataset``
    (the page shows one dataset; the summary keeps every dataset run)."""
    if dataset is None:
        return []
    counts = read_summary(summary_csv)["dataset"].dropna().astype(str).value_counts()
    return [f"{d} ({counts[d]} evaluations)" for d in sorted(counts.index) if d != dataset]


def unscored_note(dataset: str) -> str:
    """The one note of a dataset without ground-truth masks: what is missing and why."""
    return (
        f"No scores: dataset {dataset} has no ground-truth masks (no masks: folder in its "
        "config), so nothing is scored and the score tables (Tables 1–5, per-class IoU) are "
        f"left out. To score, add masks: <folder of label PNGs> to datasets.{dataset}; the "
        "figures and training curves below need none."
    )


def read_sweeps(paths: Sequence[PathLike]) -> dict[str, dict]:
    """The ``thr_sweep.json`` records among ``paths`` that exist, by run (their experiment)."""
    records = {}
    for path in paths:
        if _exists(path):
            record = json.loads(Path(path).read_text())
            records[str(record.get("experiment", Path(path).parent.name))] = record
    return records


def _tables(
    summary: pd.DataFrame,
    voc: bool,
    ablations_csv: PathLike | None,
    eval_csvs: Sequence[PathLike],
    thr_sweeps: Sequence[PathLike] = (),
) -> _Tables:
    ablations, ablation_notes = {}, []
    if _exists(ablations_csv):
        ablations = ablation_tables(read_ablations(ablations_csv), paper=voc)
    else:
        ablation_notes.append(missing_note("ablations", ablations_csv, "ablations"))
    present = [p for p in eval_csvs if _exists(p)]
    per_class_notes = [missing_note("evaluation", p) for p in eval_csvs if not _exists(p)]
    if not eval_csvs:
        per_class_notes.append("per-class IoU: not available (no evaluation CSVs given).")
    return _Tables(
        table1=segmentation_table(summary, paper=voc),
        table2=pseudo_label_table(summary, paper=voc),
        table2_notes=threshold_notes(summary, read_sweeps(thr_sweeps)),
        ablations=ablations,
        ablation_notes=ablation_notes,
        per_class=per_class_table(eval_names(present)).reset_index() if present else None,
        per_class_notes=per_class_notes,
    )


def build_report(
    summary_csv: PathLike,
    out_html: PathLike,
    *,
    dataset: str | None = None,
    ablations_csv: PathLike | None = None,
    eval_csvs: Sequence[PathLike] = (),
    curves: Mapping[str, PathLike] | None = None,
    figures: Mapping[str, PathLike] | None = None,
    tables_dir: PathLike | None = None,
    title: str | None = None,
    thr_sweeps: Sequence[PathLike] = (),
    masks: bool = True,
) -> Path:
    """Write the report: one self-contained HTML file (inline CSS, base64 PNGs).

    Args:
        summary_csv: results/summary.csv (required).
        out_html: the page to write (atomically).
        dataset: keep only this dataset's summary rows; None = every dataset in the summary.
            VOC datasets (``voc*``) get the paper's numbers beside ours.
        ablations_csv: optional ablations table (``table,row,experiment,seed,stage,miou``).
        eval_csvs: per-class evaluation CSVs (results/<ds>/<exp>/eval/*.csv).
        curves: training-curve PNGs (rule ``figure_curves``), experiment name → PNG.
        figures: the paper's figures (rules ``figure_*``), :data:`FIGURES` key → PNG; other keys
            are shown after them, without a caption.
        tables_dir: also write the tables there (:func:`write_tables`); None = page only.
        title: page title.
        thr_sweeps: optional ``thr_sweep.json`` files (rule ``sweep_thr``); Table 2's notes
            say whether its ``thr`` was tuned on held-out data (:func:`threshold_notes`).
        masks: whether the dataset has ground-truth masks; without, nothing is scored and
            one note (:func:`unscored_note`) replaces the score tables.

    Returns:
        The path written.
    """
    summary, voc, name = _summary(summary_csv, dataset)
    tables = _tables(summary, voc, ablations_csv, eval_csvs, thr_sweeps)
    curve_figs, curve_notes = _embed(
        {f"training curves of {k}": v for k, v in (curves or {}).items()}
    )
    if not curves:
        curve_notes.append("training curves: not available (no curve figures given).")
    figures = dict(figures or {})
    order = [k for k in FIGURES if k in figures] + [k for k in figures if k not in FIGURES]
    figs, figure_notes = _embed({k: figures[k] for k in order}, names=FIGURES)
    if not figures:
        figure_notes.append("figures: not available (no figures given).")
    page_title = title or f"SMAF report: {name}"
    html = (
        environment()
        .get_template("report.html.j2")
        .render(
            title=page_title,
            summary_csv=str(summary_csv),
            n_evaluations=len(summary),
            unscored="" if masks else unscored_note(name),
            other_datasets=other_datasets(summary_csv, dataset),
            experiments=[str(g) for g in pd.unique(summary["group"])],
            voc=voc,
            table1=table_html(tables.table1) if len(tables.table1) else "",
            table2=table_html(tables.table2) if len(tables.table2) else "",
            table2_notes=tables.table2_notes,
            ablations=[
                {"title": ABLATION_TITLES.get(k, k), "html": table_html(df)}
                for k, df in tables.ablations.items()
            ],
            ablation_notes=tables.ablation_notes,
            per_class=table_html(tables.per_class) if tables.per_class is not None else "",
            per_class_notes=tables.per_class_notes,
            curves=curve_figs,
            curve_notes=curve_notes,
            figures=figs,
            figure_notes=figure_notes,
        )
    )
    with atomic_write(out_html) as tmp:
        Path(tmp).write_text(html, encoding="utf-8")
    log.info("report -> %s", out_html)
    if tables_dir is not None:
        _write_tables(tables, name, tables_dir, "" if masks else unscored_note(name))
    return Path(out_html)


def _embed(
    pngs: Mapping[str, PathLike], names: Mapping[str, str] | None = None
) -> tuple[list[dict[str, str]], list[str]]:
    """``{key: PNG}`` → embeddable figures (key, alt text, data URI) and notes for missing ones."""
    figs, notes = [], []
    for key, path in pngs.items():
        label = (names or {}).get(key, key)
        if _exists(path):
            figs.append({"key": key, "alt": label, "uri": png_data_uri(path)})
        else:
            notes.append(missing_note(label, path))
    return figs, notes


def write_tables(
    summary_csv: PathLike,
    out_dir: PathLike,
    *,
    dataset: str | None = None,
    ablations_csv: PathLike | None = None,
    eval_csvs: Sequence[PathLike] = (),
) -> dict[str, Path]:
    """Write the report's tables into ``out_dir`` as ``<stem>.csv`` and ``<stem>.html``
    (:data:`TABLE_FILES`; the ablations as HTML only). Missing optional inputs give a page
    with a note (and, for per-class IoU, an empty CSV).

    Returns:
        ``{file name: path}`` of every file written.
    """
    summary, voc, name = _summary(summary_csv, dataset)
    return _write_tables(_tables(summary, voc, ablations_csv, eval_csvs), name, out_dir)


def _write_tables(
    tables: _Tables, name: str, out_dir: PathLike, unscored: str = ""
) -> dict[str, Path]:
    template = environment().get_template("table.html.j2")
    out_dir = Path(out_dir)
    written: dict[str, Path] = {}

    def write(key: str, frames: list[tuple[str, pd.DataFrame]], notes: list[str]) -> None:
        stem, title = TABLE_FILES[key]
        page = template.render(
            title=f"{title}: {name}",
            tables=[{"title": t, "html": table_html(df)} for t, df in frames if len(df)],
            notes=notes,
        )
        files = {out_dir / f"{stem}.html": page}
        if key != "ablations":
            files[out_dir / f"{stem}.csv"] = frames[0][1].to_csv(index=False)
        for path, text in files.items():
            with atomic_write(path) as tmp:
                tmp.write_text(text, encoding="utf-8")
            written[path.name] = path

    empty = [unscored or "no evaluations for this table in the summary."]
    write("table1", [("", tables.table1)], [] if len(tables.table1) else empty)
    write("table2", [("", tables.table2)], tables.table2_notes if len(tables.table2) else empty)
    per_class = tables.per_class if tables.per_class is not None else pd.DataFrame()
    write("per_class", [("", per_class)], [unscored] if unscored else tables.per_class_notes)
    write(
        "ablations",
        [(ABLATION_TITLES.get(k, k), df) for k, df in tables.ablations.items()],
        [unscored] if unscored and not tables.ablations else tables.ablation_notes,
    )
    return written

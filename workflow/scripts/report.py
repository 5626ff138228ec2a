"""Assemble results/report.html and the tables' pages from the figure rules' outputs (rule report)."""

from pathlib import Path

from smaf.report import build_report
from smaf.runner import run_logged

p = snakemake.params

run_logged(
    snakemake.log[0],
    build_report,
    snakemake.input.summary,
    snakemake.output.page,
    dataset=p.dataset,
    ablations_csv=p.ablations,
    eval_csvs=list(snakemake.input.evals),
    curves=dict(zip(p.experiments, snakemake.input.curves, strict=True)),
    figures={Path(f).stem: f for f in snakemake.input.figures},
    tables_dir=Path(snakemake.output.tables[0]).parent,
    thr_sweeps=list(p.thr_sweeps),
    masks=p.masks,
)

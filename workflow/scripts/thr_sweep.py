"""Snakemake glue: seeds.thr swept on held-out train_aug images (rule sweep_thr)."""

# No __future__ import here: Snakemake prepends a preamble, so it could not be the first line.
from smaf.config import is_auto
from smaf.runner import run_logged
from smaf.stages.thr_sweep import thr_sweep

p = snakemake.params

run_logged(
    snakemake.log[0],
    thr_sweep,
    {m: snakemake.input[m] for m in p.models},
    snakemake.input.index,
    values=list(p.values),
    holdout=float(p.holdout),
    seed=int(p.seed),
    gt=p.gt,
    configured_thr=None if is_auto(p.thr) else float(p.thr),
    out_csv=snakemake.output.csv,
    out_json=snakemake.output.json,
    meta=dict(p.meta),
)

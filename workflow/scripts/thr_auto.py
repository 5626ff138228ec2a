"""Snakemake glue: the held-out choice of `thr: auto` for the seeds of one model or the teacher
(rule thr_auto)."""

# No __future__ import here: Snakemake prepends a preamble, so it could not be the first line.
from smaf.config import runtime_settings
from smaf.runner import run_logged
from smaf.stages.thr_sweep import auto_thr

p = snakemake.params

run_logged(
    snakemake.log[0],
    auto_thr,
    snakemake.input.index,
    target=snakemake.wildcards.target,
    values=list(p.values),
    holdout=float(p.holdout),
    seed=int(p.seed),
    gt=p.gt,
    out_json=snakemake.output[0],
    maps_dir=snakemake.input.get("maps"),
    model_path=snakemake.input.get("model"),
    **dict(p.settings),
    device=runtime_settings(snakemake.config)["device"],
    num_threads=snakemake.threads,
    meta=dict(p.meta),
)

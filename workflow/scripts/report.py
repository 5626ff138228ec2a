"""Write results/report.html: the paper's tables, per-class IoU, curves and figures (rule report)."""

from smaf.config import runtime_settings
from smaf.report import build_report
from smaf.runner import run_logged

run_logged(
    snakemake.log[0],
    build_report,
    snakemake.input.summary,
    snakemake.output[0],
    dataset=snakemake.params.dataset,
    ablations_csv=snakemake.params.ablations,
    eval_csvs=list(snakemake.input.evals),
    histories=list(snakemake.input.histories),
    index=snakemake.input.index,
    train_role=snakemake.params.train_role,
    eps_model=snakemake.input.eps_model,
    smaf_model=snakemake.input.smaf_model,
    label_dirs=dict(snakemake.params.label_dirs),
    pred_dirs=dict(snakemake.params.pred_dirs),
    maps_dirs=dict(snakemake.params.maps_dirs),
    scales=list(snakemake.params.scales),
    flip=snakemake.params.flip,
    thr=snakemake.params.thr,
    device=runtime_settings(snakemake.config)["device"],
    threads=snakemake.threads,
)

"""Snakemake glue: DeepLab MSC predictions (and logits for the CRF) of a split (rule deeplab_predict)."""

# No __future__ import here: Snakemake prepends a preamble, so it could not be the first line.
from smaf.config import runtime_settings
from smaf.runner import run_logged
from smaf.stages.deeplab import predict_split

run_logged(
    snakemake.log[0],
    predict_split,
    snakemake.input.model,
    snakemake.input.index,
    snakemake.wildcards.pred_split,
    snakemake.params.pred_dir,  # the shard waits in work_dir for the gather rule
    logits_dir=snakemake.params.logits_dir,
    flip=snakemake.params.flip,
    device=runtime_settings(snakemake.config)["device"],
    threads=snakemake.threads,
    work_dir=snakemake.params.work_dir,
    shard=snakemake.wildcards.get("shard"),  # None: one job (shards off)
)

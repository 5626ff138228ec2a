"""Snakemake glue: DeepLab's dense-CRF post-processing of a split's logits (rule deeplab_crf)."""

# No __future__ import here: Snakemake prepends a preamble, so it could not be the first line.
from smaf.crf import DenseCRF
from smaf.runner import run_logged
from smaf.stages.crf_stage import crf_split

# Everything below runs only in the main process. The CRF workers are spawned processes that
# re-run this file (the original, without Snakemake's preamble) as `__mp_main__`: touching
# `snakemake` at the top level would kill them at start-up, and multiprocessing.Pool would
# then respawn them forever.
if __name__ == "__main__":
    run_logged(
        snakemake.log[0],
        crf_split,
        snakemake.input.index,
        snakemake.wildcards.pred_split,
        snakemake.input.logits,
        snakemake.params.out_dir,  # the shard waits in work_dir for the gather rule
        crf=DenseCRF(**snakemake.params.crf),  # deeplab.test.crf (smaf.settings.DenseCRFConfig)
        processes=snakemake.threads,
        work_dir=snakemake.params.work_dir,
        shard=snakemake.wildcards.get("shard"),  # None: one job (shards off)
    )

"""Publish the shards of a SAM stage as its output folder (rules sam_masks_gather,
sam_refine_gather)."""

from smaf.runner import run_logged
from smaf.stages.sam_stage import gather_sam

run_logged(
    snakemake.log[0],
    gather_sam,
    list(snakemake.params.work_dirs),
    snakemake.output[0],
    snakemake.params.kind,
)

"""Snakemake glue: check that every shard of a COCO set's masks is complete
(smaf.data.coco_masks)."""

# No __future__ import here: Snakemake prepends a preamble, so it could not be the first line.
from smaf.data.coco_masks import check_masks
from smaf.runner import run_logged

run_logged(
    snakemake.log[0],
    check_masks,
    list(snakemake.input.shards),
    snakemake.params.out_dir,
    out=snakemake.output[0],
)

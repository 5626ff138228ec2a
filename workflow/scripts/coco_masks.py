"""Snakemake glue: convert one shard of a COCO instances file to semantic masks
(smaf.data.coco_masks)."""

# No __future__ import here: Snakemake prepends a preamble, so it could not be the first line.
from smaf.data.coco_masks import convert_masks
from smaf.runner import run_logged

run_logged(
    snakemake.log[0],
    convert_masks,
    snakemake.params.annotations,
    snakemake.params.out_dir,
    shard=(int(snakemake.wildcards.k), int(snakemake.wildcards.n)),
    crowd=snakemake.params.crowd,
    marker=snakemake.output.marker,  # written last: its presence means the shard is complete
)

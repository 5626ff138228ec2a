"""Snakemake glue: test predictions in the VOC server layout, packed as .tar.gz (rule deeplab_submission)."""

# No __future__ import here: Snakemake prepends a preamble, so it could not be the first line.
from smaf.runner import run_logged
from smaf.stages.submission import make_submission

run_logged(
    snakemake.log[0],
    make_submission,
    snakemake.input.pred,
    snakemake.input.index,
    snakemake.output.folder,
    snakemake.output.tar,
)

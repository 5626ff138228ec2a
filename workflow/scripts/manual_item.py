"""Snakemake glue: check that a hand-downloaded item is in place, then write a marker file.

Items behind a login or on Google Drive (EPS saliency maps, the VOC test set) cannot be
fetched by the workflow; this fails with instructions until the user has put them in place.
"""

# No __future__ import here: Snakemake prepends a preamble, so it could not be the first line.
from smaf.download import confirm_manual
from smaf.runner import run_logged

run_logged(
    snakemake.log[0],
    confirm_manual,
    snakemake.params.path,
    snakemake.params.name,
    snakemake.params.instructions,
    marker=snakemake.output[0],
)

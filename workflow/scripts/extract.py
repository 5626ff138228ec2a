"""Snakemake glue: safely extract one archive, then write a marker file (see smaf.archives)."""

# No __future__ import here: Snakemake prepends a preamble, so it could not be the first line.
from smaf.archives import safe_extract
from smaf.runner import run_logged

run_logged(
    snakemake.log[0],
    safe_extract,
    snakemake.input.archive,
    snakemake.params.dest,
    strip_components=int(snakemake.params.strip_components or 0),
    marker=snakemake.output.marker,  # written last: its presence means the folder is complete
)

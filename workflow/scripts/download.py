"""Snakemake glue: download one file, resumably and checksum-verified (see smaf.download)."""

# No __future__ import here: Snakemake prepends a preamble, so it could not be the first line.
from smaf.download import download
from smaf.runner import run_logged

run_logged(
    snakemake.log[0],
    download,
    snakemake.params.url,
    snakemake.output[0],
    md5=snakemake.params.md5,  # "" / None in config.yaml mean "no checksum"
    sha256=snakemake.params.sha256,
    retries=int(snakemake.params.retries),
    config_key=getattr(snakemake.params, "key", None),
)

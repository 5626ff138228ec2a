"""Snakemake glue: unpack SBD's benchmark.tgz and convert its class masks to SegmentationClassAug PNGs."""

# No __future__ import here: Snakemake prepends a preamble, so it could not be the first line.
from smaf.data.sbd import extract_and_convert_sbd
from smaf.runner import run_logged

run_logged(
    snakemake.log[0],
    extract_and_convert_sbd,
    snakemake.input.archive,
    workdir=snakemake.params.workdir,
    out_dir=snakemake.params.out_dir,
    marker=snakemake.output.marker,
)

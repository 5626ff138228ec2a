"""Gather every evaluation record into results/summary.csv (rule summary)."""

from smaf.runner import run_logged
from smaf.stages.evaluate import write_summary

snakemake = snakemake  # noqa: F821  (injected by Snakemake)

run_logged(snakemake.log[0], write_summary, list(snakemake.input), snakemake.output[0])

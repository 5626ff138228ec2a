"""Gather every evaluation record into results/summary.csv (rule summary)."""

from smaf.runner import run_logged
from smaf.stages.evaluate import write_summary

run_logged(snakemake.log[0], write_summary, list(snakemake.input), snakemake.output[0])

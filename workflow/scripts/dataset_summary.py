"""Gather one dataset's evaluation records into results/<dataset>/summary.csv (rule
dataset_summary), each row with its run's config digest."""

from smaf.runner import run_logged
from smaf.stages.evaluate import write_summary

run_logged(
    snakemake.log[0],
    write_summary,
    list(snakemake.input.records),
    snakemake.output.csv,
    configs=dict(snakemake.params.configs),
    configs_json=snakemake.output.configs,
)

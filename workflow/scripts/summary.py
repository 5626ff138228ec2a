"""Every dataset's summary into results/summary.csv (rule summary): the configured dataset's
file and those of the other datasets run in this folder."""

from smaf.runner import run_logged
from smaf.stages.evaluate import merge_summaries

run_logged(
    snakemake.log[0],
    merge_summaries,
    [snakemake.input.summary, *snakemake.params.others],
    snakemake.output[0],
)

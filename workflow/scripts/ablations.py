"""Gather the ablation rows' evaluation records into results/<dataset>/ablations.csv (rule ablations)."""

from smaf.runner import run_logged
from smaf.stages.evaluate import write_ablations

run_logged(snakemake.log[0], write_ablations, list(snakemake.params.rows), snakemake.output[0])

"""Score one folder of seed / CRF label maps against one kind of ground truth (rule evaluate)."""

from smaf.runner import run_logged
from smaf.stages.evaluate import evaluate_split

run_logged(
    snakemake.log[0],
    evaluate_split,
    snakemake.input.pred,
    snakemake.input.index,
    snakemake.wildcards.split,
    snakemake.params.gt,
    out_csv=snakemake.output.csv,
    out_json=snakemake.output.json,
    meta=dict(snakemake.params.meta),
)

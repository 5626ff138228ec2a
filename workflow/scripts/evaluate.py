"""One evaluation record: the sum of its shards' confusion matrices, scored (rules evaluate,
deeplab_evaluate)."""

from smaf.runner import run_logged
from smaf.stages.evaluate import evaluate_gather

run_logged(
    snakemake.log[0],
    evaluate_gather,
    list(snakemake.input.shards),
    snakemake.input.index,
    snakemake.wildcards.split,
    snakemake.params.gt,
    snakemake.params.pred,
    out_csv=snakemake.output.csv,
    out_json=snakemake.output.json,
    meta=dict(snakemake.params.meta),
)

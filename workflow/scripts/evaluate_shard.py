"""The confusion matrix of one shard of a split's predictions (rule evaluate_shard)."""

from smaf.runner import run_logged
from smaf.stages.evaluate import evaluate_split

run_logged(
    snakemake.log[0],
    evaluate_split,
    snakemake.input.pred,
    snakemake.input.index,
    snakemake.params.role,
    snakemake.params.gt,
    shard=snakemake.wildcards.shard,
    out_conf=snakemake.output[0],
)

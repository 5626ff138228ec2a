"""Publish the shards of DeepLab's predictions as the prediction and logits folders (rule
deeplab_predict_gather)."""

from smaf.runner import run_logged
from smaf.stages.gathers import gather_predictions

run_logged(
    snakemake.log[0],
    gather_predictions,
    list(snakemake.params.work_dirs),
    snakemake.output.pred,
    snakemake.output.logits,
)

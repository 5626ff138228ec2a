"""Publish the shards of a per-image stage as its output folder(s) (rules *_gather)."""

from smaf.runner import run_logged
from smaf.stages.crf_stage import gather_crf, gather_deeplab_crf
from smaf.stages.deeplab import gather_predictions
from smaf.stages.seeds import gather_seeds

work_dirs = list(snakemake.params.work_dirs)
kind = snakemake.params.kind
if kind == "predict":
    run_logged(
        snakemake.log[0],
        gather_predictions,
        work_dirs,
        snakemake.output.pred,
        snakemake.output.logits,
    )
else:
    gather = {"seeds": gather_seeds, "crf": gather_crf, "deeplab_crf": gather_deeplab_crf}[kind]
    run_logged(snakemake.log[0], gather, work_dirs, snakemake.output[0])

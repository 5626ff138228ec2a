"""Publish the shards of a CRF stage as its output folder (rules crf_gather: the seeds' CRF,
deeplab_crf_gather: DeepLab's CRF post-processing)."""

from smaf.runner import run_logged
from smaf.stages.crf_stage import gather_crf, gather_deeplab_crf

gather = {"crf": gather_crf, "deeplab_crf": gather_deeplab_crf}[snakemake.params.kind]
run_logged(snakemake.log[0], gather, list(snakemake.params.work_dirs), snakemake.output[0])

"""Saliency maps of a dataset's training images with U²-Net (rule saliency)."""

from smaf.runner import run_logged
from smaf.saliency import compute_saliency

run_logged(
    snakemake.log[0],
    compute_saliency,
    snakemake.input.index,
    snakemake.input.model,
    snakemake.output[0],
    size=snakemake.params.size,
    threads=snakemake.threads,
)

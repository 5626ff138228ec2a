"""Score one folder of seed / CRF label maps against one kind of ground truth (rule evaluate)."""

from smaf.runner import run_logged
from smaf.stages.evaluate import evaluate_from_info

snakemake = snakemake  # noqa: F821  (injected by Snakemake)

run_logged(
    snakemake.log[0],
    evaluate_from_info,
    snakemake.input.pred,
    snakemake.input.info,
    snakemake.input.split,
    snakemake.params.gt,
    snakemake.output.csv,
    snakemake.output.json,
    aug_mask_dir=snakemake.params.aug_mask_dir,
    meta=dict(snakemake.params.meta),
)

"""SEPL refinement of one seeds folder with the dataset's SAM masks (rule sam_refine)."""

from smaf.runner import run_logged
from smaf.sam_settings import SamRefineSettings
from smaf.stages.sam_stage import refine_seeds_with_sam

run_logged(
    snakemake.log[0],
    refine_seeds_with_sam,
    snakemake.input.index,
    list(snakemake.params.roles),
    snakemake.input.seeds,
    snakemake.input.masks,
    snakemake.params.out_dir,
    settings=SamRefineSettings.from_dict(snakemake.params.settings),
    work_dir=snakemake.params.work_dir,
    shard=snakemake.wildcards.get("shard"),  # None: one job (shards off)
)

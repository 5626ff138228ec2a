"""SAM's automatic masks of the dataset's images (rule sam_masks)."""

from smaf.config import runtime_settings
from smaf.runner import run_logged
from smaf.sam_settings import SamStageSettings
from smaf.stages.sam_stage import make_sam_masks

run_logged(
    snakemake.log[0],
    make_sam_masks,
    snakemake.input.index,
    list(snakemake.params.roles),
    snakemake.params.checkpoint,  # the file (the input may be a manual item's marker)
    snakemake.params.out_dir,
    SamStageSettings.from_dict(snakemake.params.settings),
    device=runtime_settings(snakemake.config)["device"],
    work_dir=snakemake.params.work_dir,
    shard=snakemake.wildcards.get("shard"),  # None: one job (shards off)
)

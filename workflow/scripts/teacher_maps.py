"""Snakemake glue: the offline teacher's fused multi-scale maps (rule teacher_maps): of the
pretrained classifier, or (pretrain.method clip) CLIP's maps at the teacher's settings."""

# No __future__ import here: Snakemake prepends a preamble, so it could not be the first line.
from smaf.config import runtime_settings
from smaf.runner import run_logged
from smaf.settings import SeedsSettings
from smaf.stages.clip_maps import clip_teacher_maps
from smaf.stages.teacher import teacher_maps

where = {
    "work_dir": snakemake.params.work_dir,
    "out_dir": snakemake.params.out_dir,  # the shard waits in work_dir for the gather rule
    "shard": snakemake.wildcards.get("shard"),  # None: one job (shards off)
    "device": runtime_settings(snakemake.config)["device"],
    "threads": snakemake.threads,
}
if snakemake.params.clip is not None:
    run_logged(
        snakemake.log[0],
        clip_teacher_maps,
        snakemake.params.weights,
        snakemake.input.index,
        settings=dict(snakemake.params.clip),
        **where,
    )
else:
    run_logged(
        snakemake.log[0],
        teacher_maps,
        index=snakemake.input.index,
        model_path=snakemake.input.model,
        settings=SeedsSettings.from_dict(snakemake.params.settings),
        **where,
    )

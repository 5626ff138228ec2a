"""Snakemake glue: EPS (or CAM) pretraining (rule pretrain), or its model taken from
pretrain.init_checkpoint (converted / checked, not trained)."""

# No __future__ import here: Snakemake prepends a preamble, so it could not be the first line.
from smaf.config import runtime_settings
from smaf.distributed import run_training
from smaf.runner import run_logged
from smaf.settings import PretrainSettings
from smaf.stages.pretrain import pretrain
from smaf.stages.published import adopt_classifier

# The rule's settings plus how this job runs (train: device, cadences, gpus...).
settings = PretrainSettings.from_dict(
    {**snakemake.params.settings, **runtime_settings(snakemake.config)}
)
if settings.init_checkpoint:
    run_logged(
        snakemake.log[0],
        adopt_classifier,
        settings.init_checkpoint,
        snakemake.input.index,
        snakemake.params.model,
        snakemake.output.model,
        snakemake.output.history,
    )
else:
    # One process, or train.gpus DDP processes under torchrun (the job's gpu resource).
    run_training(
        snakemake.log[0],
        pretrain,
        index=snakemake.input.index,
        model=snakemake.params.model,
        settings=settings,
        out_model=snakemake.output.model,
        out_history=snakemake.output.history,
        state_dir=snakemake.params.state_dir,
        processes=snakemake.resources.gpu,
        requested=snakemake.config["train"]["gpus"],
        threads=snakemake.threads,
    )

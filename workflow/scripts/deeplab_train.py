"""Snakemake glue: DeepLab-v2 training on the pseudo labels (rule deeplab_train), or the model
taken from deeplab.init_checkpoint (evaluation only: converted / checked, not trained)."""

# No __future__ import here: Snakemake prepends a preamble, so it could not be the first line.
from smaf.config import runtime_settings
from smaf.distributed import run_training
from smaf.runner import run_logged
from smaf.settings import DeepLabSettings
from smaf.stages.deeplab import train_deeplab
from smaf.stages.published import adopt_deeplab

# The rule's settings plus how this job runs (train: device, cadences, gpus...).
settings = DeepLabSettings.from_dict(
    {**snakemake.params.settings, **runtime_settings(snakemake.config)}
)
if settings.init_checkpoint:
    run_logged(
        snakemake.log[0],
        adopt_deeplab,
        settings.init_checkpoint,
        snakemake.input.index,
        snakemake.output.model,
        snakemake.output.history,
    )
else:
    # One process, or train.gpus DDP processes under torchrun (the job's gpu resource).
    run_training(
        snakemake.log[0],
        train_deeplab,
        index=snakemake.input.index,
        label_dir=snakemake.input.labels,
        settings=settings,
        out_model=snakemake.output.model,
        out_history=snakemake.output.history,
        state_dir=snakemake.params.state_dir,
        processes=snakemake.resources.gpu,
        requested=snakemake.config["train"]["gpus"],
        threads=snakemake.threads,
        init_backbone=snakemake.input.get("init"),
    )

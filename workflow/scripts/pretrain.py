"""Snakemake glue: EPS (or CAM) pretraining (rule pretrain)."""

# No __future__ import here: Snakemake prepends a preamble, so it could not be the first line.
from smaf.config import runtime_settings
from smaf.distributed import run_training
from smaf.stages.pretrain import pretrain

# One process, or train.gpus DDP processes under torchrun (the job's gpu resource).
run_training(
    snakemake.log[0],
    pretrain,
    index=snakemake.input.index,
    model=snakemake.params.model,
    params={**snakemake.params.pretrain, **runtime_settings(snakemake.config)},
    out_model=snakemake.output.model,
    out_history=snakemake.output.history,
    state_dir=snakemake.params.state_dir,
    processes=snakemake.resources.gpu,
    requested=snakemake.config["train"]["gpus"],
    threads=snakemake.threads,
)

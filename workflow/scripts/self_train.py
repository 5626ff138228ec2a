"""Snakemake glue: SMAF self-training (rule self_train)."""

# No __future__ import here: Snakemake prepends a preamble, so it could not be the first line.
from smaf.config import chosen_thr, runtime_settings
from smaf.distributed import run_training
from smaf.settings import SelfTrainSettings
from smaf.stages.self_train import self_train

# The rule's settings plus how this job runs (train: device, cadences, gpus...).
values = {**snakemake.params.settings, **runtime_settings(snakemake.config)}
# `auto`: the choice of the held-out sweep on the teacher's maps (rule thr_auto).
values["thr"] = chosen_thr(values["thr"], snakemake.input.get("thr_auto"))

# One process, or train.gpus DDP processes under torchrun (the job's gpu resource).
run_training(
    snakemake.log[0],
    self_train,
    index=snakemake.input.index,
    init_model=snakemake.input.get("model"),  # None: the CLIP base (a fresh student)
    model=snakemake.params.model,
    teacher_dir=snakemake.input.get("teacher"),
    settings=SelfTrainSettings.from_dict(values),
    out_model=snakemake.output.model,
    out_history=snakemake.output.history,
    state_dir=snakemake.params.state_dir,
    processes=snakemake.resources.gpu,
    requested=snakemake.config["train"]["gpus"],
    threads=snakemake.threads,
)

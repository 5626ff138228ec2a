"""Snakemake glue: segment the images of `predict.images` with a trained model (rule predict)."""

# No __future__ import here: Snakemake prepends a preamble, so it could not be the first line.
from smaf.config import chosen_thr, runtime_settings
from smaf.predict.folder import predict_folder
from smaf.runner import run_logged

settings = dict(snakemake.params.settings)
if "thr" in settings:  # CAMs; `auto`: the held-out choice (rule thr_auto)
    settings["thr"] = chosen_thr(settings["thr"], snakemake.input.get("thr_auto"))

run_logged(
    snakemake.log[0],
    predict_folder,
    snakemake.input.model,
    snakemake.input.images,
    snakemake.output[0],
    **settings,
    device=runtime_settings(snakemake.config)["device"],
    threads=snakemake.threads,
    work_dir=snakemake.params.work_dir,
)

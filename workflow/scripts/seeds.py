"""CAM seeds and fused maps of one trained classifier on one split (rule seeds)."""

from smaf.config import chosen_thr, runtime_settings
from smaf.runner import run_logged
from smaf.settings import SeedsSettings
from smaf.stages.seeds import make_seeds

p = snakemake.params
settings = dict(p.settings)
# `auto`: the held-out sweep's choice (rule thr_auto).
settings["thr"] = chosen_thr(settings["thr"], snakemake.input.get("thr_auto"))

run_logged(
    snakemake.log[0],
    make_seeds,
    snakemake.input.model,
    snakemake.input.index,
    list(p.roles),
    p.out_dir,  # the shard waits in work_dir; the gather rule publishes every shard there
    SeedsSettings.from_dict(settings),
    device=runtime_settings(snakemake.config)["device"],
    work_dir=p.work_dir,
    num_threads=snakemake.threads,
    shard=snakemake.wildcards.get("shard"),  # None: one job (shards off)
)

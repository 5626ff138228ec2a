"""The CLIP base's seeds and maps on the splits its runs need (rule clip_maps)."""

# No __future__ import here: Snakemake prepends a preamble, so it could not be the first line.
from smaf.config import runtime_settings
from smaf.runner import run_logged
from smaf.stages.clip_maps import clip_maps

p = snakemake.params

run_logged(
    snakemake.log[0],
    clip_maps,
    p.weights,
    snakemake.input.index,
    list(p.roles),
    p.out_dir,  # the shard waits in work_dir; the gather rule publishes every shard there
    dict(p.settings),
    p.thr,
    device=runtime_settings(snakemake.config)["device"],
    work_dir=p.work_dir,
    num_threads=snakemake.threads,
    shard=snakemake.wildcards.get("shard"),  # None: one job (shards off)
)

"""Dense-CRF refinement of one seeds folder (rule crf)."""

from smaf.runner import run_logged
from smaf.settings import CRFSettings
from smaf.stages.crf_stage import refine_seeds

# Everything below runs only in the main process. The CRF workers are spawned processes that
# re-run this file (the original, without Snakemake's preamble) as `__mp_main__`: touching
# `snakemake` at the top level would kill them at start-up, and multiprocessing.Pool would
# then respawn them forever.
if __name__ == "__main__":
    run_logged(
        snakemake.log[0],
        refine_seeds,
        snakemake.input.index,
        list(snakemake.params.roles),
        snakemake.input.seeds,
        snakemake.params.out_dir,  # the shard waits in work_dir for the gather rule
        settings=CRFSettings.from_dict(snakemake.params.settings),
        processes=snakemake.threads,
        work_dir=snakemake.params.work_dir,
        shard=snakemake.wildcards.get("shard"),  # None: one job (shards off)
    )

"""Publish the shards of the seeds or teacher-map stage as its output folder (rules
seeds_gather, teacher_maps_gather).

One script per stage module, so that a rule's code hash covers only the code its gather runs:
editing smaf/crf.py must not rerun the seeds' gather (whose shards are temporary, so the seeds).
"""

from smaf.runner import run_logged
from smaf.stages.gathers import gather_seeds

run_logged(snakemake.log[0], gather_seeds, list(snakemake.params.work_dirs), snakemake.output[0])

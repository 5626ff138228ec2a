"""Generate the synthetic VOC-format dataset (rule synthetic_dataset)."""

from smaf.data.synthetic_generator import write_dataset
from smaf.runner import run_logged

run_logged(
    snakemake.log[0],
    write_dataset,
    dict(snakemake.params.generator),
    snakemake.output[0],
)

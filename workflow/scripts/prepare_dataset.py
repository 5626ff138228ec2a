"""Build, check and write a dataset's index with its source adapter (rules prepare_dataset, test_index)."""

from smaf.data.prepare import prepare_dataset
from smaf.runner import run_logged

run_logged(
    snakemake.log[0],
    prepare_dataset,
    source=snakemake.params.source,
    settings=dict(snakemake.params.settings),
    out_index=snakemake.output.index,
    out_info=snakemake.output.info,
    name=snakemake.wildcards.dataset,
    roles=list(snakemake.params.roles),
    threads=snakemake.threads,
    needs_saliency=snakemake.params.get("needs_saliency", False),
)

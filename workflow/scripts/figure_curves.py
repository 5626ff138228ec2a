"""Training curves of one experiment: pretraining, self-training, DeepLab (rule figure_curves)."""

from smaf.report.curves import make_curves
from smaf.runner import run_logged

snakemake = snakemake  # noqa: F821  (injected by Snakemake)

run_logged(
    snakemake.log[0],
    make_curves,
    list(snakemake.input.histories),
    snakemake.output.png,
    snakemake.output.svg,
    title=f"Training curves: {snakemake.wildcards.experiment}",
)

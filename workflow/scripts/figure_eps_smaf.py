"""Fig. 3: fused attention of the base (EPS, CAM or CLIP) and the SMAF model from their seed maps (rule figure_eps_smaf)."""

from pathlib import Path

from smaf.report.saved_figures import make_eps_smaf_figure
from smaf.runner import run_logged

snakemake = snakemake  # noqa: F821  (injected by Snakemake)

run_logged(
    snakemake.log[0],
    make_eps_smaf_figure,
    index=snakemake.input.index,
    eps_maps=Path(snakemake.input.eps, "maps"),
    smaf_maps=Path(snakemake.input.smaf, "maps"),
    out=snakemake.output[0],
    role=snakemake.params.role,
    base=snakemake.params.base,
)

"""Fig. 1 and Fig. 4: the teacher's attention at each scale, fused and reactivated (rule figure_scales)."""

from smaf.config import chosen_thr, runtime_settings
from smaf.report.figures import make_scale_figures
from smaf.runner import run_logged

snakemake = snakemake  # noqa: F821  (injected by Snakemake)

run_logged(
    snakemake.log[0],
    make_scale_figures,
    index=snakemake.input.index,
    eps_model=snakemake.input.eps_model,
    smaf_model=snakemake.input.smaf_model,
    out_scales=snakemake.output.fig1,
    out_reactivation=snakemake.output.fig4,
    out_data=snakemake.output.maps,
    cam=dict(snakemake.params.cam),
    thr=chosen_thr(snakemake.params.thr, snakemake.input.get("thr_auto")),
    role=snakemake.params.role,
    device=runtime_settings(snakemake.config)["device"],
    threads=snakemake.threads,
)

"""Fig. 5a/5b: pseudo labels on train and DeepLab's predictions on val (rule figure_labels)."""

from smaf.report.saved_figures import make_label_figures
from smaf.runner import run_logged

snakemake = snakemake  # noqa: F821  (injected by Snakemake)

run_logged(
    snakemake.log[0],
    make_label_figures,
    index=snakemake.input.index,
    label_dirs=dict(snakemake.params.label_dirs),
    pred_dirs=dict(snakemake.params.pred_dirs),
    out_train=snakemake.output.train,
    out_val=snakemake.output.val,
    train_role=snakemake.params.train_role,
)

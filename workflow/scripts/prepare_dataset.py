"""Index and check a dataset; write its split lists, image labels and summary (rule prepare_dataset)."""

from smaf.data.prepare import prepare_dataset
from smaf.runner import run_logged

snakemake = snakemake  # noqa: F821  (injected by Snakemake)

run_logged(
    snakemake.log[0],
    prepare_dataset,
    root=snakemake.params.root,
    splits=snakemake.params.splits,
    num_classes=snakemake.params.num_classes,
    label_source=snakemake.params.label_source,
    aug_mask_dir=snakemake.params.aug_mask_dir,
    saliency_dir=snakemake.params.saliency_dir,
    out_splits=dict(zip(("train_aug", "train", "val"), snakemake.output.splits, strict=True)),
    out_labels=snakemake.output.labels,
    out_info=snakemake.output.info,
    name=snakemake.wildcards.dataset,
)

"""SAM through the workflow: one sam_masks pass per image for every base and experiment (a
dry run counts the jobs). The whole workflow with refine [crf, sam] runs in
tests/test_workflow_clip.py's run (one whole-workflow run for both)."""

from __future__ import annotations

import copy

from workflow_utils import TINY_CONFIG, job_counts, planning_index, snakemake


def test_sam_masks_run_once_per_image_for_every_base_and_experiment(tmp_path) -> None:
    work = tmp_path / "work"
    planning_index(work, [f"im{i:03d}" for i in range(30)], ["a", "b"], 20, (64, 48))
    (work / "sam.pth").write_bytes(b"planning only")
    config = copy.deepcopy(TINY_CONFIG)
    config["dataset"] = "big"
    config["datasets"]["big"] = {
        "source": "folder",
        "images": "images",
        "labels": "labels.csv",
        "masks": "masks",
    }
    config["shards"] = {"images_per_shard": 10}
    config["refine"] = ["crf", "sam", "sam_crf"]
    config["sam"] = {"checkpoint": "sam.pth"}
    config["experiments"] = {"default": {}, "other": {"seeds": {"thr": 0.3}}}
    config["deeplab"] = {**config["deeplab"], "pseudo_labels": "sam"}
    jobs = job_counts(snakemake(work, "-n", "--cores", "2", config=config).stdout)
    # train_aug (20 images: evaluation's train, DeepLab's train_aug) → 2 shards; val is not
    # refined. One pass for both classifiers and both experiments.
    assert jobs["sam_masks"] == 2 and jobs["sam_masks_gather"] == 1
    # EPS seeds differ (thr) between the experiments, SMAF's are per run: 4 folders x 2 shards.
    assert jobs["sam_refine"] == 4 * 2 and jobs["sam_crf"] == 4 * 2
    assert jobs["crf"] == 4 * 2

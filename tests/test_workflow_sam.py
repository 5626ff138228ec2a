"""SAM through the workflow: one sam_masks pass per image for every base and experiment (a
dry run counts the jobs). The whole workflow with refine [crf, sam] runs in
tests/test_workflow_clip.py's run (one whole-workflow run for both)."""

from __future__ import annotations

import copy
import re

import numpy as np
from workflow_utils import TINY_CONFIG, snakemake

from smaf.data.index import DatasetIndex, ImageRecord


def _jobs(dry_run: str) -> dict[str, int]:
    """The job counts of a dry run's table (rule → count)."""
    return {k: int(v) for k, v in re.findall(r"^(\w+)\s+(\d+)$", dry_run, flags=re.MULTILINE)}


def _index(work, n_train: int = 20, n_val: int = 10) -> None:
    """A dataset index of a folder dataset with no image files (planning only)."""
    data = work / "results" / "big" / "data"
    data.mkdir(parents=True)
    labels = np.zeros(2, np.float32)
    labels[0] = 1
    records = [
        ImageRecord(
            f"im{i:03d}",
            f"images/{i}.jpg",
            mask=f"masks/{i}.png",
            roles={"train_aug", "train"} if i < n_train else {"val"},
            labels=labels,
            width=64,
            height=48,
        )
        for i in range(n_train + n_val)
    ]
    DatasetIndex.build(records, ["a", "b"], {"name": "big"}).write(data / "index.csv")
    DatasetIndex.build([], ["a", "b"], {"name": "big"}).write(data / "test_index.csv")


def test_sam_masks_run_once_per_image_for_every_base_and_experiment(tmp_path) -> None:
    work = tmp_path / "work"
    _index(work)
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
    jobs = _jobs(snakemake(work, "-n", "--cores", "2", config=config).stdout)
    # train_aug (20 images: evaluation's train, DeepLab's train_aug) → 2 shards; val is not
    # refined. One pass for both classifiers and both experiments.
    assert jobs["sam_masks"] == 2 and jobs["sam_masks_gather"] == 1
    # EPS seeds differ (thr) between the experiments, SMAF's are per run: 4 folders x 2 shards.
    assert jobs["sam_refine"] == 4 * 2 and jobs["sam_crf"] == 4 * 2
    assert jobs["crf"] == 4 * 2

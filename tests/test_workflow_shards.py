"""Sharded stages through the workflow: N shards give the 1-shard results, and planning scales."""

from __future__ import annotations

import copy
import re
import time

import numpy as np
import pandas as pd
import pytest
from conftest import SHARDED
from workflow_utils import TINY_CONFIG, job_counts, planning_index, snakemake

from smaf.io import load_mask

pytestmark = pytest.mark.slow


def test_n_shards_give_the_one_shard_results(tiny_run, sharded_run, tmp_path) -> None:
    """The session's sharded run (through SLURM where a test cluster runs, conftest.py) gives
    the one-shard run's labels, predictions and scores."""
    one, many = tiny_run, sharded_run.workdir  # one shard: the session's tiny workflow
    sharded = {**copy.deepcopy(TINY_CONFIG), **SHARDED}
    plan = job_counts(snakemake(tmp_path, "-n", "--cores", "2", config=sharded).stdout)
    # Before the index exists, the shard counts wait for it (the dataset stage is a checkpoint).
    assert "seeds" not in plan and "prepare_dataset" in plan
    log = (many / ".snakemake" / "log").glob("*.log")
    text = "".join(p.read_text() for p in log)
    assert len(set(re.findall(r"seeds/smaf\.shards/(\d+of\d+)\.done", text))) == 2  # 12 / 6

    a, b = (d / "results/synthetic/default" for d in (one, many))
    for folder in ("seeds/eps", "seeds/smaf", "crf/eps", "crf/smaf", "deeplab/pred_val_crf"):
        names = sorted(p.name for p in (a / folder).glob("*.png"))
        assert names and names == sorted(p.name for p in (b / folder).glob("*.png")), folder
        for name in names:
            np.testing.assert_array_equal(
                load_mask(a / folder / name), load_mask(b / folder / name)
            )
    scores = [pd.read_csv(d / "results/summary.csv") for d in (one, many)]
    pd.testing.assert_series_equal(scores[0]["miou"], scores[1]["miou"])
    # Nothing left to do: the shards' markers are temporary, the gathered folders complete.
    done = snakemake(many, "-n", "results/summary.csv", config=sharded).stdout
    assert "Nothing to be done" in done


def test_planning_a_coco_size_index_takes_seconds(tmp_path) -> None:
    """`snakemake -n` on 123,287 images (COCO 2014: 82,783 train + 40,504 val), no image files."""
    work = tmp_path / "work"
    n_train = 82783
    ids = [f"COCO_{'train' if i < n_train else 'val'}2014_{i:012d}" for i in range(123287)]
    planning_index(work, ids, [f"class_{k}" for k in range(1, 81)], n_train, (640, 480))
    config = copy.deepcopy(TINY_CONFIG)
    config["dataset"] = "big"
    config["datasets"]["big"] = {"source": "folder", "images": "images", "labels": "labels.csv"}
    config["shards"] = {"images_per_shard": 2000}
    t0 = time.perf_counter()
    proc = snakemake(work, "-n", "--cores", "2", config=config)
    seconds = time.perf_counter() - t0
    jobs = job_counts(proc.stdout)
    assert jobs["seeds"] == 2 * 42  # eps and smaf over train (82,783 / 2,000 → 42 shards)
    # val: 40,504 images → 21 shards, and the (empty) test images of a folder dataset: 1.
    assert jobs["deeplab_predict"] == 22 and jobs["deeplab_crf"] == 22
    assert "prepare_dataset" not in jobs  # the index is there
    print(f"planned {sum(jobs.values())} jobs in {seconds:.1f} s")
    assert seconds < 120  # generous on a loaded 2-core machine; BENCHMARKS.md has the measure

"""A user's own dataset folder is tracked: what the index read changes → the dataset stage reruns."""

from __future__ import annotations

import os

import pytest
from workflow_utils import own_voc_dataset, planned_rules, snakemake

from smaf.data.sources import fingerprint
from smaf.data.synthetic_generator import SyntheticConfig, write_dataset


@pytest.fixture()
def own_folder(tmp_path):
    """A VOC-layout folder the user provides (download: false), and a config pointing at it."""
    root = tmp_path / "data" / "VOC2012"
    write_dataset(
        SyntheticConfig(n_train_aug=6, n_train=3, n_val=2, n_test=1, min_size=40, max_size=48), root
    )
    config = {"dataset": "mine", "datasets": {"mine": own_voc_dataset(root)}}
    return root, config, tmp_path / "work"


def test_fingerprint_sees_names_sizes_and_mtimes_not_reads(tmp_path) -> None:
    """Each of name, size and mtime changes the fingerprint on its own; the content is not
    read (an edit that keeps both size and mtime is not seen)."""
    a = tmp_path / "a.txt"
    a.write_text("1")
    os.utime(a, ns=(1, 1))
    paths = [tmp_path, tmp_path / "absent"]
    before = fingerprint(paths)
    assert fingerprint(paths) == before
    a.write_text("2")  # same size ...
    os.utime(a, ns=(1, 1))  # ... and the same mtime: not read, so not seen
    assert fingerprint(paths) == before
    os.utime(a, ns=(2, 2))  # the mtime alone
    touched = fingerprint(paths)
    assert touched != before
    a.write_text("22")  # the size alone
    os.utime(a, ns=(2, 2))
    resized = fingerprint(paths)
    assert resized != touched
    (tmp_path / "b.txt").write_text("2")  # a new name
    assert fingerprint(paths) != resized


@pytest.mark.slow
def test_own_dataset_folder_changes_rerun_the_dataset_stage_and_only_then(own_folder) -> None:
    root, config, work = own_folder
    target = "results/mine/data/index.csv"
    snakemake(work, target, "--cores", "1", config=config)
    assert "prepare_dataset" not in planned_rules(snakemake(work, "-n", target, config=config))

    # An edited split list (one val image fewer) reruns the dataset stage.
    val = root / "ImageSets" / "Segmentation" / "val.txt"
    val.write_text(val.read_text().splitlines()[0] + "\n")
    assert "prepare_dataset" in planned_rules(snakemake(work, "-n", target, config=config))
    snakemake(work, target, "--cores", "1", config=config)
    assert "prepare_dataset" not in planned_rules(snakemake(work, "-n", target, config=config))

    # A replaced image (same name, new file) reruns it too.
    jpg = next((root / "JPEGImages").glob("*.jpg"))
    jpg.write_bytes(jpg.read_bytes())
    os.utime(jpg, ns=(10**18, 10**18))
    assert "prepare_dataset" in planned_rules(snakemake(work, "-n", target, config=config))

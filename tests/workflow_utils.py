"""Run the Snakemake workflow of this checkout in a scratch directory (used by the tests)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from smaf.data.index import DatasetIndex, ImageRecord

REPO_ROOT = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO_ROOT / "Snakefile"

_TINY_AUG = {"crop_size": 48, "resize_long": [48, 64]}
_TINY_TRAIN = {"iterations": 4, "batch_size": 2, "augment": _TINY_AUG}

#: The smallest synthetic dataset and training budget on which every stage still runs.
TINY_CONFIG = {
    "datasets": {
        "synthetic": {
            "synthetic": {
                "n_train_aug": 12,
                "n_train": 4,
                "n_val": 4,
                "n_test": 2,
                "min_size": 48,
                "max_size": 64,
            },
        }
    },
    "train": {"checkpoint_every": 2, "log_every": 1},
    "pretrain": _TINY_TRAIN,
    "self_train": {**_TINY_TRAIN, "teacher_cam": {"scales": [0.5, 1.0]}},
    "seeds": {"scales": [0.5, 1.0]},
    "deeplab": {"iterations": 3, "batch_size": 4, "augment": {"crop_size": 48}},
}


def own_voc_dataset(root: Path, roles: tuple[str, ...] = ("train_aug", "train", "val")) -> dict:
    """The `datasets:` entry of a user's own VOC-layout folder at ``root`` (as the synthetic
    generator writes it: 6 classes, cls_labels.csv, SALImages; download: false), with the
    split lists of ``roles``."""
    return {
        "source": "voc",
        "num_classes": 6,
        "root": str(root),
        "download": False,
        "label_source": "csv",
        "saliency_dir": str(root / "SALImages"),
        "splits": {role: role for role in roles},
    }


def snakemake(
    workdir: Path,
    *args: str,
    config: dict | None = None,
    check: bool = True,
    timeout: int = 1200,
    snakefile: Path = SNAKEFILE,
):
    """Run ``snakemake`` on this repo's Snakefile in ``workdir``; return the CompletedProcess.

    ``config`` (if given) is written to ``workdir/test-config.yaml`` and passed with
    ``--configfile`` so it overrides the repo's config.yaml key by key. ``snakefile`` runs
    another checkout's workflow (see :func:`copy_checkout`).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(snakefile),
        "--directory",
        str(workdir),
    ]
    cmd += list(args)
    if config is not None:
        # Last, because --configfile takes several values: a target after it would be read as
        # another config file.
        cfg_path = workdir / "test-config.yaml"
        cfg_path.write_text(yaml.safe_dump(config))
        cmd += ["--configfile", str(cfg_path)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
        )
    return proc


def copy_checkout(dest: Path) -> Path:
    """Copy the workflow and library sources of this repo to ``dest``; return its Snakefile.

    Lets a test edit a module (the code rerun trigger hashes ``<checkout>/src/smaf``) without
    touching the repo.
    """
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in ("workflow", "src", "profiles", "envs", "config"):
        if (REPO_ROOT / name).exists():
            shutil.copytree(REPO_ROOT / name, dest / name, ignore=ignore)
    for name in ("Snakefile", "config.yaml"):
        shutil.copy2(REPO_ROOT / name, dest / name)
    return dest / "Snakefile"


def planned_rules(proc: subprocess.CompletedProcess) -> set[str]:
    """Names of the rules a ``snakemake -n`` run planned (from its ``rule <name>:`` lines, and
    ``checkpoint <name>:`` for checkpoints such as prepare_dataset)."""
    out = proc.stdout + proc.stderr
    return set(re.findall(r"^(?:local)?(?:rule|checkpoint) (\w+):", out, flags=re.MULTILINE))


def job_counts(dry_run: str) -> dict[str, int]:
    """The job counts of a dry run's table (rule → count)."""
    return {k: int(v) for k, v in re.findall(r"^(\w+)\s+(\d+)$", dry_run, flags=re.MULTILINE)}


def planning_index(
    work: Path, ids: list[str], classes: list[str], n_train: int, size: tuple[int, int]
) -> None:
    """The index of folder dataset ``big`` in ``work`` for planning only (no image files): the
    first ``n_train`` of ``ids`` in train_aug and train, the others in val, each of the first
    class and ``size`` (width, height); an empty test index."""
    data = work / "results" / "big" / "data"
    data.mkdir(parents=True)
    labels = np.zeros(len(classes), np.float32)
    labels[0] = 1
    records = [
        ImageRecord(
            image_id,
            f"images/{i}.jpg",
            mask=f"masks/{i}.png",
            roles={"train_aug", "train"} if i < n_train else {"val"},
            labels=labels,
            width=size[0],
            height=size[1],
        )
        for i, image_id in enumerate(ids)
    ]
    DatasetIndex.build(records, classes, {"name": "big"}).write(data / "index.csv")
    DatasetIndex.build([], classes, {"name": "big"}).write(data / "test_index.csv")

"""A user's data edits rerun exactly the jobs that read what changed, and the rerun's results
equal a fresh run's bit for bit (issue 21, item 9 and its acceptance).

The fresh run is the session's ``tiny_run`` (the tiny synthetic dataset). This test starts from
a copy of that dataset's folder as a user's own VOC-layout data, changed the other way round
(one test, one val and one train_aug image missing, an extra val image, a train_aug photo
replaced by another of its size, one label wrong), runs the workflow, then makes the user's edits step by
step until the data is the fresh run's again: each step's rerun runs only the jobs that read
the changed rows, and at the end every result (labels, predictions, weights, scores) is the
fresh run's.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from workflow_utils import TINY_CONFIG, own_voc_dataset, planned_rules, snakemake

pytestmark = pytest.mark.slow

#: The rules that read the index's train_aug rows (and everything after them).
TRAINING = {"pretrain", "self_train", "seeds", "crf", "deeplab_train"}
#: Every rule's name, for "nothing else ran".
DATA_RULES = {"prepare_dataset", "test_index", "all"}


def _user_config(root: Path) -> dict:
    """TINY_CONFIG's training on the user's copy of the synthetic dataset (VOC layout)."""
    config = copy.deepcopy(TINY_CONFIG)
    del config["datasets"]
    config["dataset"] = "mine"
    config["datasets"] = {"mine": own_voc_dataset(root, ("train_aug", "train", "val", "test"))}
    return config


#: Every result a user's edit can change (the figures and report are left out: they rerun
#: with the scores, and the tiny runs test them).
TARGETS = ("results/summary.csv", "results/mine/default/deeplab_submission.tar.gz")


def _ran(work: Path, config: dict) -> set[str]:
    """The rules a run of the workflow ran, other than the dataset stage's."""
    return planned_rules(snakemake(work, "--cores", "2", *TARGETS, config=config)) - DATA_RULES


def _lines(path: Path) -> list[str]:
    return path.read_text().split()


def _write_lines(path: Path, ids: list[str]) -> None:
    path.write_text("".join(f"{i}\n" for i in ids))


def _same_results(fresh: Path, rerun: Path) -> list[str]:
    """Files of the fresh run whose content differs in the rerun (PNG pixels, weights, arrays,
    scores); [] when the rerun made every result the fresh run made."""
    differ = []
    for path in sorted(fresh.rglob("*")):
        rel = path.relative_to(fresh)
        if path.is_dir() or {"data", "state", "figures"} & set(rel.parts):
            continue
        other = rerun / rel
        if path.suffix not in {".png", ".pt", ".npz"}:
            continue
        if not other.is_file():
            differ.append(f"{rel} (missing)")
        elif path.suffix == ".png":
            if not np.array_equal(np.asarray(Image.open(path)), np.asarray(Image.open(other))):
                differ.append(str(rel))
        elif path.suffix == ".pt":
            a, b = (torch.load(p, map_location="cpu", weights_only=False) for p in (path, other))
            a, b = (x.get("model", x) if isinstance(x, dict) else x for x in (a, b))
            if a.keys() != b.keys() or any(not torch.equal(a[k], b[k]) for k in a):
                differ.append(str(rel))
        else:
            with np.load(path) as a, np.load(other) as b:
                if a.files != b.files or any(not np.array_equal(a[k], b[k]) for k in a.files):
                    differ.append(str(rel))
    return differ


def test_each_edit_reruns_what_reads_it_and_the_rerun_equals_a_fresh_run(
    tiny_run, tmp_path
) -> None:
    original = tiny_run / "resources" / "synthetic" / "VOC2012"
    root = tmp_path / "data" / "VOC2012"
    shutil.copytree(original, root)
    sets = root / "ImageSets" / "Segmentation"
    split = {name: _lines(sets / f"{name}.txt") for name in ("train_aug", "train", "val", "test")}
    labels_csv = root / "cls_labels.csv"
    labels = labels_csv.read_text()
    extra_train = next(i for i in split["train_aug"] if i not in split["train"])
    replaced = next(i for i in split["train_aug"] if i not in split["train"] + [extra_train])
    jpg = root / "JPEGImages" / f"{replaced}.jpg"

    # The user's data before the edits.
    _write_lines(sets / "test.txt", split["test"][:-1])
    _write_lines(sets / "val.txt", [*split["val"][1:], "extra_val"])
    for sub, suffix in (("JPEGImages", "jpg"), ("SegmentationClass", "png")):
        shutil.copy(root / sub / f"{split['val'][0]}.{suffix}", root / sub / f"extra_val.{suffix}")
    _write_lines(sets / "train_aug.txt", [i for i in split["train_aug"] if i != extra_train])
    Image.open(jpg).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(jpg)  # another photo
    rows = labels.splitlines()
    twin = next(r for r in rows if r.startswith(f"{split['val'][0]},"))
    rows.append("extra_val," + twin.split(",", 1)[1])  # the labels of the image it copies
    k = next(n for n, row in enumerate(rows) if row.startswith(f"{replaced},"))
    cells = rows[k].split(",")
    cells[1] = "0" if cells[1] == "1" else "1"
    rows[k] = ",".join(cells)
    labels_csv.write_text("\n".join(rows) + "\n")
    config = _user_config(root)
    work = tmp_path / "work"
    assert TRAINING <= _ran(work, config)

    # A test image added: its prediction (CRF, submission) only.
    _write_lines(sets / "test.txt", split["test"])
    ran = _ran(work, config)
    assert ran and ran <= {"deeplab_predict", "deeplab_crf", "deeplab_submission"}, ran

    # A val image added and another removed: DeepLab's val predictions and what scores them.
    _write_lines(sets / "val.txt", split["val"])
    for sub, suffix in (("JPEGImages", "jpg"), ("SegmentationClass", "png")):
        (root / sub / f"extra_val.{suffix}").unlink()
    ran = _ran(work, config)
    assert {"deeplab_predict", "deeplab_evaluate"} <= ran, ran
    assert not ran & (TRAINING | {"teacher_maps", "evaluate"}), ran

    # A train_aug image added, a replaced photo and a label edited: everything after the data.
    _write_lines(sets / "train_aug.txt", split["train_aug"])
    shutil.copy(original / "JPEGImages" / f"{replaced}.jpg", jpg)
    labels_csv.write_text(labels)
    assert TRAINING <= _ran(work, config)
    assert not planned_rules(snakemake(work, "-n", *TARGETS, config=config)) - DATA_RULES

    # The data is the fresh run's again, and so is every result.
    fresh = tiny_run / "results" / "synthetic"
    rerun = work / "results" / "mine"
    assert not _same_results(fresh, rerun)
    scores = ["stage", "model", "split", "miou", "pixel_acc"]
    a = pd.read_csv(tiny_run / "results" / "summary.csv")
    b = pd.read_csv(work / "results" / "summary.csv")
    pd.testing.assert_frame_equal(
        a[scores].reset_index(drop=True), b[scores].reset_index(drop=True)
    )

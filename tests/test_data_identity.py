"""Every indexed file has a content identity, and the dataset stage reads each file once.

A replaced file (same name, same size) changes its index row; an unchanged file is not read
again on a rerun (the read cache beside the index, keyed by path, size and mtime); a file that
does not decode stops the dataset stage, naming it.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from folder_data import write_noise_images
from PIL import Image
from workflow_utils import REPO_ROOT

from smaf.data.files import FileChecks, cache_path_for, check_file
from smaf.data.index import DatasetIndex
from smaf.data.prepare import prepare_dataset
from smaf.errors import DataError


@pytest.fixture()
def own(tmp_path):
    """A by_folder dataset of 2 classes, 6 images each, with masks for all."""
    images, masks = tmp_path / "images", tmp_path / "masks"
    for k, cls in enumerate(("cat", "dog")):
        write_noise_images(images / cls, [f"{n}.png" for n in range(6)], seed=k)
        (masks / cls).mkdir(parents=True)
        for f in (images / cls).iterdir():
            mask = np.zeros((20, 24), np.uint8)
            mask[5:10, 5:10] = k + 1
            Image.fromarray(mask, mode="L").save(masks / cls / f.name)
    settings = {
        "images": str(images),
        "labels": "by_folder",
        "masks": str(masks),
        "splits": {"val_fraction": 0.25},
    }
    return tmp_path, settings


def _prepare(tmp_path, settings):
    path = tmp_path / "results" / "index.csv"
    prepare_dataset(source="folder", settings=settings, out_index=path, name="own", threads=2)
    return path


def test_a_replaced_image_changes_its_row_and_only_its_row(own) -> None:
    tmp_path, settings = own
    path = _prepare(tmp_path, settings)
    before = DatasetIndex.read(path)
    assert all(len(d) == 32 for d in before.table["image_digest"])
    assert all(before.table["mask_digest"])
    # cp dog/2.png cat/2.png: same size, same name, same mtime a listing would see.
    victim, other = tmp_path / "images/cat/2.png", tmp_path / "images/dog/2.png"
    st = victim.stat()
    shutil.copyfile(other, victim)
    assert victim.stat().st_size == st.st_size
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    path.unlink()
    _prepare(tmp_path, settings)
    after = DatasetIndex.read(path)
    changed = [i for i in before.ids() if before.fingerprint([i]) != after.fingerprint([i])]
    assert changed == ["cat__2"]


def test_a_rerun_reads_only_new_or_changed_files(own) -> None:
    tmp_path, settings = own
    path = _prepare(tmp_path, settings)
    cache = cache_path_for(path)
    assert cache.name == "index.files.csv"
    index = DatasetIndex.read(path)
    jobs = [("image", p) for p in index.table["image"]] + [("mask", p) for p in index.table["mask"]]
    checks = FileChecks(cache)
    found = checks.check(jobs, threads=2)
    assert checks.read == 0  # all 24 files known by path, size and mtime
    assert found[("image", index.table["image"].iloc[0])] == check_file(
        "image", index.table["image"].iloc[0]
    )
    os.utime(index.table["image"].iloc[0], ns=(1, 1))
    checks = FileChecks(cache)
    checks.check(jobs, threads=2)
    assert checks.read == 1


# ---------------------------------------------------- files that do not decode stop here
def test_a_truncated_jpeg_stops_the_dataset_stage_naming_it(own) -> None:
    tmp_path, settings = own
    victim = tmp_path / "images/dog/3.jpg"
    pixels = np.random.default_rng(1).integers(0, 255, (20, 24, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(victim, quality=90)
    (tmp_path / "images/dog/3.png").unlink()
    victim.write_bytes(victim.read_bytes()[:-200])  # the header is whole, the pixels are not
    with pytest.raises(DataError, match=rf"cannot read {victim} \(.*truncated"):
        _prepare(tmp_path, settings)
    assert not (tmp_path / "results/index.csv").exists()


def test_a_colour_mask_stops_the_dataset_stage_naming_it(own) -> None:
    tmp_path, settings = own
    victim = tmp_path / "masks/cat/1.png"
    Image.fromarray(np.zeros((20, 24, 3), np.uint8)).save(victim)
    with pytest.raises(DataError, match=rf"mask {victim} has mode 'RGB'"):
        _prepare(tmp_path, settings)


def test_mask_values_above_the_classes_stop_the_dataset_stage(own) -> None:
    tmp_path, settings = own
    victim = tmp_path / "masks/dog/4.png"
    mask = np.zeros((20, 24), np.uint8)
    mask[0, 0], mask[1, 1], mask[2, 2] = 2, 7, 255  # 2 classes: 7 is none of them; 255 ignore
    Image.fromarray(mask, mode="L").save(victim)
    with pytest.raises(DataError, match=rf"1 masks .* above the 2 classes .*{victim} holds \[7\]"):
        _prepare(tmp_path, settings)


def _smk() -> list[Path]:
    return sorted((REPO_ROOT / "workflow" / "rules").glob("*.smk"))


def _rule_blocks() -> dict[str, str]:
    """Each rule (and checkpoint) of the workflow → its text."""
    blocks = {}
    for path in _smk():
        parts = re.split(r"^\s*(?:rule|checkpoint) (\w+):\n", path.read_text(), flags=re.M)
        blocks.update(zip(parts[1::2], parts[2::2], strict=True))
    return blocks


def _index_readers() -> set[str]:
    """Input functions of the workflow that return the index (index_input, or a function that
    calls one that does)."""
    text = "".join(p.read_text() for p in _smk())
    bodies = dict(re.findall(r"^def (\w+)\(.*?\n((?:(?!def ).*\n|\n)*)", text, flags=re.M))
    readers, grown = {"index_input"}, True
    while grown:
        found = {f for f, body in bodies.items() if any(f"{r}(" in body for r in readers)}
        grown = not found <= readers
        readers |= found
    return readers - {"index_input", "rows_of"}


#: Rules with no `index_rows`: the dataset stage and what it waits for, the gathers (their
#: shard inputs wait for the index themselves) and the rules without outputs.
BEFORE_THE_INDEX = {
    *("download", "manual_item", "convert_sbd", "synthetic_dataset", "prepare_dataset"),
    *("extract_voc2012", "extract_segmentation_class_aug", "extract_deeplab_init"),
    *("extract_coco", "coco_masks", "coco_masks_gather", "test_index"),
    *("seeds_gather", "crf_gather", "teacher_maps_gather", "deeplab_predict_gather"),
    *("deeplab_crf_gather", "sam_masks_gather", "sam_refine_gather", "sam_crf_gather"),
    *("thr_sweep", "predictions"),
}


def test_every_job_after_the_dataset_stage_names_the_index_rows_it_reads() -> None:
    """The index is an ancient input (rewriting it reruns nothing by itself), so a rule that
    reads it without an `index_rows` parameter would miss every edit of its rows (issue 21,
    item 9); and a later rule without one (the summaries, the report) would be planned again
    on a finished run (Snakemake weighs index_rows after its first pass). Input functions that
    return the index count as reading it."""
    readers = _index_readers()
    assert {"pretrain_inputs", "deeplab_train_inputs", "deeplab_predict_inputs"} <= readers
    missing = []
    for rule, block in _rule_blocks().items():
        inputs = block.split("output:")[0]
        if re.search(r"(test_)?index\.csv\"", inputs):
            missing.append(f"{rule} (a literal index path: use index_input)")
        names = {"index_input", "dataset_index", *readers}
        reads = any(re.search(rf"\b{f}\b", inputs) for f in names)
        if "index_rows=" not in block and (reads or rule not in BEFORE_THE_INDEX):
            missing.append(rule)
    assert missing == []

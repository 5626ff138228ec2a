"""Every indexed file has a content identity, and the dataset stage reads each file once.

A replaced file (same name, same size) changes its index row; an unchanged file is not read
again on a rerun (the read cache beside the index, keyed by path, size and mtime); a file that
does not decode stops the dataset stage, naming it.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from PIL import Image

from smaf.data.files import FileChecks, cache_path_for, check_file
from smaf.data.index import DatasetIndex
from smaf.data.prepare import prepare_dataset


def _images(folder, n=6, size=(24, 20), seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{k}.png")


@pytest.fixture()
def own(tmp_path):
    """A by_folder dataset of 2 classes, 6 images each, with masks for all."""
    images, masks = tmp_path / "images", tmp_path / "masks"
    for k, cls in enumerate(("cat", "dog")):
        _images(images / cls, seed=k)
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

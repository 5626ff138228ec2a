"""Data problems are caught by the dataset stage, once, before any training (issue 15 item 6)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from smaf.data.prepare import prepare_dataset
from smaf.data.synthetic_generator import SyntheticConfig, write_dataset
from smaf.errors import DataError

SPLITS = {"train_aug": "train_aug", "train": "train", "val": "val"}


@pytest.fixture()
def own_voc(tmp_path):
    root = tmp_path / "VOC2012"
    write_dataset(
        SyntheticConfig(n_train_aug=4, n_train=2, n_val=2, n_test=0, min_size=40, max_size=48), root
    )
    return root


def _prepare(root, out, **kw):
    settings = {"root": str(root), "num_classes": 6, "splits": SPLITS, "label_source": "csv"}
    settings.update(kw.pop("settings", {}))
    return prepare_dataset(
        source="voc", settings=settings, out_index=out / "index.csv", name="mine", **kw
    )


def test_eps_without_saliency_is_refused_listing_the_three_ways(own_voc, tmp_path) -> None:
    shutil.rmtree(own_voc / "SALImages")
    out = tmp_path / "out"
    with pytest.raises(DataError) as info:
        _prepare(own_voc, out, needs_saliency=True)
    message = str(info.value)
    assert "4 of 4 train_aug images of dataset mine have no saliency map" in message
    assert "(1)" in message and "`saliency` rule" in message and "pretrain.method: cam" in message
    assert not out.exists()
    # The CAM baseline needs none: the same folder indexes fine.
    assert _prepare(own_voc, out)["saliency_maps_train_aug"] is None


def test_saliency_of_another_size_names_the_file_and_the_fix(own_voc, tmp_path) -> None:
    victim = sorted((own_voc / "SALImages").glob("*.png"))[0]
    Image.fromarray(np.zeros((10, 12), np.uint8), mode="L").save(victim)
    out = tmp_path / "out"
    with pytest.raises(DataError, match=rf"saliency map {victim} is 12x10 but its image .* is"):
        _prepare(own_voc, out, settings={"saliency_dir": str(own_voc / "SALImages")})
    assert not (out / "index.csv").exists()  # only the read cache is kept


def test_half_size_mask_is_blamed_on_the_mask_not_the_prediction(own_voc, tmp_path) -> None:
    victim = sorted((own_voc / "SegmentationClass").glob("*.png"))[0]
    mask = np.array(Image.open(victim))
    Image.fromarray(mask[::2, ::2]).save(victim)
    with pytest.raises(DataError, match=rf"mask {victim} is .* but its image .*full resolution"):
        _prepare(own_voc, tmp_path / "out")

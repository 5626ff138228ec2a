"""The synthetic VOC-format dataset: layout, determinism, size spread, saliency degradation."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import TINY, dataset_root

from smaf.data.labels import labels_from_mask, read_labels_csv
from smaf.data.sources.voc import VOCLayout, image_labels
from smaf.data.synthetic_generator import (
    SyntheticConfig,
    boundary_band,
    generate_sample,
    split_ids,
    write_dataset,
)
from smaf.errors import ConfigError
from smaf.io import load_image, load_mask


@pytest.fixture(scope="module")
def tiny(tiny_index):
    """The session's tiny dataset: its generator config and folder (read only)."""
    return SyntheticConfig(**TINY), dataset_root(tiny_index)


def test_layout_is_voc(tiny):
    cfg, root = tiny
    layout = VOCLayout.from_root(root)
    splits = {s: layout.split_ids(s) for s in ("train_aug", "train", "val", "test")}
    assert [len(splits[s]) for s in ("train_aug", "train", "val", "test")] == [6, 3, 2, 2]
    assert set(splits["train"]) <= set(splits["train_aug"])
    assert not set(splits["val"]) & set(splits["train_aug"])
    for split in ("train_aug", "val"):
        layout.validate(split, require_masks=True)
    for image_id in splits["test"]:  # test has images and saliency but no masks, like VOC
        assert layout.image_path(image_id).is_file()
        assert not layout.mask_path(image_id).exists()
    assert layout.saliency_dir == root / "SALImages"
    for image_id in splits["train"]:
        image, mask = load_image(layout.image_path(image_id)), load_mask(layout.mask_path(image_id))
        assert image.shape[:2] == mask.shape
        assert cfg.min_size <= min(mask.shape) and max(mask.shape) <= cfg.max_size
        values = set(np.unique(mask).tolist())
        assert values <= set(range(cfg.num_classes + 1)) | {255}
        assert 255 in values and 0 in values


def test_labels_csv_matches_masks(tiny):
    cfg, root = tiny
    layout = VOCLayout.from_root(root)
    ids = layout.split_ids("train_aug")
    from_csv = read_labels_csv(root / "cls_labels.csv", cfg.num_classes)
    from_masks = image_labels(
        layout, ids, cfg.num_classes, source="masks", class_names=cfg.class_names
    )
    for image_id in ids:
        np.testing.assert_array_equal(from_csv[image_id], from_masks[image_id])
        assert 1 <= from_csv[image_id].sum() <= cfg.max_classes_per_image


def test_deterministic_in_seed():
    cfg = SyntheticConfig(seed=7)
    a, b = generate_sample(cfg, 5), generate_sample(cfg, 5)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_array_equal(a.saliency, b.saliency)
    c = generate_sample(SyntheticConfig(seed=8), 5)
    assert a.image.shape != c.image.shape or not np.array_equal(a.image, c.image)


def test_object_sizes_span_small_to_very_large():
    """Fig. 1 needs both: objects of a few % of the image and objects covering most of it."""
    cfg = SyntheticConfig()
    areas = np.concatenate([generate_sample(cfg, i).object_areas for i in range(120)])
    assert np.percentile(areas, 10) < 0.04
    assert areas.max() > 0.5
    assert (areas > 0.3).mean() > 0.1  # large objects are common, not a fluke


def test_images_hold_several_classes_and_objects():
    cfg = SyntheticConfig()
    n_classes = [int(generate_sample(cfg, i).labels.sum()) for i in range(60)]
    assert min(n_classes) >= 1 and max(n_classes) == cfg.max_classes_per_image
    assert 1.5 < np.mean(n_classes) < 2.5


def test_saliency_is_degraded_but_informative():
    cfg = SyntheticConfig()
    agree, soft, fp = [], [], []
    for i in range(40):
        s = generate_sample(cfg, i)
        valid = s.mask != 255
        fg = (s.mask > 0) & valid
        sal = s.saliency.astype(np.float32) / 255
        agree.append(((sal > 0.5) == fg)[valid].mean())
        soft.append(((sal > 0.05) & (sal < 0.95)).mean())  # blurred edges
        fp.append(((sal > 0.5) & ~fg & valid).sum() / max(1, (~fg & valid).sum()))
    assert 0.8 < np.mean(agree) < 0.99  # informative, but not the ground truth
    assert np.mean(soft) > 0.02
    assert np.mean(fp) > 0.005  # some false positives on distractors


def test_boundary_band_hand_case():
    mask = np.zeros((5, 6), dtype=np.uint8)
    mask[1:4, 1:3] = 1
    band = boundary_band(mask, 1)
    # Every pixel with a 4-neighbour of another label, on both sides of the edge.
    expected = np.array(
        [
            [0, 1, 1, 0, 0, 0],
            [1, 1, 1, 1, 0, 0],
            [1, 1, 1, 1, 0, 0],
            [1, 1, 1, 1, 0, 0],
            [0, 1, 1, 0, 0, 0],
        ],
        dtype=bool,
    )
    np.testing.assert_array_equal(band, expected)
    assert not boundary_band(mask, 0).any()


def test_split_ids_and_stats(tiny, tmp_path):
    cfg, root = tiny
    ids = split_ids(cfg)
    assert ids["train"] == ids["train_aug"][: cfg.n_train]
    stats = write_dataset(cfg, tmp_path / "again")  # the same config again: the same dataset
    saved = json.loads((root / "synthetic.json").read_text())
    assert saved["stats"] == stats
    assert stats["class_names"][0] == "background" and len(stats["class_names"]) == 7
    sample = generate_sample(cfg, 0)
    np.testing.assert_array_equal(labels_from_mask(sample.mask, cfg.num_classes), sample.labels)


@pytest.mark.parametrize(
    "kwargs",
    [{"n_train": 50, "n_train_aug": 10}, {"min_area": 0.5, "max_area": 0.2}, {"num_classes": 0}],
)
def test_invalid_config_is_a_config_error(kwargs):
    with pytest.raises(ConfigError, match="synthetic"):
        SyntheticConfig(**kwargs)

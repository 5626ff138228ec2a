"""The CRF stage: both variants on synthetic data, worker count independence, the background
score of the PSA/EPS variant by hand, resuming, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from smaf.cam import save_maps
from smaf.data.synthetic import SyntheticConfig, write_dataset
from smaf.errors import ConfigError, DataError
from smaf.io import load_mask, read_id_list, save_mask
from smaf.metrics import ConfusionMeter
from smaf.stages.crf_stage import (
    ProbCRFParams,
    background_score,
    crf_from_maps,
    refine_seeds,
)

C = 4


@pytest.fixture(scope="module")
def noisy(tmp_path_factory):
    """Synthetic images with seeds = ground truth + 10 % random labels of present classes, and
    soft maps = blurred one-hot ground truth, stored like the seeds stage stores them."""
    tmp = tmp_path_factory.mktemp("crf")
    root = tmp / "VOC2012"
    write_dataset(
        SyntheticConfig(
            num_classes=C, n_train_aug=4, n_train=4, n_val=1, n_test=0, min_size=48, max_size=64
        ),
        root,
    )
    split = root / "ImageSets" / "Segmentation" / "train.txt"
    seeds_dir = tmp / "seeds"
    rng = np.random.default_rng(0)
    for image_id in read_id_list(split):
        gt = load_mask(root / "SegmentationClass" / f"{image_id}.png")
        clean = np.where(gt == 255, 0, gt).astype(np.uint8)  # [H, W] 0..C
        present = np.unique(clean[clean > 0])
        labels = np.zeros(C, dtype=np.float32)
        labels[present - 1] = 1
        noise = rng.random(clean.shape) < 0.1
        seeds = np.where(noise, rng.choice(np.r_[0, present], clean.shape), clean)
        save_mask(seeds_dir / f"{image_id}.png", seeds.astype(np.uint8))
        onehot = torch.from_numpy(np.stack([clean == k for k in range(1, C + 1)])).float()
        soft = torch.nn.functional.avg_pool2d(onehot[None], 5, 1, 2, count_include_pad=False)[0]
        soft = soft * torch.from_numpy(labels)[:, None, None]  # [C, H, W], absent classes 0
        save_maps(seeds_dir / "maps" / f"{image_id}.npz", soft, labels)
    return {"root": root, "split": split, "seeds": seeds_dir, "tmp": tmp}


def _miou(pred_dir, data) -> float:
    meter = ConfusionMeter(C + 1)
    for i in read_id_list(data["split"]):
        meter.update(
            load_mask(pred_dir / f"{i}.png"),
            load_mask(data["root"] / "SegmentationClass" / f"{i}.png"),
        )
    return meter.scores()["miou"]


def _refine(data, out, **kw):
    args = dict(
        root=data["root"],
        split_file=data["split"],
        seeds_dir=data["seeds"],
        out_dir=out,
        num_classes=C,
    )
    return refine_seeds(**{**args, **kw})


@pytest.mark.parametrize("method", ["labels", "probs"])
def test_refine_seeds_both_methods_workers_agree(noisy, method):
    one = noisy["tmp"] / f"{method}_p1"
    two = noisy["tmp"] / f"{method}_p2"
    stats = _refine(noisy, one, method=method, processes=1)
    _refine(noisy, two, method=method, processes=2)
    ids = read_id_list(noisy["split"])
    assert stats["computed"] == len(ids) and 0 < stats["changed_fraction"] < 0.5
    for i in ids:
        a = load_mask(one / f"{i}.png")
        np.testing.assert_array_equal(a, load_mask(two / f"{i}.png"))
        assert a.shape == load_mask(noisy["seeds"] / f"{i}.png").shape
        present = set(np.unique(load_mask(noisy["seeds"] / f"{i}.png")).tolist())
        assert set(np.unique(a).tolist()) <= present | {0}  # absent classes never appear
    assert json.loads((one / "crf.json").read_text())["method"] == method
    # The CRF removes the salt-and-pepper noise: closer to the ground truth than the seeds.
    assert _miou(one, noisy) > _miou(noisy["seeds"], noisy) + 0.02


def test_refine_seeds_resumes_and_validates(noisy):
    out = noisy["tmp"] / "resume"
    _refine(noisy, out)
    ids = read_id_list(noisy["split"])
    (out / f"{ids[0]}.png").unlink()
    assert _refine(noisy, out)["computed"] == 1
    with pytest.raises(ConfigError, match="unknown key"):
        _refine(noisy, out, params={"gt_prb": 0.7})
    with pytest.raises(ConfigError, match="method"):
        _refine(noisy, out, method="soft")
    with pytest.raises(ConfigError, match="bg"):
        _refine(noisy, out, method="probs", params={"bg": "saliency"})
    with pytest.raises(DataError, match="seeds folder"):
        _refine(noisy, out, seeds_dir=noisy["tmp"] / "nowhere")


def test_background_score_by_hand():
    maps = np.array([[[0.5, 1.0, 0.0]], [[0.2, 0.0, 0.0]]], dtype=np.float32)  # [2, 1, 3]
    np.testing.assert_allclose(background_score(maps, "power", 2), [[[0.25, 0.0, 1.0]]])
    np.testing.assert_allclose(background_score(maps, "constant", score=0.3), [[[0.3] * 3]])
    np.testing.assert_allclose(background_score(maps[:0], "power", 4), [[[1.0] * 3]])


def test_crf_from_maps_maps_labels_back_to_classes():
    # Two stored classes (3 and 5): left half 3, right half 5, a weak strip of background.
    image = np.full((8, 12, 3), 128, dtype=np.uint8)
    maps = np.zeros((2, 8, 12), dtype=np.float32)
    maps[0, :, :5] = 0.9
    maps[1, :, 7:] = 0.9
    out = crf_from_maps(image, np.array([3, 5]), maps, ProbCRFParams(bg_power=16))
    assert out.dtype == np.uint8
    assert (out[:, :4] == 3).all() and (out[:, 8:] == 5).all()
    assert set(np.unique(out).tolist()) <= {0, 3, 5}
    # Only background stored: all background.
    none = crf_from_maps(image, np.zeros(0, int), maps[:0], ProbCRFParams())
    assert not none.any()

"""The CRF stage: both variants on synthetic data, worker count independence, the background
score of the PSA/EPS variant by hand, resuming, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import noisy_seeds

from smaf.data.index import DatasetIndex
from smaf.errors import ConfigError, DataError
from smaf.io import load_mask
from smaf.metrics import ConfusionMeter
from smaf.stages.crf_stage import (
    ProbCRFParams,
    background_score,
    crf_from_maps,
    refine_seeds,
)


@pytest.fixture(scope="module")
def noisy(tiny_index, tmp_path_factory):
    """The tiny dataset's train images with seeds = ground truth + 10 % random labels of
    present classes, and soft maps = blurred one-hot ground truth, stored like the seeds stage
    stores them."""
    tmp = tmp_path_factory.mktemp("crf")
    index = DatasetIndex.read(tiny_index)
    ids = index.ids("train")
    return {"index": index, "ids": ids, "seeds": noisy_seeds(index, ids, tmp / "seeds"), "tmp": tmp}


def _miou(pred_dir, data) -> float:
    index = data["index"]
    meter = ConfusionMeter(index.num_classes + 1)
    for i in data["ids"]:
        meter.update(load_mask(pred_dir / f"{i}.png"), load_mask(index.mask_path(i)))
    return meter.scores()["miou"]


def _refine(data, out, method="labels", params=None, **kw):
    """refine_seeds with the crf settings of ``method`` (and its ``params``), given as the
    config section's dict (checked like the typed settings)."""
    settings = {"method": method, **({method: params} if params else {})}
    args = dict(index=data["index"], role="train", seeds_dir=data["seeds"], out_dir=out)
    return refine_seeds(**{**args, "settings": settings, **kw})


@pytest.mark.parametrize("method", ["labels", "probs"])
def test_refine_seeds_both_methods_workers_agree(noisy, method):
    one = noisy["tmp"] / f"{method}_p1"
    two = noisy["tmp"] / f"{method}_p2"
    stats = _refine(noisy, one, method=method, processes=1)
    _refine(noisy, two, method=method, processes=2)
    ids = noisy["ids"]
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
    ids = noisy["ids"]
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

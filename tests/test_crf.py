"""CRF wrappers: equality with direct pydensecrf calls on real VOC images, shapes, the pool."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import numpy as np
import pydensecrf.densecrf as dcrf
import pytest
from pydensecrf.utils import unary_from_labels, unary_from_softmax

from smaf.crf import DenseCRF, crf_from_labels, crf_images_parallel, dense_crf
from smaf.io import load_image, load_mask, read_id_list

N_REAL = 3  # real images for the equality tests: full size, so keep the count small


# --------------------------------------------------------------------------- helpers


def _seed_labels(mask: np.ndarray) -> np.ndarray:
    """GT mask as a stand-in seed map: 255 (boundary) -> background 0."""
    labels = mask.copy()
    labels[labels == 255] = 0
    return labels


def _soft_scores(labels: np.ndarray, n: int = 21, seed: int = 0) -> np.ndarray:
    """A non-trivial [n, H, W] float32 probability map built from a label map plus noise."""
    rng = np.random.default_rng(seed)
    onehot = np.eye(n, dtype=np.float32)[labels].transpose(2, 0, 1)  # [n, H, W]
    noise = rng.random(onehot.shape, dtype=np.float32)
    scores = 0.5 * onehot + 0.5 * noise
    return scores / scores.sum(axis=0, keepdims=True)


def _direct_released(img: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    """The released SMAF call written out: unary_from_labels(0.7), gauss 3/3, bilateral 50/5/10."""
    h, w = img.shape[:2]
    d = dcrf.DenseCRF2D(w, h, n)
    d.setUnaryEnergy(unary_from_labels(labels, n, gt_prob=0.7, zero_unsure=False))
    d.addPairwiseGaussian(sxy=3, compat=3)
    d.addPairwiseBilateral(sxy=50, srgb=5, rgbim=np.ascontiguousarray(np.copy(img)), compat=10)
    return np.array(d.inference(10)).reshape((n, h, w))


def _direct_softmax(
    img: np.ndarray, probs: np.ndarray, gauss: tuple[int, int], bilateral: tuple[int, int, int]
) -> np.ndarray:
    """A softmax-unary CRF written out, 10 iterations: ``gauss`` (sxy, compat), ``bilateral``
    (sxy, srgb, compat). PSA / EPS: (3, 3), (80, 13, 10); deeplab-pytorch: (1, 3), (67, 3, 4)."""
    n, h, w = probs.shape
    d = dcrf.DenseCRF2D(w, h, n)
    d.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(probs)))
    d.addPairwiseGaussian(sxy=gauss[0], compat=gauss[1])
    sxy, srgb, compat = bilateral
    d.addPairwiseBilateral(sxy=sxy, srgb=srgb, rgbim=np.array(img, order="C"), compat=compat)
    return np.array(d.inference(10)).reshape((n, h, w))


def _crf_one(image_id: str, root: Path) -> np.ndarray:
    """Per-image worker for the pool test (module level, so it pickles under spawn)."""
    img = load_image(root / "JPEGImages" / f"{image_id}.jpg")
    labels = _seed_labels(load_mask(root / "SegmentationClass" / f"{image_id}.png"))
    return crf_from_labels(img, labels, 21)


def _synthetic_crf(seed: int) -> np.ndarray:
    img, labels = _synthetic(seed)
    return crf_from_labels(img, labels, 3)


def _synthetic(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A 40x60 image with a bright square on a dark background and a noisy 3-label map."""
    rng = np.random.default_rng(seed)
    img = np.full((40, 60, 3), 30, np.uint8)
    img[10:30, 20:45] = (220, 200, 40)
    truth = np.zeros((40, 60), np.int64)
    truth[10:30, 20:45] = 2
    noisy = truth.copy()
    flip = rng.random(truth.shape) < 0.15
    noisy[flip] = rng.integers(0, 3, size=int(flip.sum()))
    return img, noisy


@pytest.fixture(scope="module")
def real_items(voc_mini_root: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    ids = read_id_list(voc_mini_root / "ImageSets" / "Segmentation" / "subset_train.txt")[:N_REAL]
    items = []
    for i in ids:
        img = load_image(voc_mini_root / "JPEGImages" / f"{i}.jpg")  # read-only, as from PIL
        mask = load_mask(voc_mini_root / "SegmentationClass" / f"{i}.png")
        items.append((i, img, _seed_labels(mask)))
    return items


# --------------------------------------------------------------------------- real images


@pytest.mark.voc
def test_crf_from_labels_equals_direct_call(real_items) -> None:
    for _, img, labels in real_items:
        ours = crf_from_labels(img, labels, 21, return_probs=True)
        ref = _direct_released(img, labels, 21)
        assert ours.shape == (21, *img.shape[:2]) and ours.dtype == np.float32
        np.testing.assert_array_equal(ours, ref)
        hard = crf_from_labels(img, labels, 21)
        assert hard.shape == img.shape[:2] and hard.dtype == np.uint8
        np.testing.assert_array_equal(hard, ref.argmax(0))
        np.testing.assert_allclose(ours.sum(0), 1.0, atol=1e-4)


@pytest.mark.voc
def test_dense_crf_equals_direct_call(real_items) -> None:
    for k, (_, img, labels) in enumerate(real_items):
        probs = _soft_scores(labels, seed=k)
        ours = dense_crf(img, probs, return_probs=True)
        ref = _direct_softmax(img, probs, (3, 3), (80, 13, 10))  # PSA / EPS
        assert ours.shape == probs.shape and ours.dtype == np.float32
        np.testing.assert_array_equal(ours, ref)
        np.testing.assert_array_equal(dense_crf(img, probs), ref.argmax(0))
        np.testing.assert_allclose(ours.sum(0), 1.0, atol=1e-4)


@pytest.mark.voc
def test_deeplab_densecrf_equals_direct_call(real_items) -> None:
    _, img, labels = real_items[0]
    probs = _soft_scores(labels, seed=7)
    ours = DenseCRF()(img, probs)
    np.testing.assert_array_equal(ours, _direct_softmax(img, probs, (1, 3), (67, 3, 4)))
    np.testing.assert_allclose(ours.sum(0), 1.0, atol=1e-4)


@pytest.mark.voc
def test_parallel_two_processes_equals_one(real_items, voc_mini_root: Path, caplog) -> None:
    ids = [i for i, _, _ in real_items]
    fn = functools.partial(_crf_one, root=voc_mini_root)
    lines: list[str] = []
    serial = crf_images_parallel(fn, ids, processes=1, log=lines.append, log_every=2)
    assert [line.split(",")[0] for line in lines] == ["crf: 2/3 images", "crf: 3/3 images"]
    assert "images/s" in lines[0]
    logger = logging.getLogger("smaf.test_crf")
    with caplog.at_level(logging.INFO, logger="smaf.test_crf"):
        pooled = crf_images_parallel(fn, ids, processes=2, log=logger, log_every=1)
    assert len(caplog.records) == len(ids)
    assert len(pooled) == len(serial) == len(ids)
    for a, b in zip(serial, pooled, strict=True):
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------- synthetic


def test_synthetic_crf_cleans_noise_and_validates() -> None:
    img, noisy = _synthetic()
    out = crf_from_labels(img, noisy, 3)
    assert out.shape == (40, 60) and out.dtype == np.uint8
    truth = np.zeros((40, 60), np.int64)
    truth[10:30, 20:45] = 2
    # The CRF should repair most of the 15% label noise on this clean two-region image.
    assert (out == truth).mean() > (noisy == truth).mean()
    assert (out == truth).mean() > 0.95
    probs = crf_from_labels(img, noisy, 3, return_probs=True)
    assert probs.shape == (3, 40, 60) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-4)

    soft = np.full((3, 40, 60), 0.2, np.float32)
    soft[2, 10:30, 20:45] = 0.6
    soft[0][truth == 0] = 0.6
    assert dense_crf(img, soft).shape == (40, 60)
    assert DenseCRF()(img, soft).shape == (3, 40, 60)

    # zero_unsure with uint8 labels: 0 = unknown, 1..n -> CRF labels 0..n-1 (no wrap-around).
    shifted = (noisy + 1).astype(np.uint8)
    shifted[::7, ::7] = 0
    assert crf_from_labels(img, shifted, 3, zero_unsure=True).max() <= 2

    with pytest.raises(ValueError, match="uint8"):
        crf_from_labels(img.astype(np.float32), noisy, 3)
    with pytest.raises(ValueError, match="label values"):
        crf_from_labels(img, np.full((40, 60), 255, np.uint8), 21)
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        crf_from_labels(img, noisy[:, :10], 3)
    with pytest.raises(ValueError, match="integer"):
        crf_from_labels(img, noisy.astype(np.float32), 3)
    with pytest.raises(ValueError, match=r"\[C, H, W\]"):
        dense_crf(img, soft[:, :10])
    with pytest.raises(ValueError, match="float"):
        dense_crf(img, (soft * 10).astype(np.int64))


def test_synthetic_non_contiguous_inputs_are_accepted() -> None:
    img, noisy = _synthetic()
    wide = np.concatenate([img, img], axis=1)[:, ::2]  # non-contiguous view of the same pixels
    ro = img.copy()
    ro.flags.writeable = False
    ref = crf_from_labels(img, noisy, 3, return_probs=True)
    np.testing.assert_array_equal(crf_from_labels(ro, noisy, 3, return_probs=True), ref)
    assert not wide.flags.c_contiguous
    crf_from_labels(wide, noisy, 3)  # runs; pixels differ from img, so no equality check


def test_synthetic_parallel_matches_serial() -> None:
    seeds = [0, 1, 2, 3]
    serial = crf_images_parallel(_synthetic_crf, seeds, processes=1)
    pooled = crf_images_parallel(_synthetic_crf, seeds, processes=2, chunksize=1)
    for a, b in zip(serial, pooled, strict=True):
        np.testing.assert_array_equal(a, b)
    assert crf_images_parallel(_synthetic_crf, [], processes=2) == []
    with pytest.raises(ValueError):
        crf_images_parallel(_synthetic_crf, seeds, processes=0)

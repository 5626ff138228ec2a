"""SAM's automatic masks with a tiny random SAM (smaf.sam.masks): settings, generation at the
image's size (also downscaled large images), the compact per-image file and its round trip,
and too-large images (a clear message, never a traceback)."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest
from sam_utils import write_tiny_sam

import smaf.sam.masks as sam_masks
from smaf.errors import ConfigError, DataError, SmafError
from smaf.sam import SamMasks, SamSettings, generate_masks, load_masks, load_sam, save_masks

# Keep every mask a random SAM proposes (its scores mean nothing), few prompts: fast.
LOOSE = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}


@pytest.fixture(scope="module")
def tiny_sam(tmp_path_factory):
    pytest.importorskip("segment_anything")
    path = write_tiny_sam(tmp_path_factory.mktemp("sam") / "tiny.pth")
    return load_sam(path)[0]


def image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


def test_defaults_are_sams():
    sa = pytest.importorskip("segment_anything")
    sig = inspect.signature(sa.SamAutomaticMaskGenerator.__init__).parameters
    for name, value in SamSettings().generator_kwargs().items():
        assert sig[name].default == value, name


def test_settings_from_config_and_bad_values():
    s = SamSettings.from_dict({"points_per_side": 16, "checkpoint": "x.pth", "model": None})
    assert s.points_per_side == 16 and s.pred_iou_thresh == 0.88
    with pytest.raises(ConfigError, match="sam.points_per_side"):
        SamSettings(points_per_side=0)
    with pytest.raises(ConfigError, match="sam.pred_iou_thresh"):
        SamSettings(pred_iou_thresh=1.5)
    with pytest.raises(ConfigError, match="sam.max_side"):
        SamSettings(max_side=4)


def test_generate_masks_at_the_image_size(tiny_sam):
    masks = generate_masks(tiny_sam, image(40, 52), SamSettings(**LOOSE))
    assert len(masks) >= 1
    assert (masks.height, masks.width) == (40, 52)
    stack = masks.stack()
    assert stack.shape == (len(masks), 40, 52) and stack.dtype == bool
    np.testing.assert_array_equal(stack.sum(axis=(1, 2)), masks.areas)
    assert ((masks.predicted_iou >= 0) & (masks.stability_score <= 1)).all()


def test_large_image_is_downscaled_for_sam_and_masks_come_back_full_size(tiny_sam, monkeypatch):
    seen = []
    real = sam_masks._resize_image
    monkeypatch.setattr(
        sam_masks,
        "_resize_image",
        lambda im, side: seen.append(real(im, side).shape) or real(im, side),
    )
    masks = generate_masks(tiny_sam, image(60, 120), SamSettings(max_side=32, **LOOSE))
    assert seen == [(16, 32, 3)]
    assert (masks.height, masks.width) == (60, 120) and masks.stack().shape[1:] == (60, 120)


def test_round_trip_through_the_file(tmp_path):
    rng = np.random.default_rng(1)
    stack = rng.random((5, 17, 23)) < 0.4
    stack[2] = False  # an empty mask survives too
    masks = SamMasks.from_stack(stack, predicted_iou=rng.random(5), stability_score=rng.random(5))
    path = tmp_path / "2007_000032.json"
    save_masks(path, masks)
    back = load_masks(path)
    np.testing.assert_array_equal(back.stack(), stack)
    np.testing.assert_array_equal([m for m in back], list(stack))  # iteration, one at a time
    np.testing.assert_allclose(back.predicted_iou, masks.predicted_iou, atol=1e-5)
    np.testing.assert_allclose(back.stability_score, masks.stability_score, atol=1e-5)
    np.testing.assert_array_equal(back.areas, stack.sum(axis=(1, 2)))
    ys, xs = np.nonzero(stack[0])
    np.testing.assert_allclose(back.boxes[0], [xs.min(), ys.min(), np.ptp(xs) + 1, np.ptp(ys) + 1])
    blobs = np.zeros((5, 200, 300), bool)  # object-like masks: RLE is far below packed bits
    for k in range(5):
        blobs[k, 20 * k : 100 + 20 * k, 30 * k : 150 + 10 * k] = True
    save_masks(path, SamMasks.from_stack(blobs))
    assert path.stat().st_size < blobs.size / 8 / 20
    empty = SamMasks.from_stack(np.zeros((0, 3, 4), bool))
    save_masks(path, empty)
    assert load_masks(path).stack().shape == (0, 3, 4)


def test_generated_masks_round_trip(tiny_sam, tmp_path):
    masks = generate_masks(tiny_sam, image(30, 33, seed=3), SamSettings(**LOOSE))
    save_masks(tmp_path / "m.json", masks)
    np.testing.assert_array_equal(load_masks(tmp_path / "m.json").stack(), masks.stack())


@pytest.mark.parametrize(
    "text",
    ["{", json.dumps({"format": "other"}), json.dumps({"format": "smaf-sam-masks", "version": 1})],
)
def test_damaged_or_missing_file_is_a_data_error(tmp_path, text):
    path = tmp_path / "x.json"
    with pytest.raises(DataError, match="not found"):
        load_masks(path)
    path.write_text(text)
    with pytest.raises(DataError, match=r"x.json are damaged .* delete the file"):
        load_masks(path)


def test_image_too_large_for_memory_is_a_clear_message(tiny_sam, monkeypatch):
    monkeypatch.setattr(sam_masks, "_available_bytes", lambda device: 10_000)
    with pytest.raises(SmafError, match="does not fit in memory .* sam.points_per_batch"):
        generate_masks(tiny_sam, image(40, 40), SamSettings(max_side=None, **LOOSE))


def test_out_of_memory_during_generation_is_a_clear_message(tiny_sam, monkeypatch):
    import segment_anything

    def oom(self, im):
        raise RuntimeError(
            "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"
        )

    monkeypatch.setattr(segment_anything.SamAutomaticMaskGenerator, "generate", oom)
    with pytest.raises(SmafError, match="40x30 image does not fit in memory"):
        generate_masks(tiny_sam, image(30, 40), SamSettings(**LOOSE))


def test_peak_memory_estimate_grows_with_batch_and_image():
    small = sam_masks.estimate_peak_bytes(375, 500, SamSettings())
    assert small == 64 * 3 * (1024 * 1024 + 375 * 500) * 4 * 2
    assert sam_masks.estimate_peak_bytes(375, 500, SamSettings(points_per_batch=16)) == small // 4


def test_bad_image_is_rejected(tiny_sam):
    with pytest.raises(ValueError, match="uint8"):
        generate_masks(tiny_sam, np.zeros((4, 4), np.uint8))

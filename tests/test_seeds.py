"""CAM seeds: the seed rule on hand-made maps, class_maps on a controllable fake network, and
the seeds stage end to end on a tiny synthetic dataset with a randomly initialised model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import killed_at_call, tiny_classifier
from torch import nn

from smaf.cam import CAMConfig, class_maps, seed_labels
from smaf.data.index import DatasetIndex
from smaf.errors import ConfigError, SmafError
from smaf.io import load_maps, load_mask
from smaf.settings import SeedsSettings
from smaf.stages import seeds as seeds_stage
from smaf.stages.seeds import make_seeds
from smaf.staging import FINGERPRINT
from smaf.transforms import IMAGENET_MEAN, IMAGENET_STD

C = 6


# ------------------------------------------------------------------- the seed rule by hand


def test_seed_labels_two_classes_by_hand():
    # maps [C=2, H=2, W=3]; bg = 0.2 competes; ties go to the lower index (argmax).
    maps = np.array(
        [
            [[0.9, 0.1, 0.0], [0.5, 0.25, 0.0]],  # class 1
            [[0.3, 0.15, 0.8], [0.6, 0.2, 0.19]],  # class 2
        ],
        dtype=np.float32,
    )
    expected = np.array([[1, 0, 2], [2, 1, 0]], dtype=np.uint8)
    out = seed_labels(maps, 0.2)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, expected)
    # A higher threshold turns the weak pixels into background.
    np.testing.assert_array_equal(seed_labels(maps, 0.55), [[1, 0, 2], [2, 0, 0]])


class PixelCAM(nn.Module):
    """Fake classifier whose CAM is the input's un-normalised R and G channels (stride 1).

    With ``has_background=False`` (the plain CAM head) the attention is ReLU(CAM), so class 1
    is R / 255 and class 2 is G / 255 of the (resized) image: the fused result is
    hand-computable.
    """

    has_background = False

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))  # class_maps takes the device from it
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        raw = x * self.std + self.mean  # [B, 3, h, w] back to RGB / 255
        return {"cam": raw[:, :2]}  # [B, 2, h, w]


def _hand_image() -> np.ndarray:
    image = np.zeros((2, 3, 3), dtype=np.uint8)
    image[..., 0] = [
        [255, 40, 0],
        [102, 0, 0],
    ]  # R -> class 1: / 255 max = [[1, .16, 0], [.4, 0, 0]]
    image[..., 1] = [
        [0, 0, 200],
        [0, 100, 30],
    ]  # G -> class 2: / 200 max = [[0, 0, 1], [0, .5, .15]]
    return image


def test_class_maps_fake_network_by_hand():
    image = _hand_image()
    cfg = CAMConfig(scales=(1.0,), flip=True)  # the flip of a pixel-wise CAM is the same map
    maps = class_maps(PixelCAM().eval(), image, np.array([1.0, 1.0]), cfg)
    assert maps.shape == (2, 2, 3) and maps.dtype == torch.float32
    expected = np.array(
        [
            [[1.0, 40 / 255, 0.0], [102 / 255, 0.0, 0.0]],
            [[0.0, 0.0, 1.0], [0.0, 0.5, 0.15]],
        ]
    )
    np.testing.assert_allclose(maps.numpy(), expected, atol=1e-5)
    np.testing.assert_array_equal(seed_labels(maps, 0.2), [[1, 0, 2], [1, 2, 0]])
    # Class 2 absent from the image label: its channel is zeroed, it can never be a seed.
    maps = class_maps(PixelCAM().eval(), image, np.array([1.0, 0.0]), cfg)
    assert float(maps[1].abs().max()) == 0.0
    np.testing.assert_array_equal(seed_labels(maps, 0.2), [[1, 0, 0], [1, 0, 0]])


def test_class_maps_constant_image_all_scales():
    # A uniform image gives constant maps at every scale and flip; after the per-class max
    # normalisation every present class is exactly 1 and absent ones 0.
    image = np.full((5, 7, 3), (120, 60, 0), dtype=np.uint8)
    cfg = CAMConfig(scales=(0.5, 1.0, 1.5, 2.0), flip=True)
    maps = class_maps(PixelCAM().eval(), image, np.array([1.0, 1.0]), cfg)
    np.testing.assert_allclose(maps.numpy(), np.ones((2, 5, 7)), atol=1e-6)
    # Both classes beat the background everywhere (which wins is a float tie).
    assert set(np.unique(seed_labels(maps, 0.2))) <= {1, 2}
    maps = class_maps(PixelCAM().eval(), image, np.array([0.0, 1.0]), cfg)
    assert set(np.unique(seed_labels(maps, 0.2))) == {2}


# --------------------------------------------------------------------- the stage end to end


@pytest.fixture(scope="module")
def tiny(tiny_index, tiny_model, tmp_path_factory):
    """The session's tiny dataset (seeds of its 3 train images) and random EPS-head model."""
    return {"index": tiny_index, "model": tiny_model, "tmp": tmp_path_factory.mktemp("seeds")}


def _run(tiny, out, cam=None, thr=0.2, **kw):
    """make_seeds with the seeds settings of ``cam`` (default: scales 0.5, 1 with flips) and
    ``thr``, built (and checked) from the config section's dict."""
    cam = {"scales": [0.5, 1.0], "flip": True} if cam is None else cam
    args = dict(model_path=tiny["model"], index=tiny["index"], role="train", out_dir=out)
    args.update(kw)
    return make_seeds(settings=SeedsSettings.from_dict({**cam, "thr": thr}), device="cpu", **args)


def test_make_seeds_end_to_end(tiny):
    out = tiny["tmp"] / "seeds"
    stats = _run(tiny, out)
    index = DatasetIndex.read(tiny["index"])
    ids = index.ids("train")
    assert stats["images"] == stats["computed"] == len(ids) == 3
    labels = index.label_map(ids)
    for i in ids:
        seeds = load_mask(out / f"{i}.png")
        present = set(np.flatnonzero(labels[i]) + 1)
        assert set(np.unique(seeds)) <= {0} | present  # 0..C, absent classes never seeds
        maps = load_maps(out / "maps" / f"{i}.npz")  # [C, H, W]
        assert maps.shape == (C, *seeds.shape)
        absent = [k - 1 for k in range(1, C + 1) if k not in present]
        assert not maps[absent].any()
        # The PNG is the seed rule applied to the maps (float16 storage may move a pixel
        # lying within ~1e-4 of the threshold).
        assert (seed_labels(maps, 0.2) != seeds).mean() < 0.01
    manifest = json.loads((out / "seeds.json").read_text())
    assert manifest["thr"] == 0.2 and manifest["cam"]["scales"] == [0.5, 1.0]

    # A rerun skips every finished image, and redoes only one whose npz is gone.
    assert _run(tiny, out)["computed"] == 0
    (out / "maps" / f"{ids[1]}.npz").unlink()
    before = (out / f"{ids[0]}.png").stat().st_mtime_ns
    assert _run(tiny, out)["computed"] == 1
    assert (out / f"{ids[0]}.png").stat().st_mtime_ns == before


def test_make_seeds_staging_resume_and_publish(tiny, monkeypatch):
    out = tiny["tmp"] / "published"
    work = tiny["tmp"] / "state" / "seeds"
    ids = DatasetIndex.read(tiny["index"]).ids("train")
    real_save = seeds_stage.save_mask
    dies_at_third, calls = killed_at_call(real_save)

    # A killed run leaves its finished images in the staging folder, nothing at the output.
    monkeypatch.setattr(seeds_stage, "save_mask", dies_at_third)
    with pytest.raises(RuntimeError, match="killed"):
        _run(tiny, out, work_dir=work)
    monkeypatch.setattr(seeds_stage, "save_mask", real_save)
    assert not out.exists() and (work / FINGERPRINT).is_file()
    assert len(list(work.glob("*.png"))) == 2

    # The rerun with the same settings does only the rest, then publishes the folder.
    assert _run(tiny, out, work_dir=work)["computed"] == 1
    assert not work.exists() and not (out / FINGERPRINT).exists()
    assert all((out / f"{i}.png").is_file() for i in ids)

    # Leftovers of other settings are discarded, and the output is replaced as a whole.
    monkeypatch.setattr(seeds_stage, "save_mask", dies_at_third)
    calls.clear()
    with pytest.raises(RuntimeError):
        _run(tiny, out, work_dir=work, thr=0.3)
    monkeypatch.setattr(seeds_stage, "save_mask", real_save)
    (out / "stale").write_text("x")
    assert _run(tiny, out, work_dir=work, thr=0.5)["computed"] == 3
    assert not (out / "stale").exists()
    assert json.loads((out / "seeds.json").read_text())["thr"] == 0.5


def test_make_seeds_bad_input(tiny):
    with pytest.raises(ConfigError, match="thr"):
        _run(tiny, tiny["tmp"] / "bad", thr=1.5)
    with pytest.raises(ConfigError, match="unknown key"):
        _run(tiny, tiny["tmp"] / "bad", cam={"scale": [1.0]})
    # A model file for another class count: one clear error naming both counts.
    path = tiny_classifier(tiny["tmp"] / "other.pt", num_classes=C - 1)
    with pytest.raises(SmafError, match="classes"):
        _run(tiny, tiny["tmp"] / "bad", model_path=path)
    assert not (tiny["tmp"] / "bad").exists()

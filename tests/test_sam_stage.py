"""The SAM stages on the session's tiny dataset with a tiny random SAM: masks per image
(resumable: a run killed after two images redoes only the rest), the SEPL refinement of a
seeds folder, and bad input in one line."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from helpers import killed_at_call
from sam_utils import write_tiny_sam

from smaf.data.index import DatasetIndex
from smaf.errors import SmafError
from smaf.io import load_mask, save_mask
from smaf.sam import load_masks
from smaf.sam_settings import SamStageSettings
from smaf.stages import sam_stage
from smaf.stages.sam_stage import make_sam_masks, refine_seeds_with_sam
from smaf.staging import FINGERPRINT

SETTINGS = SamStageSettings.from_dict({"points_per_side": 4, "max_side": 64, "unclaimed": "seed"})


@pytest.fixture(scope="module")
def sam(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sam_stage")
    return {"ckpt": write_tiny_sam(tmp / "sam.pth"), "tmp": tmp}


def _masks(tiny_index, sam, out, **kw):
    return make_sam_masks(tiny_index, "train", sam["ckpt"], out, SETTINGS, device="cpu", **kw)


def test_masks_resume_after_a_kill_and_restart_on_new_settings(tiny_index, sam, monkeypatch):
    out, work = sam["tmp"] / "masks", sam["tmp"] / "state" / "masks"
    ids = DatasetIndex.read(tiny_index).ids("train")
    real_save = sam_stage.save_masks
    monkeypatch.setattr(sam_stage, "save_masks", killed_at_call(real_save)[0])
    with pytest.raises(RuntimeError, match="killed"):
        _masks(tiny_index, sam, out, work_dir=work)
    monkeypatch.setattr(sam_stage, "save_masks", real_save)
    assert not out.exists() and (work / FINGERPRINT).is_file()
    assert len(list(work.glob("*.sam.json"))) == 2

    assert _masks(tiny_index, sam, out, work_dir=work)["computed"] == len(ids) - 2
    assert sorted(p.name[: -len(".sam.json")] for p in out.glob("*.sam.json")) == sorted(ids)
    manifest = json.loads((out / "sam_masks.json").read_text())
    assert manifest["settings"]["points_per_side"] == 4 and manifest["checkpoint_digest"]
    # Another generator setting recomputes every image.
    changed = SamStageSettings.from_dict({**SETTINGS.to_dict(), "pred_iou_thresh": 0.5})
    stats = make_sam_masks(
        tiny_index, "train", sam["ckpt"], out, changed, device="cpu", work_dir=work
    )
    assert stats["computed"] == len(ids)


def test_refine_names_the_masks_with_the_seeds(tiny_index, sam):
    masks = sam["tmp"] / "masks2"
    _masks(tiny_index, sam, masks)
    ids = DatasetIndex.read(tiny_index).ids("train")
    seeds = sam["tmp"] / "seeds"
    seeds.mkdir()
    for i in ids:
        m = load_masks(masks / f"{i}.sam.json")
        label = np.zeros((m.height, m.width), np.uint8)
        label[:, : m.width // 2] = 1  # class 1 on the left half, background on the right
        save_mask(seeds / f"{i}.png", label)
    out = sam["tmp"] / "refined"
    stats = refine_seeds_with_sam(tiny_index, "train", seeds, masks, out, settings=SETTINGS.refine)
    assert stats["images"] == len(ids)
    for i in ids:
        label = load_mask(out / f"{i}.png")
        assert label.shape == load_mask(seeds / f"{i}.png").shape
        assert set(label.ravel().tolist()) <= {0, 1}


def test_not_a_sam_checkpoint_is_one_line(tiny_index, sam):
    bad = sam["tmp"] / "bad.pth"
    torch.save({"weight": torch.zeros(2)}, bad)
    with pytest.raises(SmafError) as err:
        make_sam_masks(tiny_index, "train", bad, sam["tmp"] / "x", SETTINGS)
    assert "\n" not in str(err.value) and str(bad) in str(err.value)
    with pytest.raises(SmafError, match="not found"):
        make_sam_masks(tiny_index, "train", sam["tmp"] / "nope.pth", sam["tmp"] / "x")


def test_a_missing_extra_is_one_line_naming_the_install(tiny_index, sam, monkeypatch):
    monkeypatch.setitem(sys.modules, "segment_anything", None)  # as without smaf[sam]
    with pytest.raises(SmafError) as err:
        make_sam_masks(tiny_index, "train", sam["ckpt"], sam["tmp"] / "y", SETTINGS)
    assert "\n" not in str(err.value) and "pip install 'smaf[sam]'" in str(err.value)

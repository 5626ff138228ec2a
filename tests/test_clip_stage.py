"""smaf.stages.clip_maps: the CLIP base's seeds and maps in the classifier seeds' layout, and its
checks before any work."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from clip_checkpoint import tiny_clip_state

from smaf.data.index import read_index
from smaf.errors import ConfigError, DataError, SmafError
from smaf.io import load_mask
from smaf.stages.clip_maps import clip_maps

SMALL = {"vision_layers": 2, "text_layers": 1}
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "tiny_clip.pt"
    torch.save(tiny_clip_state(**SMALL), path)
    return path


def test_seeds_and_maps_of_the_present_classes(tiny_index, weights, tmp_path):
    out = tmp_path / "seeds"
    stats = clip_maps(weights, tiny_index, "train", out, None, 0.3, device="cpu")
    index = read_index(tiny_index)
    ids = index.ids("train")
    assert stats["images"] == stats["computed"] == len(ids)
    for image_id in ids:
        labels = index.labels(image_id)
        seeds = load_mask(out / f"{image_id}.png")
        assert seeds.shape == index.size(image_id)
        assert set(np.unique(seeds)) <= {0, *(np.flatnonzero(labels) + 1)}
        with np.load(out / "maps" / f"{image_id}.npz") as z:
            assert z["classes"].tolist() == (np.flatnonzero(labels) + 1).tolist()
            assert z["maps"].dtype == np.float16 and z["maps"].max() <= 1.0
            assert tuple(z["shape"]) == (index.num_classes, *index.size(image_id))
    manifest = json.loads((out / "seeds.json").read_text())
    assert manifest["prompts"] == index.class_names[1:]  # synthetic source: names as prompts
    assert manifest["background"][0] == "ground" and manifest["clip"]["box_thr"] == 0.4
    again = clip_maps(weights, tiny_index, "train", out, None, 0.3, device="cpu")
    assert again["computed"] == 0  # finished images are skipped


def test_bad_input_is_refused_before_any_output(tiny_index, weights, tmp_path):
    out = tmp_path / "seeds"
    with pytest.raises(ConfigError, match="no class named 'cat'"):
        clip_maps(weights, tiny_index, "train", out, {"class_prompts": {"cat": "a cat"}}, 0.3)
    with pytest.raises(ConfigError, match="unknown key"):
        clip_maps(weights, tiny_index, "train", out, {"prompt": "{}"}, 0.3)
    with pytest.raises(ConfigError, match="seeds.thr"):
        clip_maps(weights, tiny_index, "train", out, None, 1.5)
    not_clip = tmp_path / "classifier.pt"
    torch.save({"fc.weight": torch.zeros(2, 2)}, not_clip)
    with pytest.raises(SmafError, match="classifier.pt is not an OpenAI-format CLIP"):
        clip_maps(not_clip, tiny_index, "train", out, None, 0.3)
    big_patch = tmp_path / "patch64.pt"
    torch.save(tiny_clip_state(patch=64, **SMALL), big_patch)
    with pytest.raises(DataError, match="smaller than one 64x64 CLIP patch"):
        clip_maps(big_patch, tiny_index, "train", out, None, 0.3)
    assert not out.exists()

"""Loading SAM checkpoints (smaf.sam.model): the architecture read from the state dict, the
official vit_b/l/h shapes, and checkpoints that are not SAM or a missing extra (one line, no
traceback)."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest
import torch
from sam_utils import TINY_SAM, write_tiny_sam

from smaf.errors import SmafError
from smaf.sam import SAM_DOWNLOADS, load_sam, require_segment_anything, sam_architecture
from smaf.sam.masks import SamSettings, generate_masks

needs_sam = pytest.mark.skipif(
    importlib.util.find_spec("segment_anything") is None, reason="pip install 'smaf[sam]'"
)


@needs_sam
def test_tiny_checkpoint_round_trips_its_architecture(tmp_path):
    path = write_tiny_sam(tmp_path / "tiny.pth")
    sam, arch = load_sam(path)
    assert arch == TINY_SAM
    assert not sam.training
    want = torch.load(path, weights_only=True)
    got = sam.state_dict()
    assert all(torch.equal(got[k], v) for k, v in want.items())


@needs_sam
@pytest.mark.parametrize(
    ("name", "width", "depth", "heads", "global_idx"),
    [
        ("vit_b", 768, 12, 12, (2, 5, 8, 11)),
        ("vit_l", 1024, 24, 16, (5, 11, 17, 23)),
        ("vit_h", 1280, 32, 16, (7, 15, 23, 31)),
    ],
)
def test_official_architectures_are_recognised(name, width, depth, heads, global_idx):
    from segment_anything import sam_model_registry

    with torch.device("meta"):  # shapes only, no memory
        sd = sam_model_registry[name]().state_dict()
    arch = sam_architecture(sd)
    assert (arch.name, arch.embed_dim, arch.depth, arch.num_heads) == (name, width, depth, heads)
    assert arch.global_attn_indexes == global_idx
    assert (arch.window_size, arch.image_size, arch.patch_size) == (14, 1024, 16)
    assert (arch.prompt_dim, arch.decoder_depth, arch.decoder_mlp_dim) == (256, 2, 2048)


def test_download_items_have_the_official_urls_and_md5():
    for file, item in SAM_DOWNLOADS.items():
        assert item["url"].endswith("/segment_anything/" + file)
        assert item["md5"].startswith(file.rsplit("_", 1)[1].removesuffix(".pth"))


@needs_sam
def test_forced_model_must_match(tmp_path):
    path = write_tiny_sam(tmp_path / "tiny.pth")
    with pytest.raises(SmafError, match="sam.model is 'vit_b' but .* custom SAM"):
        load_sam(path, model="vit_b")


@needs_sam
@pytest.mark.parametrize(
    "content",
    [
        "text",  # not a torch file
        {"conv.weight": torch.zeros(2, 3, 1, 1)},  # another model's state dict
        [1, 2, 3],  # a torch file that is no dict
    ],
)
def test_not_a_sam_checkpoint_is_one_clear_error(tmp_path, content):
    path = tmp_path / "model.pth"
    if isinstance(content, str):
        path.write_text(content)
    else:
        torch.save(content, path)
    with pytest.raises(SmafError, match=r"model.pth is not a Segment Anything checkpoint"):
        load_sam(path)


@needs_sam
def test_truncated_sam_checkpoint_is_one_clear_error(tmp_path):
    path = write_tiny_sam(tmp_path / "tiny.pth")
    sd = torch.load(path, weights_only=True)
    del sd["mask_decoder.iou_token.weight"]
    torch.save(sd, path)
    with pytest.raises(SmafError, match="not a Segment Anything checkpoint of the expected layout"):
        load_sam(path)
    path.write_bytes(write_tiny_sam(tmp_path / "t2.pth").read_bytes()[:5000])
    with pytest.raises(SmafError, match="not a Segment Anything checkpoint"):
        load_sam(path)


@needs_sam
def test_missing_file_names_the_setting(tmp_path):
    with pytest.raises(SmafError, match="sam.checkpoint"):
        load_sam(tmp_path / "nope.pth")


def test_missing_extra_is_one_line_naming_the_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "segment_anything", None)  # import fails
    for call in (
        require_segment_anything,
        lambda: load_sam(tmp_path / "x.pth"),
        lambda: generate_masks(None, np.zeros((4, 4, 3), np.uint8), SamSettings()),
    ):
        with pytest.raises(
            SmafError, match=r"^SAM refinement needs .*: pip install 'smaf\[sam\]'$"
        ):
            call()

"""smaf.clip computes what CLIP-ES's own code computes (fixtures of its numbers).

How tests/fixtures/clip_es_voc.npz was made (recipe and patches in full in
tests/clip_es_fixtures.py): CLIP-ES (github.com/linyq2117/CLIP-ES, commit
3893f817be359c5ee1dbf8111cad381a532c7acc), checked out into /tmp and run on CPU with this
project's venv (torch 2.14.1; its other needs opencv-python-headless 5.1, ttach, lxml in a
separate ``pip install --target`` folder)::

    python generate_cams_voc12.py --img_root <3 images> --split_file <their ids> \\
        --cam_out_dir <out> --model tiny_clip.pt

after two patches that change nothing it computes: ``pkg_resources.packaging`` replaced by
``packaging`` in ``clip/clip.py``; in ``generate_cams_voc12.py`` the device set to ``"cpu"`` and
the float32 CAMs (``highres``, ``attn_highres``) and patch-grid maps (``grayscale_cam``,
``scale_cam_image([cam_refined])``) saved besides its float16 output. The model is
``tiny_clip_state()`` of tests/clip_checkpoint.py (seed 0; its digest is in the fixture), the
images VOC 2007_000032 (aeroplane, person), 2007_000063 (chair, dog) and 2007_000515 (bicycle,
car, person) of ../shared/data/voc2012-mini at 0.4x (PIL bilinear) with CLIP-ES's VOC prompts,
background words and template. The full-size maps are kept at every 3rd row and column.
``pack`` also stores CLIP-ES's tokenizer ids of the VOC prompts and its COCO prompt and
background lists (``clip_text.py``), against which this project's tables are checked.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from clip_checkpoint import state_digest, tiny_clip_state
from clip_es_fixtures import IDS, STRIDE, VOC_CLASSES, small_image
from coco_data import COCO_CATEGORIES

from smaf.clip import (
    ClipCAMConfig,
    background_words,
    build_clip,
    class_prompts,
    image_cams,
    text_features,
)
from smaf.clip.cams import grad_cams, grid_size, preprocess
from smaf.clip.tokenizer import tokenize

#: One torch thread: OpenMP threads spinning on shared cores slow tiny models tenfold.
pytestmark = pytest.mark.usefixtures("one_torch_thread")
FIXTURE = Path(__file__).parent / "fixtures" / "clip_es_voc.npz"
ATOL = 1e-4  # max abs difference on maps normalised to [0, 1]
ARGMAX = 0.995  # share of pixels whose best class agrees


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(FIXTURE) as z:
        ref = {k: z[k] for k in z.files}
    state = tiny_clip_state()
    assert state_digest(state) == str(ref["digest"]), "tiny_clip_state no longer gives its bits"
    return ref


@pytest.fixture(scope="module")
def prompts() -> tuple[list[str], list[str]]:
    cfg = ClipCAMConfig()
    classes = class_prompts(VOC_CLASSES, "voc")
    return classes, background_words(cfg, "voc", classes)


def test_prompts_and_tokens_are_clip_es(reference, prompts):
    classes, background = prompts
    assert [*classes, *background] == reference["token_words"].tolist()
    words = [ClipCAMConfig().template.format(w) for w in (*classes, *background)]
    assert torch.equal(tokenize(words), torch.from_numpy(reference["tokens"]).long())


def test_coco_prompts_and_background_are_clip_es(reference):
    prompts = class_prompts([name for _, name in COCO_CATEGORIES], "coco")
    assert prompts == reference["coco_words"].tolist()
    background = background_words(ClipCAMConfig(), "coco", prompts)
    assert background == reference["coco_background"].tolist()


def _agree(mine: np.ndarray, theirs: np.ndarray, what: str) -> None:
    assert mine.shape == theirs.shape, what
    diff = float(np.abs(mine - theirs).max())
    assert diff <= ATOL, f"{what}: max abs diff {diff:.2e}"
    if len(mine) > 1:
        agree = float((mine.argmax(0) == theirs.argmax(0)).mean())
        assert agree >= ARGMAX, f"{what}: argmax agreement {agree:.4f}"


@pytest.mark.voc
def test_cams_and_refined_cams_match_clip_es(reference, prompts, voc_mini_root):
    model = build_clip(tiny_clip_state())
    cfg = ClipCAMConfig()
    class_text = text_features(model, prompts[0], cfg.template)
    bg_text = text_features(model, prompts[1], cfg.template)
    for image_id in IDS:
        img = small_image(voc_mini_root, image_id)
        classes = reference[f"{image_id}/classes"].astype(np.int64)
        assert img.shape[:2] == tuple(reference[f"{image_id}/shape"])
        out = image_cams(model, img, classes, class_text, bg_text, cfg)
        assert out.classes.tolist() == classes.tolist()
        sub = (slice(None), slice(None, None, STRIDE), slice(None, None, STRIDE))
        _agree(out.cams.numpy()[sub], reference[f"{image_id}/cam"], f"{image_id} CAM")
        _agree(out.refined.numpy()[sub], reference[f"{image_id}/refined"], f"{image_id} refined")
        # The patch-grid maps, before the bilinear resize:
        x = preprocess(img, grid_size(img.shape[:2], 1.0, model.visual.patch_size))
        text = torch.cat([class_text[torch.from_numpy(classes)], bg_text])
        grid = grad_cams(model, x, text, len(classes), cfg)
        _agree(grid.cams.numpy(), reference[f"{image_id}/cam_grid"], f"{image_id} grid CAM")
        _agree(grid.refined.numpy(), reference[f"{image_id}/refined_grid"], f"{image_id} grid ref.")

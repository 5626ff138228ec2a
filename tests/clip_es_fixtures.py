"""Make tests/fixtures/clip_es_voc.npz: CLIP-ES's own CAMs of 3 VOC images with the tiny CLIP.

Nothing of CLIP-ES is in this repository; this script prepares its inputs and packs its outputs.
The full recipe (done once, on CPU, with the project's venv: torch 2.14.1, Pillow as installed;
CLIP-ES's extra needs installed with ``pip install --no-deps --target /tmp/clipes-deps
opencv-python-headless ttach lxml``, never into the project)::

    python tests/clip_es_fixtures.py prepare /tmp/clipfix
    git clone https://github.com/linyq2117/CLIP-ES /tmp/clip-es    # commit 3893f817be35...
    # two patches to run it on CPU and keep float32 maps (see below), then:
    cd /tmp/clip-es && PYTHONPATH=/tmp/clipes-deps python generate_cams_voc12.py \\
        --img_root /tmp/clipfix/voc/JPEGImages --split_file /tmp/clipfix/split.txt \\
        --cam_out_dir /tmp/clipfix/out --model /tmp/clipfix/tiny_clip.pt
    PYTHONPATH=/tmp/clip-es python tests/clip_es_fixtures.py pack /tmp/clipfix \\
        tests/fixtures/clip_es_voc.npz

Patches to CLIP-ES (commit 3893f817be359c5ee1dbf8111cad381a532c7acc):

* ``clip/clip.py``: ``from pkg_resources import packaging`` replaced by the ``packaging``
  package (setuptools' pkg_resources is not installed).
* ``generate_cams_voc12.py``, ``perform``: ``device_id = "cpu"`` instead of
  ``cuda:<process_id % n_gpus>`` (no GPU); the saved dict gets, besides its float16
  ``attn_highres``, the float32 ``highres`` CAMs (computed there but not saved),
  ``attn_highres`` in float32, and the patch-grid maps: ``grayscale_cam`` and
  ``scale_cam_image([cam_refined])``. Nothing it computes is changed.

Inputs: VOC images 2007_000032, 2007_000063, 2007_000515 of ../shared/data/voc2012-mini,
resized by 0.4 (PIL bilinear, rounded size) and written losslessly (PNG bytes under the .jpg
name CLIP-ES opens); their classes from the segmentation masks in XML annotations (CLIP-ES reads
labels from ``Annotations/<id>.xml``); the checkpoint of :func:`clip_checkpoint.tiny_clip_state`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))

VOC_ROOT = (
    Path(
        os.environ.get(
            "SMAF_VOC_MINI", Path(__file__).resolve().parents[2] / "shared/data/voc2012-mini"
        )
    )
    / "VOCdevkit/VOC2012"
)
IDS = ("2007_000032", "2007_000063", "2007_000515")
SCALE = 0.4  # image resize factor before CLIP (keeps the test fast)
STRIDE = 3  # full-size maps are stored at every 3rd row and column (fixture size)
VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip


def small_image(voc_root: Path, image_id: str) -> np.ndarray:
    """The fixture's input: the VOC JPEG resized by SCALE (PIL bilinear), uint8 RGB."""
    with Image.open(voc_root / "JPEGImages" / f"{image_id}.jpg") as img:
        img = img.convert("RGB")
        size = (round(img.width * SCALE), round(img.height * SCALE))
        return np.asarray(img.resize(size, Image.BILINEAR))


def present_classes(voc_root: Path, image_id: str) -> list[int]:
    """0-based classes present in the image's segmentation mask."""
    mask = np.asarray(Image.open(voc_root / "SegmentationClass" / f"{image_id}.png"))
    return [int(c) - 1 for c in np.unique(mask) if 0 < c < 255]


def prepare(out: Path) -> None:
    import torch
    from clip_checkpoint import state_digest, tiny_clip_state

    (out / "voc/JPEGImages").mkdir(parents=True, exist_ok=True)
    (out / "voc/Annotations").mkdir(parents=True, exist_ok=True)
    for i in IDS:
        img = small_image(VOC_ROOT, i)
        Image.fromarray(img).save(out / f"voc/JPEGImages/{i}.jpg", format="PNG")
        objs = "".join(
            f"<object><name>{VOC_CLASSES[c]}</name></object>" for c in present_classes(VOC_ROOT, i)
        )
        h, w = img.shape[:2]
        (out / f"voc/Annotations/{i}.xml").write_text(
            f"<annotation><size><width>{w}</width><height>{h}</height></size>{objs}</annotation>"
        )
    (out / "split.txt").write_text("\n".join(IDS) + "\n")
    state = tiny_clip_state()
    torch.save(state, out / "tiny_clip.pt")
    print(state_digest(state))


def pack(out: Path, npz: Path) -> None:
    import clip  # CLIP-ES's package, for its tokenizer's ids of the prompts
    import clip_text
    from clip_checkpoint import state_digest, tiny_clip_state

    arrays: dict[str, np.ndarray] = {"digest": np.asarray(state_digest(tiny_clip_state()))}
    words = [*clip_text.new_class_names, *clip_text.BACKGROUND_CATEGORY]
    arrays["tokens"] = clip.tokenize([f"a clean origami {w}." for w in words]).numpy()
    arrays["token_words"] = np.asarray(words)
    arrays["coco_words"] = np.asarray(clip_text.new_class_names_coco)  # COCO prompts, id order
    arrays["coco_background"] = np.asarray(clip_text.BACKGROUND_CATEGORY_COCO)
    for i in IDS:
        ref = np.load(out / f"out/{i}.npy", allow_pickle=True).item()
        order = np.argsort(ref["keys"])  # CLIP-ES lists classes in annotation order
        arrays[f"{i}/classes"] = ref["keys"][order].astype(np.int16)
        arrays[f"{i}/cam_grid"] = ref["cam_grid"][order].astype(np.float32)
        arrays[f"{i}/refined_grid"] = ref["refined_grid"][order].astype(np.float32)
        arrays[f"{i}/shape"] = np.asarray(ref["highres_f32"].shape[1:], dtype=np.int32)
        sub = (order, slice(None, None, STRIDE), slice(None, None, STRIDE))
        arrays[f"{i}/cam"] = ref["highres_f32"][sub].astype(np.float32)
        arrays[f"{i}/refined"] = ref["attn_highres_f32"][sub].astype(np.float32)
    np.savez_compressed(npz, **arrays)


if __name__ == "__main__":
    if sys.argv[1] == "prepare":
        prepare(Path(sys.argv[2]))
    else:
        pack(Path(sys.argv[2]), Path(sys.argv[3]))

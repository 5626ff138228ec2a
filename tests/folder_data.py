"""Build a user-style folder dataset from the real VOC 2012 subset, inside a test.

Not the VOC layout: images re-saved as a PNG / JPEG mix in nested folders with spaces and a
non-ASCII name, a grayscale image and an EXIF-rotated one among them, a CSV of class names,
masks for only part of the images, and a few images left out of the labels (test images).
Images are shrunk (long side ``max_side``) so that whole workflows run in minutes on a CPU.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image

from smaf.data.labels import labels_from_mask
from smaf.io import load_mask

#: VOC's 20 foreground classes, in label order.
VOC_FG = (
    "aeroplane bicycle bird boat bottle bus car cat chair cow diningtable dog horse motorbike "
    "person pottedplant sheep sofa train tvmonitor"
).split()


def _shrink(image: Image.Image, max_side: int, resample) -> Image.Image:
    w, h = image.size
    scale = max_side / max(w, h)
    return image.resize((max(1, round(w * scale)), max(1, round(h * scale))), resample)


def voc_ids(voc_root: Path, n: int, split: str = "subset_train") -> list[str]:
    ids = (voc_root / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()
    return ids[:n]


def build_folder_dataset(
    voc_root: Path,
    out: Path,
    *,
    n: int = 24,
    n_masks: int = 16,
    n_unlabelled: int = 3,
    max_side: int = 120,
) -> dict:
    """Write ``out/images``, ``out/masks``, ``out/labels.csv``; return what was written.

    Returns ``{"names": [...], "labels": {name: [classes]}, "masks": [names with a mask],
    "unlabelled": [...], "grey": name, "rotated": name, "classes": VOC_FG}``.
    """
    images, masks = out / "images", out / "masks"
    names, tags, with_mask = [], {}, []
    for k, image_id in enumerate(voc_ids(voc_root, n)):
        folder = ["plants & animals", "städte/2007", "misc"][k % 3]
        suffix = ".png" if k % 2 else ".jpg"
        name = f"{folder}/{image_id}{' copy' if k == 5 else ''}{suffix}"
        image = _shrink(
            Image.open(voc_root / "JPEGImages" / f"{image_id}.jpg"), max_side, Image.BILINEAR
        )
        mask_arr = load_mask(voc_root / "SegmentationClass" / f"{image_id}.png")
        mask = _shrink(Image.fromarray(mask_arr), max_side, Image.NEAREST)
        target = images / name
        target.parent.mkdir(parents=True, exist_ok=True)
        exif = None
        if k == 2:  # a greyscale image
            image = image.convert("L")
        if k == 4:  # stored rotated, with the EXIF tag that turns it upright
            image = image.transpose(Image.Transpose.ROTATE_90)
            exif = Image.Exif()
            exif[0x0112] = 8  # rotate 90° clockwise to display: undoes the stored rotation
        if exif is not None:
            image.save(target.with_suffix(".jpg") if suffix == ".png" else target, exif=exif)
            if suffix == ".png":
                name = name[: -len(suffix)] + ".jpg"
        else:
            image.save(target)
        names.append(name)
        classes = [VOC_FG[c] for c in np.flatnonzero(labels_from_mask(np.asarray(mask), 20))]
        if k < n - n_unlabelled:
            tags[name] = classes
        if k < n_masks:
            path = masks / Path(name).with_suffix(".png")
            path.parent.mkdir(parents=True, exist_ok=True)
            palette_mask = Image.fromarray(np.asarray(mask, np.uint8), mode="P")
            palette_mask.save(path)
            with_mask.append(name)
    with open(out / "labels.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "labels"])
        writer.writerows([n_, ";".join(c)] for n_, c in tags.items())
    info = {
        "names": names,
        "labels": tags,
        "masks": with_mask,
        "unlabelled": [n_ for n_ in names if n_ not in tags],
        "grey": names[2],
        "rotated": names[4],
        "classes": VOC_FG,
    }
    (out / "built.json").write_text(json.dumps(info, indent=2, ensure_ascii=False))
    return info


def write_coco_json(out: Path, tags: dict[str, list[str]], classes: list[str]) -> Path:
    """A COCO-format json whose annotations give exactly ``tags`` (one box per class)."""
    categories = [{"id": 10 + k, "name": c} for k, c in enumerate(classes)]
    cat_id = {c["name"]: c["id"] for c in categories}
    images, annotations = [], []
    for k, (name, names) in enumerate(tags.items(), start=1):
        images.append({"id": k, "file_name": name, "width": 1, "height": 1})
        for c in names:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": k,
                    "category_id": cat_id[c],
                    "bbox": [0, 0, 1, 1],
                    "area": 1,
                    "iscrowd": 0,
                }
            )
    path = out / "instances.json"
    path.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    return path


def write_noise_images(folder: Path, names, size=(24, 20), seed: int = 0) -> list[Path]:
    """Small random RGB PNGs ``folder/<name>`` (W x H ``size``; no VOC needed), each different."""
    rng = np.random.default_rng(seed)
    paths = []
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths

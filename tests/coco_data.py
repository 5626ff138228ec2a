"""A miniature MS-COCO 2014 made from real VOC 2012 images and masks (used by the COCO tests).

Each VOC mask becomes COCO instance annotations: one instance per connected component of each
class (the 255 boundary band belongs to none), RLE-encoded with ``pycocotools.mask.encode``;
the largest instance of one image is a crowd region with an uncompressed RLE (as COCO stores
crowds); one image gets two extra instances that overlap the others on purpose (a small dog
inside an object, a cat larger than everything behind them). The images are packed like the
official zips: ``train2014/COCO_train2014_<12-digit id>.jpg`` in ``train2014.zip``,
``annotations/instances_train2014.json`` in ``annotations_trainval2014.zip``.

VOC's 20 classes all exist in COCO; 14 under the same name, 6 under another
(:data:`VOC_TO_COCO`). The 80 categories and their ids are written out here from COCO's
category list, independently of the code under test.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils
from scipy import ndimage

#: COCO 2014's 80 categories: (category id, name), ids 1..90 with gaps.
COCO_CATEGORIES: tuple[tuple[int, str], ...] = (
    (1, "person"), (2, "bicycle"), (3, "car"), (4, "motorcycle"), (5, "airplane"),
    (6, "bus"), (7, "train"), (8, "truck"), (9, "boat"), (10, "traffic light"),
    (11, "fire hydrant"), (13, "stop sign"), (14, "parking meter"), (15, "bench"),
    (16, "bird"), (17, "cat"), (18, "dog"), (19, "horse"), (20, "sheep"), (21, "cow"),
    (22, "elephant"), (23, "bear"), (24, "zebra"), (25, "giraffe"), (27, "backpack"),
    (28, "umbrella"), (31, "handbag"), (32, "tie"), (33, "suitcase"), (34, "frisbee"),
    (35, "skis"), (36, "snowboard"), (37, "sports ball"), (38, "kite"), (39, "baseball bat"),
    (40, "baseball glove"), (41, "skateboard"), (42, "surfboard"), (43, "tennis racket"),
    (44, "bottle"), (46, "wine glass"), (47, "cup"), (48, "fork"), (49, "knife"),
    (50, "spoon"), (51, "bowl"), (52, "banana"), (53, "apple"), (54, "sandwich"),
    (55, "orange"), (56, "broccoli"), (57, "carrot"), (58, "hot dog"), (59, "pizza"),
    (60, "donut"), (61, "cake"), (62, "chair"), (63, "couch"), (64, "potted plant"),
    (65, "bed"), (67, "dining table"), (70, "toilet"), (72, "tv"), (73, "laptop"),
    (74, "mouse"), (75, "remote"), (76, "keyboard"), (77, "cell phone"), (78, "microwave"),
    (79, "oven"), (80, "toaster"), (81, "sink"), (82, "refrigerator"), (84, "book"),
    (85, "clock"), (86, "vase"), (87, "scissors"), (88, "teddy bear"), (89, "hair drier"),
    (90, "toothbrush"),
)  # fmt: skip
#: VOC class → COCO category name (the six renamed ones differ).
VOC_TO_COCO = {
    "aeroplane": "airplane", "bicycle": "bicycle", "bird": "bird", "boat": "boat",
    "bottle": "bottle", "bus": "bus", "car": "car", "cat": "cat", "chair": "chair",
    "cow": "cow", "diningtable": "dining table", "dog": "dog", "horse": "horse",
    "motorbike": "motorcycle", "person": "person", "pottedplant": "potted plant",
    "sheep": "sheep", "sofa": "couch", "train": "train", "tvmonitor": "tv",
}  # fmt: skip
VOC_NAMES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip
COCO_ID = {name: cat_id for cat_id, name in COCO_CATEGORIES}
#: Label value (1..80) of each COCO category: its position in increasing id order.
COCO_LABEL = {name: k for k, (_, name) in enumerate(COCO_CATEGORIES, start=1)}
#: VOC mask value (1..20) → expected COCO label value (1..80).
VOC_VALUE_TO_COCO_LABEL = {v: COCO_LABEL[VOC_TO_COCO[n]] for v, n in enumerate(VOC_NAMES, 1)}
ZIPS = ("train2014.zip", "val2014.zip", "annotations_trainval2014.zip")


def coco_stem(coco_set: str, voc_id: str) -> str:
    """``2007_000032`` → ``COCO_train2014_002007000032`` (a 12-digit id from the VOC id)."""
    return f"COCO_{coco_set}_{int(voc_id.replace('_', '')):012d}"


def uncompressed_rle(region: np.ndarray) -> dict:
    """COCO's uncompressed RLE of a 0/1 mask: run lengths in column-major order, from a 0 run."""
    flat = region.flatten(order="F").astype(np.uint8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0] == 1:
        counts = [0, *counts]
    return {"counts": [int(c) for c in counts], "size": list(region.shape)}


def _compressed_rle(region: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(region.astype(np.uint8)))
    return {"counts": rle["counts"].decode("ascii"), "size": [int(s) for s in rle["size"]]}


@dataclass
class MiniSet:
    """One COCO set of the miniature: its json and where each image's VOC files came from."""

    name: str
    json: dict
    voc_ids: dict[str, str] = field(default_factory=dict)  # stem -> VOC id
    crowd: dict[str, np.ndarray] = field(default_factory=dict)  # stem -> crowd region
    rects: dict[str, list[tuple[str, np.ndarray]]] = field(default_factory=dict)  # stem -> added
    empty: list[str] = field(default_factory=list)  # stems without annotations


def build_set(
    voc_root: Path,
    coco_set: str,
    voc_ids: list[str],
    *,
    empty_ids: list[str],
    crowd_id: str | None = None,
    overlap_id: str | None = None,
) -> MiniSet:
    """The instances json of ``voc_ids`` (annotated) and ``empty_ids`` (listed, no annotations)."""
    images, anns = [], []
    mini = MiniSet(coco_set, {})
    for voc_id in voc_ids + empty_ids:
        stem = coco_stem(coco_set, voc_id)
        coco_id = int(stem.rsplit("_", 1)[1])
        mini.voc_ids[stem] = voc_id
        voc = np.asarray(Image.open(voc_root / "SegmentationClass" / f"{voc_id}.png"))
        h, w = voc.shape
        images.append(
            {
                "license": 1,
                "file_name": f"{stem}.jpg",
                "coco_url": f"http://images.cocodataset.org/{coco_set}/{stem}.jpg",
                "height": h,
                "width": w,
                "date_captured": "2013-11-14 11:18:45",
                "id": coco_id,
            }
        )
        if voc_id in empty_ids:
            mini.empty.append(stem)
            continue
        instances = []
        for value in sorted(set(np.unique(voc).tolist()) - {0, 255}):
            components, n = ndimage.label(voc == value)
            for c in range(1, n + 1):
                instances.append((VOC_TO_COCO[VOC_NAMES[value - 1]], components == c))
        if voc_id == overlap_id:
            # A small dog well inside the largest instance, and a cat larger than anything.
            _, biggest = max(instances, key=lambda t: t[1].sum())
            depth = ndimage.distance_transform_edt(biggest)  # px to the object's outline
            y, x = np.unravel_index(int(np.argmax(depth)), depth.shape)
            assert depth[y, x] > 6  # the 8x8 dog lies wholly inside the object
            dog = np.zeros_like(biggest)
            dog[y - 4 : y + 4, x - 4 : x + 4] = True
            cat = np.zeros_like(biggest)
            cat[h // 4 : h - h // 4, :] = True
            cat[:, : w // 3] = True
            assert cat.sum() > max(r.sum() for _, r in instances) > dog.sum() > 0
            mini.rects[stem] = [("dog", dog), ("cat", cat)]
            instances += mini.rects[stem]
        largest = max(range(len(instances)), key=lambda i: instances[i][1].sum())
        for k, (name, region) in enumerate(instances):
            is_crowd = voc_id == crowd_id and k == largest
            if is_crowd:
                mini.crowd[stem] = region
            ys, xs = np.nonzero(region)
            anns.append(
                {
                    "segmentation": uncompressed_rle(region)
                    if is_crowd
                    else _compressed_rle(region),
                    "area": float(region.sum()),
                    "iscrowd": int(is_crowd),
                    "image_id": coco_id,
                    "bbox": [
                        float(xs.min()),
                        float(ys.min()),
                        float(np.ptp(xs) + 1),
                        float(np.ptp(ys) + 1),
                    ],  # fmt: skip
                    "category_id": COCO_ID[name],
                    "id": 900000 + len(anns),
                }
            )
    categories = [
        {"supercategory": "thing", "id": cat_id, "name": name} for cat_id, name in COCO_CATEGORIES
    ]
    mini.json = {
        "info": {"description": "miniature COCO 2014 from VOC 2012 (tests)", "year": 2014},
        "images": images,
        "licenses": [{"url": "http://creativecommons.org/licenses/by-nc-sa/2.0/", "id": 1}],
        "annotations": anns,
        "categories": categories,
    }
    return mini


def write_zips(voc_root: Path, sets: list[MiniSet], out: Path) -> dict[str, Path]:
    """The three official zips of ``sets`` in ``out``: images and annotations."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for mini in sets:
        path = out / f"{mini.name}.zip"
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr(f"{mini.name}/", "")
            for stem, voc_id in mini.voc_ids.items():
                zf.write(voc_root / "JPEGImages" / f"{voc_id}.jpg", f"{mini.name}/{stem}.jpg")
        paths[path.name] = path
    path = out / "annotations_trainval2014.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("annotations/", "")
        for mini in sets:
            zf.writestr(f"annotations/instances_{mini.name}.json", json.dumps(mini.json))
    paths[path.name] = path
    return paths


def write_layout(voc_root: Path, sets: list[MiniSet], root: Path) -> Path:
    """The extracted layout (``root/train2014``, ``root/annotations``), without zips."""
    for mini in sets:
        (root / mini.name).mkdir(parents=True, exist_ok=True)
        for stem, voc_id in mini.voc_ids.items():
            (root / mini.name / f"{stem}.jpg").write_bytes(
                (voc_root / "JPEGImages" / f"{voc_id}.jpg").read_bytes()
            )
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for mini in sets:
        (root / "annotations" / f"instances_{mini.name}.json").write_text(json.dumps(mini.json))
    return root


def write_saliency(voc_root: Path, sets: list[MiniSet], folder: Path) -> None:
    """Grey saliency maps (255 on the VOC objects) for every image, as EPS's are named."""
    folder.mkdir(parents=True, exist_ok=True)
    for mini in sets:
        for stem, voc_id in mini.voc_ids.items():
            voc = np.asarray(Image.open(voc_root / "SegmentationClass" / f"{voc_id}.png"))
            sal = np.where((voc > 0) & (voc < 255), 255, 0).astype(np.uint8)
            Image.fromarray(sal, mode="L").save(folder / f"{stem}.png")

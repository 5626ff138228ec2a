"""MS-COCO instance annotations → semantic label masks, in shards (the ``coco`` source's ground truth).

COCO ships instance annotations (``annotations/instances_<set>.json``: polygons for objects,
run-length encodings for crowd regions); WSSS evaluates on semantic masks. The convention here
is the one of coco2voc (github.com/alicranck/coco2voc, ``annotations_to_seg``), the converter
the WSSS COCO works point to for their ground truth (ToCo, DuPL, WeakTr, MCTformer's followers:
"Generating VOC style segmentation labels for COCO"):

* **labels**: 0 background, 1..80 the categories in increasing category id (the official
  order: 1 person, 2 bicycle, ..., 80 toothbrush; COCO's ids run 1..90 with gaps). coco2voc
  writes the raw category ids instead; the WSSS code bases remap them to 1..80 when loading.
* **overlaps**: every annotation of an image is painted in order of decreasing ``area`` (the
  annotation's own ``area`` field, as coco2voc sorts by), each overwriting what lies beneath,
  so smaller objects stay on top of the larger ones they overlap. Equal areas: the annotation
  listed first in the file ends on top (coco2voc keeps the first painted of an area-sorted
  list).
* **crowd regions** (``iscrowd: 1``) are painted like any instance with their class, as
  coco2voc does; ``crowd="ignore"`` paints them 255 instead (evaluation skips those pixels).
  COCO has no 255 boundary band: with the default every pixel is 0..80.
* **images without annotations** get an all-background mask, so every image of the file has one
  (the dataset index leaves those images out of training and evaluation, as EPS's lists do).

Masks are palette PNGs (:func:`smaf.io.save_mask`) named after the image file
(``COCO_train2014_000000000009.png``). :func:`convert_masks` converts one shard: block ``k`` of
``n`` contiguous blocks of the images sorted by id, skipping masks a previous run of the same
shard with the same settings wrote (it is idempotent and resumable), and :func:`check_masks`
gathers the shards' markers and checks that every image has its mask.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import numpy as np
from pycocotools import mask as mask_utils

from smaf.errors import DataError
from smaf.io import atomic_write, save_mask
from smaf.progress import Progress

log = logging.getLogger(__name__)

Crowd = Literal["class", "ignore"]
#: The value crowd regions get with ``crowd="ignore"``.
IGNORE = 255
#: Version of the conversion convention, part of every shard's settings stamp.
CONVENTION = "coco2voc-area-desc/1"


@dataclass
class CocoAnnotations:
    """One validated ``instances_<set>.json``.

    Attributes:
        path: the file.
        category_ids: COCO category ids in increasing order; label ``k`` is ``category_ids[k-1]``.
        category_names: their names, same order (``traffic light``, ...).
        images: image id → ``{"file_name", "width", "height"}``, in file order.
        anns: image id → its annotations in file order (images without any: absent).
    """

    path: Path
    category_ids: list[int]
    category_names: list[str]
    images: dict[int, dict[str, Any]]
    anns: dict[int, list[dict[str, Any]]]

    @property
    def label_of(self) -> dict[int, int]:
        """Category id → label value 1..C."""
        return {cat: k for k, cat in enumerate(self.category_ids, start=1)}

    def sorted_ids(self) -> list[int]:
        """Image ids in increasing order (the order shards are cut from)."""
        return sorted(self.images)

    def stem(self, image_id: int) -> str:
        """The image's file name without extension: its id in the dataset index."""
        return PurePosixPath(self.images[image_id]["file_name"]).stem

    def labels(self, image_id: int) -> np.ndarray:
        """Image-level labels, float32 ``[C]`` of 0/1: the categories of all its annotations,
        crowd regions included."""
        out = np.zeros(len(self.category_ids), np.float32)
        label_of = self.label_of
        for ann in self.anns.get(image_id, ()):
            out[label_of[ann["category_id"]] - 1] = 1.0
        return out


def _bad(path: Path, what: str) -> DataError:
    return DataError(
        f"annotation file {path}: {what}. The file is damaged or not an official COCO "
        "instances file: re-extract annotations_trainval2014.zip (or fix the file)."
    )


def _int_field(path: Path, entry: Mapping[str, Any], key: str, what: str) -> int:
    value = entry.get(key) if isinstance(entry, Mapping) else None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(path, f"{what} has no integer `{key}` ({str(entry)[:80]})")
    return value


def load_annotations(path: str | os.PathLike[str]) -> CocoAnnotations:
    """Read and check a COCO instances file; nothing is converted until all of it is sound.

    Raises:
        DataError: naming the file: missing, not JSON (e.g. truncated), not COCO's layout, an
            annotation whose image or category is not listed, an image id listed twice.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise DataError(
            f"annotation file not found: {path}; extract annotations_trainval2014.zip into the "
            "dataset's root (or run the download rules)."
        ) from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise DataError(
            f"annotation file {path} is not valid JSON ({exc}); it is truncated or damaged: "
            "re-extract annotations_trainval2014.zip."
        ) from None
    if not isinstance(data, dict) or not all(
        isinstance(data.get(k), list) for k in ("images", "annotations", "categories")
    ):
        raise _bad(path, "no `images`, `annotations` and `categories` lists")

    names: dict[int, str] = {}
    for cat in data["categories"]:
        cat_id = _int_field(path, cat, "id", "a category")
        if cat_id in names:
            raise _bad(path, f"category id {cat_id} is listed twice")
        names[cat_id] = str(cat.get("name", cat_id))
    images: dict[int, dict[str, Any]] = {}
    for im in data["images"]:
        image_id = _int_field(path, im, "id", "an image")
        if image_id in images:
            raise _bad(path, f"image id {image_id} is listed twice")
        w = _int_field(path, im, "width", f"image {image_id}")
        h = _int_field(path, im, "height", f"image {image_id}")
        if w <= 0 or h <= 0 or not isinstance(im.get("file_name"), str):
            raise _bad(path, f"image {image_id} has no file name or a size of {w}x{h}")
        images[image_id] = {"file_name": im["file_name"], "width": w, "height": h}
    anns: dict[int, list[dict[str, Any]]] = {}
    for ann in data["annotations"]:
        ann_id = ann.get("id") if isinstance(ann, Mapping) else None
        image_id = _int_field(path, ann, "image_id", f"annotation {ann_id}")
        cat_id = _int_field(path, ann, "category_id", f"annotation {ann_id}")
        if image_id not in images:
            raise _bad(path, f"annotation {ann_id} points at image id {image_id}, not in `images`")
        if cat_id not in names:
            raise _bad(
                path,
                f"annotation {ann_id} has category id {cat_id}, not in `categories` "
                f"(ids {min(names, default=0)}..{max(names, default=0)})",
            )
        if not isinstance(ann.get("segmentation"), (list, dict)):
            raise _bad(path, f"annotation {ann_id} has no `segmentation`")
        anns.setdefault(image_id, []).append(ann)
    ids = sorted(names)
    return CocoAnnotations(path, ids, [names[i] for i in ids], images, anns)


# ---------------------------------------------------------------------------------- painting
def decode_segmentation(segmentation: Any, height: int, width: int) -> np.ndarray:
    """A COCO ``segmentation`` (polygons, uncompressed or compressed RLE) → uint8 ``[H, W]`` 0/1.

    As ``pycocotools.coco.COCO.annToRLE`` reads it: the parts of a polygon list are merged.
    """
    if isinstance(segmentation, list):
        if not segmentation:
            return np.zeros((height, width), np.uint8)
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    return mask_utils.decode(rle)


def semantic_mask(
    anns: Sequence[Mapping[str, Any]],
    height: int,
    width: int,
    label_of: Mapping[int, int],
    *,
    crowd: Crowd = "class",
    source: str | os.PathLike[str] = "?",
) -> np.ndarray:
    """One image's annotations painted into a label map, uint8 ``[H, W]`` (module docstring).

    Args:
        anns: the image's annotations, in file order.
        label_of: category id → label value (1..C).
        crowd: ``"class"``: crowd regions get their class; ``"ignore"``: 255.
        source: the annotation file, for messages.

    Raises:
        DataError: an annotation's segmentation cannot be decoded or has another size.
    """
    if crowd not in ("class", "ignore"):
        raise ValueError(f"crowd must be 'class' or 'ignore', got {crowd!r}")
    out = np.zeros((height, width), np.uint8)
    # Ascending area, stable: ties keep file order; painted in reverse, the smallest last.
    order = sorted(range(len(anns)), key=lambda i: float(anns[i].get("area", 0.0)))
    for i in reversed(order):
        ann = anns[i]
        try:
            region = decode_segmentation(ann["segmentation"], height, width)
        except Exception as exc:  # pycocotools raises bare Exception / TypeError / ValueError
            raise DataError(
                f"annotation file {source}: annotation {ann.get('id')} has a segmentation "
                f"pycocotools cannot decode ({exc}); re-extract the annotations."
            ) from None
        if region.shape != (height, width):
            h, w = region.shape[:2]
            raise DataError(
                f"annotation file {source}: annotation {ann.get('id')} is {w}x{h} but its image "
                f"{ann.get('image_id')} is {width}x{height}; re-extract the annotations."
            )
        ignore = crowd == "ignore" and bool(ann.get("iscrowd", 0))
        out[region.astype(bool)] = IGNORE if ignore else label_of[ann["category_id"]]
    return out


# --------------------------------------------------------------------------------- the shards
def shard_bounds(n_items: int, shard: tuple[int, int]) -> tuple[int, int]:
    """``[start, end)`` of shard ``k`` of ``n`` (``1 <= k <= n``): contiguous, sizes differ by <= 1."""
    k, n = shard
    if not 1 <= k <= n:
        raise ValueError(f"shard must be (k, n) with 1 <= k <= n, got {shard}")
    return (k - 1) * n_items // n, k * n_items // n


def _settings(annotations: CocoAnnotations, crowd: Crowd) -> dict[str, Any]:
    """What a shard's masks depend on: the file (as extracted) and the convention."""
    st = annotations.path.stat()
    return {
        "annotations": str(annotations.path.resolve()),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "crowd": crowd,
        "convention": CONVENTION,
    }


def convert_masks(
    annotation_json: str | os.PathLike[str] | CocoAnnotations,
    out_dir: str | os.PathLike[str],
    *,
    shard: tuple[int, int] = (1, 1),
    crowd: Crowd = "class",
    marker: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Write the masks of shard ``k`` of ``n`` of an instances file into ``out_dir``.

    The images, sorted by id, are cut into ``n`` contiguous blocks; block ``k`` (1-based) is
    converted. Resumable: a mask already in ``out_dir`` is kept when this shard's settings stamp
    (``out_dir/.shard<k>of<n>.json``: the file's path, size and mtime, ``crowd``, the
    convention) says an earlier run with the same settings wrote it; any other mask of the
    shard is (re)written, atomically. ``marker`` (JSON: the counts and the shard's image stems,
    read by :func:`check_masks`) is written last.

    Returns:
        ``{"shard", "total_images", "start", "end", "written", "skipped",
        "without_annotations", "crowd", "annotations", "stems"}``.

    Raises:
        DataError: see :func:`load_annotations` and :func:`semantic_mask`; the whole file is
            checked before any mask is written.
    """
    ann = (
        annotation_json
        if isinstance(annotation_json, CocoAnnotations)
        else load_annotations(annotation_json)
    )
    if crowd not in ("class", "ignore"):
        raise ValueError(f"crowd must be 'class' or 'ignore', got {crowd!r}")
    out_dir = Path(out_dir)
    ids = ann.sorted_ids()
    start, end = shard_bounds(len(ids), shard)
    k, n = shard
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = out_dir / f".shard{k}of{n}.json"
    settings = _settings(ann, crowd)
    try:
        resume = json.loads(stamp.read_text()) == settings
    except (FileNotFoundError, ValueError):
        resume = False
    if not resume:
        # Masks on disk may come from other settings: every mask of the shard is rewritten.
        with atomic_write(stamp) as tmp:
            tmp.write_text(json.dumps(settings, indent=1) + "\n")
    have = set(os.listdir(out_dir)) if resume else set()
    label_of = ann.label_of
    counts = {"written": 0, "skipped": 0, "without_annotations": 0}
    stems = []
    meter = Progress(
        f"coco masks {ann.path.name} shard {k}/{n}", end - start, interval_s=30, log=log.info
    )
    for image_id in ids[start:end]:
        stem = ann.stem(image_id)
        stems.append(stem)
        anns = ann.anns.get(image_id, [])
        counts["without_annotations"] += not anns
        if f"{stem}.png" in have:
            counts["skipped"] += 1
            meter.update(1, counted=False)
            continue
        im = ann.images[image_id]
        mask = semantic_mask(
            anns, im["height"], im["width"], label_of, crowd=crowd, source=ann.path
        )
        save_mask(out_dir / f"{stem}.png", mask)
        counts["written"] += 1
        meter.update(1)
    meter.close()
    result = {
        "annotations": str(ann.path),
        "shard": [k, n],
        "total_images": len(ids),
        "start": start,
        "end": end,
        **counts,
        "crowd": crowd,
        "stems": stems,
    }
    log.info(
        "%s shard %d/%d: images %d..%d of %d, %d masks written, %d kept from an earlier run, "
        "%d images without annotations (all-background masks)",
        ann.path.name,
        k,
        n,
        start,
        end - 1,
        len(ids),
        counts["written"],
        counts["skipped"],
        counts["without_annotations"],
    )
    if marker is not None:
        with atomic_write(marker) as tmp:
            tmp.write_text(json.dumps(result) + "\n")
    return result


def check_masks(
    markers: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    out: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Gather the shard markers of one instances file: all ``n`` shards, one conversion, every
    image's mask in ``out_dir``. Writes the summary to ``out`` (JSON) when given.

    Returns:
        ``{"annotations", "images", "with_annotations", "without_annotations", "crowd",
        "shards"}``.

    Raises:
        DataError: a marker is unreadable, shards are missing or disagree, masks are missing.
    """
    out_dir = Path(out_dir)
    shards = []
    for path in markers:
        try:
            shards.append(json.loads(Path(path).read_text()))
        except (FileNotFoundError, ValueError) as exc:
            raise DataError(
                f"shard marker {path} is missing or damaged ({exc}); delete it and rerun the "
                "coco_masks rule."
            ) from None
    if not shards:
        raise DataError(f"no shard markers given for the masks in {out_dir}.")
    first = shards[0]
    n = first["shard"][1]
    same = ("annotations", "total_images", "crowd")
    odd = [s["shard"] for s in shards if any(s[key] != first[key] for key in same)]
    if odd or sorted(s["shard"][0] for s in shards) != list(range(1, n + 1)):
        raise DataError(
            f"the shard markers of {out_dir} do not form one conversion of "
            f"{first['annotations']} in {n} shards (got shards "
            f"{sorted(tuple(s['shard']) for s in shards)}); delete them and rerun coco_masks."
        )
    shards.sort(key=lambda s: s["shard"][0])
    tiles = [(s["start"], s["end"]) for s in shards]
    if (
        tiles[0][0] != 0
        or tiles[-1][1] != first["total_images"]
        or any(a[1] != b[0] for a, b in pairwise(tiles))
    ):
        raise DataError(f"the shards of {out_dir} do not cover the images exactly: {tiles}.")
    have = set(os.listdir(out_dir)) if out_dir.is_dir() else set()
    missing = [stem for s in shards for stem in s["stems"] if f"{stem}.png" not in have]
    if missing:
        raise DataError(
            f"{len(missing)} masks are missing from {out_dir} (first: {missing[0]}.png) although "
            "their shards finished: delete the shard markers and rerun coco_masks."
        )
    without = sum(s["without_annotations"] for s in shards)
    summary = {
        "annotations": first["annotations"],
        "images": first["total_images"],
        "with_annotations": first["total_images"] - without,
        "without_annotations": without,
        "crowd": first["crowd"],
        "shards": n,
    }
    log.info("masks in %s complete: %s", out_dir, json.dumps(summary))
    if out is not None:
        with atomic_write(out) as tmp:
            tmp.write_text(json.dumps(summary, indent=2) + "\n")
    return summary

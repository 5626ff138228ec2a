"""The MS-COCO 2014 source: the official layout, instance annotations and converted masks → the index.

The layout is the one the official zips unpack to (``root`` holds all three)::

    train2014/COCO_train2014_<12-digit id>.jpg     train2014.zip (82,783 images)
    val2014/COCO_val2014_<12-digit id>.jpg         val2014.zip (40,504 images)
    annotations/instances_{train,val}2014.json     annotations_trainval2014.zip

plus the semantic masks converted from the annotations (:mod:`smaf.data.coco_masks`, rule
``coco_masks``) in ``masks_dir/<set>/<stem>.png`` and, for EPS, optional saliency maps
``saliency_dir/<stem>.png`` (EPS's PFAN maps for COCO: a manual download). An image's id in
the index is its file name without extension (``COCO_train2014_000000000009``), as in EPS's
lists and saliency maps.

Settings (``datasets.<name>``)::

    source: coco
    root: resources/coco2014
    num_classes: 80
    masks_dir: resources/coco2014/masks      # default resources/<name>/masks
    saliency_dir: resources/coco2014/SALImages
    crowd: class                             # or ignore (255); see smaf.data.coco_masks
    splits: {train_aug: train2014, train: train2014, val: val2014}

A split is a COCO set (every image of ``<set>`` with at least one annotation) or the path of a
list of image ids (one per line, e.g. a seed-evaluation subset). Images without any annotation
have no image-level label: they are left out of every split, and ``dataset.json`` records how
many (``images_without_annotations``). With the defaults the splits are EPS's
(``metadata/coco/train.txt``: 82,081 train2014 images, ``val.txt``: 40,137 val2014 images);
EPS evaluates its COCO seeds on its whole training list, so ``train`` is ``train_aug``.
Labels: 0 background, 1..80 the categories in increasing category id.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from smaf.data.coco_masks import CocoAnnotations, load_annotations
from smaf.data.index import DatasetIndex, ImageRecord
from smaf.errors import ConfigError, DataError
from smaf.io import read_listed_ids

log = logging.getLogger(__name__)

TRAINVAL_ROLES = ("train_aug", "train", "val")
#: The default splits: EPS's (train2014 for training and seed evaluation, val2014 for DeepLab).
DEFAULT_SPLITS = {"train_aug": "train2014", "train": "train2014", "val": "val2014"}
#: Roles that are evaluated, so every image needs its converted mask.
_ROLES_WITH_MASKS = ("train", "val")
#: A COCO set name (the folder and the ``instances_<set>.json`` it goes with).
_SET = re.compile(r"^(train|val)\d{4}$")


def _first(items: Sequence[str], n: int = 5) -> str:
    shown = ", ".join(items[:n])
    return shown + (f", ... ({len(items)} in all)" if len(items) > n else "")


def masks_dir(settings: Mapping[str, Any], name: str) -> Path:
    """Where the converted masks live (``masks_dir``, default ``resources/<name>/masks``)."""
    return Path(settings.get("masks_dir") or Path("resources") / name / "masks")


def annotation_path(root: str | os.PathLike[str], coco_set: str) -> Path:
    """``<root>/annotations/instances_<set>.json``."""
    return Path(root) / "annotations" / f"instances_{coco_set}.json"


def splits_of(settings: Mapping[str, Any]) -> dict[str, str]:
    """Role → COCO set or list file, the defaults filled in."""
    return {**DEFAULT_SPLITS, **dict(settings.get("splits") or {})}


def coco_sets(settings: Mapping[str, Any]) -> list[str]:
    """The COCO sets the splits name (``train2014``, ``val2014``), in role order."""
    return list(dict.fromkeys(v for v in splits_of(settings).values() if _SET.match(str(v))))


def _check_images(ann: CocoAnnotations, folder: Path, ids: Sequence[int]) -> None:
    """Every image of ``ids`` is a file in ``folder`` (one listdir)."""
    if not folder.is_dir():
        raise DataError(
            f"image folder not found: {folder}; extract {folder.name}.zip into the dataset's "
            "root (or run the download rules)."
        )
    have = set(os.listdir(folder))
    missing = [ann.images[i]["file_name"] for i in ids if ann.images[i]["file_name"] not in have]
    if missing:
        raise DataError(
            f"{len(missing)} of {len(ids)} images listed in {ann.path} are missing from "
            f"{folder} (first: {folder / missing[0]}). Re-extract {folder.name}.zip."
        )


def build(
    settings: Mapping[str, Any], *, name: str, roles: Sequence[str] = TRAINVAL_ROLES
) -> DatasetIndex:
    """The COCO dataset described by ``settings`` (a ``datasets:`` entry) as an index."""
    if tuple(roles) == ("test",):
        raise DataError(
            f"dataset {name}: the coco source has no test images (test2014 has no annotations "
            "and no evaluation server here); no rule of the workflow asks for them, so a target "
            "named results/<dataset>/data/test_index.csv or a submission archive is the mistake."
        )
    if set(roles) != set(TRAINVAL_ROLES):
        raise ValueError(f"roles must be {TRAINVAL_ROLES} or ('test',), got {tuple(roles)}")
    root = Path(settings["root"])
    splits = splits_of(settings)
    sets = coco_sets(settings)
    if not sets:
        raise ConfigError(
            f"datasets.{name}.splits: no split names a COCO set (train2014, val2014): list "
            "files pick images from the sets the other splits name."
        )

    loaded: dict[str, CocoAnnotations] = {}
    by_stem: dict[str, tuple[str, int]] = {}  # annotated images: stem -> (set, COCO id)
    without: dict[str, int] = {}
    for coco_set in sets:
        ann = load_annotations(annotation_path(root, coco_set))
        if loaded and ann.category_ids != next(iter(loaded.values())).category_ids:
            raise DataError(
                f"{ann.path} lists other categories than {next(iter(loaded.values())).path}: "
                "the labels would differ between the sets. Use the files of one COCO release."
            )
        annotated = [i for i in ann.sorted_ids() if ann.anns.get(i)]
        _check_images(ann, root / coco_set, annotated)
        without[coco_set] = len(ann.images) - len(annotated)
        by_stem.update({ann.stem(i): (coco_set, i) for i in annotated})
        loaded[coco_set] = ann
        log.info(
            "%s: %d images, %d with annotations, %d without (left out of every split)",
            coco_set,
            len(ann.images),
            len(annotated),
            without[coco_set],
        )
    first = next(iter(loaded.values()))
    num_classes = int(settings.get("num_classes", len(first.category_ids)))
    if num_classes != len(first.category_ids):
        raise ConfigError(
            f"datasets.{name}.num_classes is {num_classes} but {first.path} has "
            f"{len(first.category_ids)} categories; set num_classes: {len(first.category_ids)}."
        )

    ids: dict[str, list[str]] = {}
    for role in TRAINVAL_ROLES:
        value = str(splits[role])
        if value in loaded:
            ann = loaded[value]
            ids[role] = [ann.stem(i) for i in ann.sorted_ids() if ann.anns.get(i)]
            continue
        ids[role] = read_listed_ids(
            value,
            by_stem,
            role=role,
            where=f"annotated images of {', '.join(sets)}",
            hint="ids are file names without extension, e.g. COCO_train2014_000000000009.",
        )

    mask_root = masks_dir(settings, name)
    saliency_dir = Path(settings["saliency_dir"]) if settings.get("saliency_dir") else None
    order = list(dict.fromkeys(ids["train_aug"] + ids["train"] + ids["val"]))
    listings = {s: _listing(mask_root / s) for s in sets}
    saliency = _listing(saliency_dir) if saliency_dir is not None else set()
    for role in _ROLES_WITH_MASKS:
        no_mask = [i for i in ids[role] if f"{i}.png" not in listings[by_stem[i][0]]]
        if no_mask:
            coco_set = by_stem[no_mask[0]][0]
            raise DataError(
                f"{len(no_mask)} {role} images have no converted mask in {mask_root / coco_set} "
                f"({_first(no_mask)}); convert them first: snakemake "
                f"resources/{name}/masks/{coco_set}.done (rule coco_masks)."
            )
    member = {role: set(v) for role, v in ids.items()}
    records = []
    for stem in order:
        coco_set, coco_id = by_stem[stem]
        ann = loaded[coco_set]
        im = ann.images[coco_id]
        mask = mask_root / coco_set / f"{stem}.png"
        records.append(
            ImageRecord(
                image_id=stem,
                image=str(root / coco_set / im["file_name"]),
                mask=str(mask) if f"{stem}.png" in listings[coco_set] else "",
                saliency=str(saliency_dir / f"{stem}.png") if f"{stem}.png" in saliency else "",
                roles={r for r in TRAINVAL_ROLES if stem in member[r]},
                labels=ann.labels(coco_id),
                width=im["width"],
                height=im["height"],
            )
        )
    info = {
        "name": name,
        "root": str(root),
        "annotations": {s: str(a.path) for s, a in loaded.items()},
        "split_lists": {r: splits[r] for r in TRAINVAL_ROLES},
        "masks_dir": str(mask_root),
        "saliency_dir": str(saliency_dir) if saliency_dir is not None else None,
        "crowd": settings.get("crowd", "class"),
        "images_in_sets": {s: len(a.images) for s, a in loaded.items()},
        "images_without_annotations": without,
    }
    return DatasetIndex.build(records, ["background", *first.category_names], info)


def _listing(folder: Path) -> set[str]:
    return set(os.listdir(folder)) if folder.is_dir() else set()


def watched(settings: Mapping[str, Any]) -> list[Path]:
    """Files and folders whose listing (names, sizes, mtimes) the index depends on.

    The converted masks are not among them: the ``coco_masks`` rule makes them, and Snakemake
    tracks its outputs.
    """
    root = Path(settings["root"])
    paths = []
    for coco_set in coco_sets(settings):
        paths += [root / coco_set, annotation_path(root, coco_set)]
    paths += [Path(v) for v in splits_of(settings).values() if not _SET.match(str(v))]
    if settings.get("saliency_dir"):
        paths.append(Path(settings["saliency_dir"]))
    return list(dict.fromkeys(paths))

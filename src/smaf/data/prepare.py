"""The dataset stage's index: check a VOC-layout dataset once, write what later stages read.

Every later stage reads the three split lists, the image-label CSV and ``dataset.json`` written
here instead of re-discovering the dataset, so problems (missing images, a val/train_aug
overlap, an image with no class) surface once, before hours of training, with one message.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from smaf.data.voc import VOC_CLASSES, VOCLayout, image_labels, write_labels_csv
from smaf.errors import DataError
from smaf.io import atomic_write, write_id_list

log = logging.getLogger(__name__)

#: Split roles of every dataset, in the order their lists are written.
ROLES = ("train_aug", "train", "val")
#: Roles whose images must have ground-truth masks (they are evaluated).
ROLES_WITH_MASKS = ("train", "val")


def class_names_for(layout: VOCLayout, num_classes: int) -> list[str]:
    """Class names, background first: the CSV header if present, else VOC's, else generic."""
    csv_path = layout.root / "cls_labels.csv"
    if csv_path.is_file():
        with open(csv_path, newline="") as f:
            header = next(csv.reader(f), [])
        if len(header) == num_classes + 1:
            return ["background", *header[1:]]
    if num_classes == len(VOC_CLASSES) - 1:
        return list(VOC_CLASSES)
    return ["background", *(f"class_{k}" for k in range(1, num_classes + 1))]


def _train_aug_ids(layout: VOCLayout, list_name: str, val_ids: Sequence[str]) -> list[str]:
    """train_aug ids: the list when present, else every SegmentationClassAug mask minus val.

    The field's train_aug (10,582 ids) is exactly the SBD + VOC masks (12,031) minus VOC val,
    and the SegmentationClassAug download ships the masks but no list.
    """
    if (layout.split_dir / f"{list_name}.txt").is_file():
        return layout.split_ids(list_name)
    if layout.aug_mask_dir is None or not layout.aug_mask_dir.is_dir():
        # Let split_ids raise its message naming the missing list.
        return layout.split_ids(list_name)
    val = set(val_ids)
    ids = sorted(p[:-4] for p in os.listdir(layout.aug_mask_dir) if p.endswith(".png"))
    ids = [i for i in ids if i not in val]
    log.info(
        "no %s.txt in %s: derived train_aug from %d SegmentationClassAug masks minus val",
        list_name,
        layout.split_dir,
        len(ids),
    )
    return ids


def prepare_dataset(
    *,
    root: str | os.PathLike[str],
    splits: Mapping[str, str],
    num_classes: int,
    out_splits: Mapping[str, str | os.PathLike[str]],
    out_labels: str | os.PathLike[str],
    out_info: str | os.PathLike[str],
    label_source: str = "auto",
    aug_mask_dir: str | os.PathLike[str] | None = None,
    saliency_dir: str | os.PathLike[str] | None = None,
    name: str | None = None,
) -> dict:
    """Check the dataset at ``root`` and write its index.

    Args:
        root: the ``VOC2012`` folder.
        splits: split list name for each role in :data:`ROLES` (e.g. ``{"train": "train"}``).
        num_classes: foreground classes C.
        out_splits: output path of each role's id list.
        out_labels: output image-label CSV (every id of every role).
        out_info: output ``dataset.json`` (counts, class names, per-class image counts).
        label_source: ``auto``, ``csv``, ``xml`` or ``masks`` (see :func:`image_labels`).
        aug_mask_dir / saliency_dir: optional folders of SegmentationClassAug masks and
            saliency maps.
        name: the dataset's config name, for messages.

    Returns:
        The summary written to ``out_info``.

    Raises:
        DataError: missing folders/lists/images/masks, val overlapping train_aug, or images
            whose image-level label is empty.
    """
    layout = VOCLayout.from_root(root, aug_mask_dir=aug_mask_dir, saliency_dir=saliency_dir)
    ids: dict[str, list[str]] = {}
    ids["val"] = layout.validate(splits["val"], require_masks=True, name=name)
    ids["train"] = layout.validate(splits["train"], require_masks=True, name=name)
    ids["train_aug"] = _train_aug_ids(layout, splits["train_aug"], ids["val"])
    _check_images_exist(layout, ids["train_aug"], "train_aug")

    leaked = sorted(set(ids["val"]) & set(ids["train_aug"]))
    if leaked:
        raise DataError(
            f"{len(leaked)} val images are also in train_aug ({', '.join(leaked[:5])}, ...): "
            "evaluation would be on training images. Fix the split lists."
        )
    not_in_aug = set(ids["train"]) - set(ids["train_aug"])
    if not_in_aug:
        log.warning(
            "%d train images are not in train_aug (usually train ⊂ train_aug)", len(not_in_aug)
        )

    names = class_names_for(layout, num_classes)
    all_ids = list(dict.fromkeys(ids["train_aug"] + ids["train"] + ids["val"]))
    labels = image_labels(layout, all_ids, num_classes, label_source, class_names=names)
    empty = [i for i in all_ids if not np.any(labels[i])]
    if empty:
        raise DataError(
            f"{len(empty)} images have no foreground class in their image-level label "
            f"({', '.join(empty[:5])}): weakly supervised training needs at least one class per "
            "image. Remove them from the split lists or fix their annotations."
        )

    saliency = None
    if layout.saliency_dir is not None and layout.saliency_dir.is_dir():
        have = set(os.listdir(layout.saliency_dir))
        saliency = sum(f"{i}.png" in have for i in ids["train_aug"])
    aug_masks = None
    if layout.aug_mask_dir is not None and layout.aug_mask_dir.is_dir():
        have = set(os.listdir(layout.aug_mask_dir))
        aug_masks = sum(f"{i}.png" in have for i in ids["train"])

    lab = np.stack([labels[i] for i in ids["train_aug"]])
    info = {
        "name": name,
        "root": str(root),
        "num_classes": num_classes,
        "class_names": names,
        "images": {role: len(ids[role]) for role in ROLES},
        "label_source": label_source,
        "images_per_class_train_aug": {
            n: int(c) for n, c in zip(names[1:], lab.sum(0), strict=True)
        },
        "classes_per_image_train_aug": float(lab.sum(1).mean()),
        "saliency_maps_train_aug": saliency,
        "aug_masks_train": aug_masks,
    }
    log.info("dataset %s: %s", name or root, json.dumps(info["images"]))

    write_labels_csv(out_labels, labels, names)
    for role in ROLES:
        write_id_list(out_splits[role], ids[role])
    with atomic_write(out_info) as tmp:  # written last: its presence means the index is whole
        Path(tmp).write_text(json.dumps(info, indent=2))
    return info


def _check_images_exist(layout: VOCLayout, ids: Sequence[str], role: str) -> None:
    images = set(os.listdir(layout.image_dir))
    missing = [i for i in ids if f"{i}.jpg" not in images]
    if missing:
        raise DataError(
            f"{len(missing)} of {len(ids)} {role} images are missing from {layout.image_dir} "
            f"(first: {missing[0]}.jpg). Re-extract the dataset or fix the split list."
        )

"""The dataset stage: build a dataset's index with its source adapter, check it once, write it.

Every later stage reads ``index.csv`` and ``dataset.json`` (:mod:`smaf.data.index`) instead of
the dataset's own folders, so problems surface here, once, before hours of training, with one
message naming the file and the fix: missing, unreadable or truncated files (every file is
decoded once, :mod:`smaf.data.files`, and its digest recorded), an image and its mask or
saliency map of different sizes, val images inside the training split, a training or
evaluation image without any class where the source has no negatives, labels and mask values
(:mod:`smaf.data.checks`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from smaf.data.checks import check_labels, check_mask_values
from smaf.data.files import FileChecks, cache_path_for
from smaf.data.index import GT_COLUMNS, PATH_COLUMNS, DatasetIndex, require_saliency
from smaf.data.sources import TRAINVAL_ROLES, build_index, settings_problems
from smaf.errors import ConfigError, DataError

log = logging.getLogger(__name__)

#: Roles whose images must have ground-truth masks (they are evaluated).
ROLES_WITH_MASKS = ("train", "val")
#: Roles whose images must have at least one class in their image-level label.
ROLES_WITH_LABELS = TRAINVAL_ROLES
#: What each path column is called in messages.
_WHAT = {
    "image": "image",
    "mask": "mask",
    "aug_mask": "SegmentationClassAug mask",
    "saliency": "saliency map",
}


def _first(items: Sequence[str], n: int = 5) -> str:
    shown = ", ".join(items[:n])
    return shown + (f", ... ({len(items)} in all)" if len(items) > n else "")


def _checked_columns(index: DatasetIndex) -> list[str]:
    """Path columns whose files must exist now (saliency maps computed later are not)."""
    computed = index.info.get("saliency_computed", False)
    return [c for c in PATH_COLUMNS if not (c == "saliency" and computed)]


def _check_files_exist(index: DatasetIndex) -> None:
    """Every path in the index names an existing file (one listdir per folder)."""
    listings: dict[Path, set[str]] = {}
    for column in _checked_columns(index):
        missing = []
        for value in index.table[column]:
            if not value:
                continue
            path = Path(value)
            if path.parent not in listings:
                parent = path.parent
                listings[parent] = set(os.listdir(parent)) if parent.is_dir() else set()
            if path.name not in listings[path.parent]:
                missing.append(value)
        if missing:
            raise DataError(
                f"{len(missing)} of {len(index)} {_WHAT[column]}s listed for dataset "
                f"{index.name or '?'} are missing: {_first(missing)}. Re-extract the dataset or "
                "fix its split lists / annotations."
            )


def _read_files(
    index: DatasetIndex, threads: int, cache: str | os.PathLike[str] | None
) -> dict[str, tuple[int, ...]]:
    """Read every indexed file once (:mod:`smaf.data.files`: digest + full decode, cached by
    identity); record each image's size and each file's digest; a mask, aug mask or saliency
    map must have its image's size; mask values must be class indices."""
    table = index.table
    columns = [c for c in _checked_columns(index) if index.has_column(c)]
    kinds = {"image": "image", "mask": "mask", "aug_mask": "mask", "saliency": "saliency"}
    jobs = [(kinds[c], p) for c in columns for p in table[c] if p]
    reader = FileChecks(cache)
    checks = reader.check(jobs, threads)
    log.info("dataset %s: %d files, %d read (new or changed)", index.name, len(checks), reader.read)
    heights, widths = [], []
    digests: dict[str, list[str]] = {c: [] for c in PATH_COLUMNS}
    for image_id, row in zip(table.index, table.itertuples(index=False), strict=True):
        size = checks[("image", row.image)]
        heights.append(size.height)
        widths.append(size.width)
        for column in PATH_COLUMNS:
            path = getattr(row, column)
            found = checks.get((kinds[column], path)) if column in columns and path else None
            digests[column].append(found.digest if found else "")
            if found is None or column == "image":
                continue
            if (found.height, found.width) != (size.height, size.width):
                raise DataError(
                    f"{_WHAT[column]} {path} is {found.width}x{found.height} but its image "
                    f"{row.image} is {size.width}x{size.height} (WxH): the file belongs to "
                    "another image or was resized. Replace it with one made for "
                    f"{image_id} at full resolution."
                )
    table["height"] = heights
    table["width"] = widths
    for column in PATH_COLUMNS:
        table[f"{column}_digest"] = digests[column]
    return {p: c.values for (kind, p), c in checks.items() if kind == "mask"}


def validate_index(
    index: DatasetIndex,
    *,
    threads: int = 4,
    cache: str | os.PathLike[str] | None = None,
    out_dir: str | os.PathLike[str] | None = None,
) -> DatasetIndex:
    """Check an adapter's index once so stages can trust it; fills ``width`` / ``height`` and
    the files' digests. ``cache``: the read cache (:func:`smaf.data.files.cache_path_for`);
    None reads every file. ``out_dir``: the folder of converted masks (``mask_values:
    binary_255``), this index's only. Warnings (classes that cannot be learnt apart) go to the log and
    ``info["warnings"]``.

    Raises:
        DataError: naming the file(s) and the fix.
    """
    roles = [r for r in index.roles if (index.table["split_" + r] == 1).any()]
    if not roles:
        raise DataError(f"dataset {index.name or '?'} has no images in any split.")
    _check_files_exist(index)
    if "val" in roles and "train_aug" in roles:
        leaked = sorted(set(index.ids("val")) & set(index.ids("train_aug")))
        if leaked:
            raise DataError(
                f"{len(leaked)} val images are also in train_aug ({_first(leaked)}): "
                "evaluation would be on training images. Fix the split lists."
            )
        not_in_aug = (
            set(index.ids("train")) - set(index.ids("train_aug")) if "train" in roles else set()
        )
        if not_in_aug:
            log.warning(
                "%d train images are not in train_aug (usually train ⊂ train_aug)", len(not_in_aug)
            )
    for role in index.info.get("masks_required", ROLES_WITH_MASKS):
        if role in roles:
            no_mask = [i for i in index.ids(role) if index.mask_path(i) is None]
            if no_mask:
                raise DataError(
                    f"{len(no_mask)} {role} images have no ground-truth mask ({_first(no_mask)}): "
                    f"the {role} split is evaluated. Add their masks or move them to another split."
                )
    labelled = [i for r in ROLES_WITH_LABELS if r in roles for i in index.ids(r)]
    warnings = check_labels(index, list(dict.fromkeys(labelled)))
    masks = _read_files(index, threads, cache)
    check_mask_values(index, masks, out_dir)
    if warnings:
        index.info["warnings"] = warnings
    return DatasetIndex(index.table, index.info)


def summarize(index: DatasetIndex, roles: Sequence[str]) -> dict[str, Any]:
    """Counts for ``dataset.json``: images per role, per class, saliency / aug-mask coverage."""
    names = index.class_names
    info: dict[str, Any] = {"images": {r: len(index.ids(r, allow_empty=True)) for r in roles}}
    if "train_aug" in roles:
        train_aug = index.ids("train_aug")
        lab = np.stack([index.labels(i) for i in train_aug])
        info["images_per_class_train_aug"] = {
            n: int(c) for n, c in zip(names[1:], lab.sum(0), strict=True)
        }
        info["classes_per_image_train_aug"] = float(lab.sum(1).mean())
        has_sal = index.has_column("saliency")
        info["saliency_maps_train_aug"] = (
            sum(index.saliency_path(i) is not None for i in train_aug) if has_sal else None
        )
    if "train" in roles:
        has_aug = index.has_column(GT_COLUMNS["SegmentationClassAug"])
        info["aug_masks_train"] = (
            sum(
                index.mask_path(i, "aug_mask") is not None
                for i in index.ids("train", allow_empty=True)
            )
            if has_aug
            else None
        )
    return info


def prepare_dataset(
    *,
    source: str,
    settings: Mapping[str, Any],
    out_index: str | os.PathLike[str],
    out_info: str | os.PathLike[str] | None = None,
    name: str,
    roles: Sequence[str] = TRAINVAL_ROLES,
    threads: int = 4,
    needs_saliency: bool = False,
) -> dict[str, Any]:
    """Build, check and write the index of dataset ``name``; return its ``dataset.json``.

    Args:
        source: the adapter (:data:`smaf.data.sources.ADAPTERS`): ``synthetic``, ``voc``, ...
        settings: the dataset's config entry (plus resolved folders) for the adapter.
        out_index: ``index.csv`` to write (atomically).
        out_info: its ``dataset.json`` (default: beside ``out_index``), written last: its
            presence means the index is whole.
        roles: :data:`~smaf.data.sources.TRAINVAL_ROLES` or ``("test",)``.
        threads: threads reading image headers.
        needs_saliency: every train_aug image must have a saliency map (EPS pretraining).

    Raises:
        DataError / ConfigError: see :func:`validate_index` and the adapters.
    """
    eps = needs_saliency and "train_aug" in roles
    problems = settings_problems(source, settings, name=name, needs_saliency=eps)
    if problems:
        raise ConfigError(" ".join(problems))
    index = build_index(source, settings, name=name, roles=roles)
    if needs_saliency and "train_aug" in roles:  # before reading any file
        require_saliency(index, index.ids("train_aug", allow_empty=True), "train_aug")
    stem = Path(out_index).stem
    converted = Path(out_index).with_name(
        "masks_binary" if stem == "index" else f"{stem}.masks_binary"
    )
    index = validate_index(
        index, threads=threads, cache=cache_path_for(out_index), out_dir=converted
    )
    index.info.update({"num_classes": index.num_classes, "class_names": index.class_names})
    index.info.update(summarize(index, roles))
    log.info("dataset %s: %s", name, json.dumps(index.info["images"]))
    index.write(out_index, out_info)
    return index.info

"""What the dataset stage checks about labels and mask values (after the files are read).

* Image-level labels: a training image without any class is a *negative* (background only)
  where the source allows them (the ``folder`` source); elsewhere it is an error. A class that
  every training image shows, or two classes that always appear together, cannot be told apart
  from the background or from each other by a classifier: a warning says so. A class seen in
  fewer than :data:`FEW_IMAGES` training images is warned about, and stopped at when its name
  looks like a typo of another class (classes inferred from the labels).
* Mask values: class indices 0..C and 255 (ignore). Masks that hold only 0 and 255 are the
  common binary convention: with ``mask_values: binary_255`` (one class) they are converted
  (255 → 1) into ``masks_binary/`` beside ``index.csv`` (``test_index.masks_binary/`` beside
  ``test_index.csv``); without it the stage stops with that hint.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from smaf.data.index import DatasetIndex
from smaf.errors import ConfigError, DataError
from smaf.io import IGNORE_INDEX, atomic_write

log = logging.getLogger(__name__)

#: Fewer training images than this for a class: warned about (or a likely typo: stopped).
FEW_IMAGES = 5
#: ``mask_values`` settings: masks of class indices, or one class saved as 0/255.
MASK_VALUES = ("indices", "binary_255")


def _first(items: Sequence[str], n: int = 5) -> str:
    shown = ", ".join(items[:n])
    return shown + (f", ... ({len(items)} in all)" if len(items) > n else "")


def check_labels(index: DatasetIndex, labelled: Sequence[str]) -> list[str]:
    """Check the image-level labels of the ``labelled`` (trained or evaluated) images; return
    warnings about the training images' classes (each also logged).

    Raises:
        DataError: an image without a class where negatives are not allowed; no training
            image with any class; a rare class whose name looks like a typo of another.
    """
    name = index.name or "?"
    empty = [i for i in labelled if not index.labels(i).any()]
    if empty and not index.info.get("negatives_allowed", False):
        raise DataError(
            f"{len(empty)} images have no foreground class in their image-level label "
            f"({_first(empty)}): weakly supervised training needs at least one class per "
            "image. Remove them from the split lists or fix their annotations."
        )
    train = index.ids("train_aug", allow_empty=True)
    if not train:
        return []
    lab = np.stack([index.labels(i) for i in train]) > 0  # [N, C]
    if not lab.any():
        raise DataError(
            f"none of the {len(train)} training images of dataset {name} shows a class (all "
            "are background only); label the images that show one."
        )
    warnings = _rare_classes(index, lab) + _inseparable_classes(index, lab)
    for w in warnings:
        log.warning("dataset %s: %s", name, w)
    return warnings


def _rare_classes(index: DatasetIndex, lab: np.ndarray) -> list[str]:
    names = index.class_names[1:]
    counts = lab.sum(0)
    rare = [(n, int(c)) for n, c in zip(names, counts, strict=True) if c < FEW_IMAGES]
    if not rare:
        return []
    inferred = index.info.get("classes_inferred", False)
    common = [n for n, c in zip(names, counts, strict=True) if c >= FEW_IMAGES]
    for cls, count in rare:
        close = [n for n in common if _looks_like(cls, n)] if inferred else []
        if close:
            raise DataError(
                f"labels {index.info.get('labels', '?')}: class {cls!r} is in {count} training "
                f"image(s) and looks like a typo of {close[0]!r} "
                f"({int(counts[names.index(close[0])])} images). Fix the label, or list every "
                "class name under `classes:` to keep it."
            )
    shown = ", ".join(f"{n} ({c})" for n, c in rare)
    return [
        f"{len(rare)} classes are in fewer than {FEW_IMAGES} training images: {shown}; "
        "their results will be unreliable. Add images of them, or check their names."
    ]


def _looks_like(a: str, b: str) -> bool:
    """``a`` is ``b`` mistyped: the same but for case, spaces or ``_-``, or within one edit
    (two for names of 7+ letters; names under 4 letters: a swap of neighbours only), a swap
    counting as one."""
    a, b = (re.sub(r"[\s_-]+", "", x.lower()) for x in (a, b))
    if a == b:
        return True
    prev2, prev = None, list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        row = [i]
        for j, cb in enumerate(b, 1):
            d = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (ca != cb))
            if prev2 is not None and i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                d = min(d, prev2[j - 2] + 1)
            row.append(d)
        prev2, prev = prev, row
    shortest = min(len(a), len(b))
    if shortest < 4:  # car / cat: one edit apart, both real; only a swap counts
        return prev[-1] == 1 and sorted(a) == sorted(b)
    return prev[-1] <= (2 if shortest >= 7 else 1)


def _inseparable_classes(index: DatasetIndex, lab: np.ndarray) -> list[str]:
    names = index.class_names[1:]
    out = []
    always = [n for n, col in zip(names, lab.T, strict=True) if col.all()]
    if always:
        out.append(
            f"class(es) {', '.join(always)} are in every training image: a classifier cannot "
            "learn where they are not. Add background-only images (negatives: an image listed "
            "with no class) or images of other classes."
        )
    seen: dict[bytes, str] = {}
    for n, col in zip(names, lab.T, strict=True):
        if col.any() and not col.all():
            key = np.packbits(col).tobytes()
            if key in seen:
                out.append(
                    f"classes {seen[key]} and {n} always appear together in the training "
                    "images: they cannot be told apart. Add images that show one without the "
                    "other."
                )
            else:
                seen[key] = n
    return out


def check_mask_values(
    index: DatasetIndex, masks: Mapping[str, Sequence[int]], out_dir: str | Path | None
) -> None:
    """Mask values are class indices 0..C and 255; 0/255 masks are converted with
    ``mask_values: binary_255`` (the index's ``mask`` paths then point at the converted PNGs
    in ``out_dir``, which holds this index's only) or refused with that hint."""
    c, name = index.num_classes, index.name or "?"
    mode = index.info.get("mask_values", "indices")
    if mode not in MASK_VALUES:
        raise ConfigError(
            f"datasets.{name}.mask_values: {mode!r}; expected one of {', '.join(MASK_VALUES)}."
        )
    if not masks:
        return
    if mode == "binary_255":
        _binary_255(index, masks, out_dir)
        return
    bad = {p: [v for v in values if c < v < IGNORE_INDEX] for p, values in masks.items()}
    bad = {p: v for p, v in bad.items() if v}
    if bad:
        path, values = next(iter(bad.items()))
        raise DataError(
            f"{len(bad)} masks of dataset {name} hold values above the {c} classes (first: "
            f"{path} holds {values[:8]}); mask pixels must be 0 (background), 1..{c} (the "
            f"classes in label order) or {IGNORE_INDEX} (ignore). Check that the masks belong "
            "to this dataset and its `classes`."
        )
    present = set().union(*map(set, masks.values()))
    if IGNORE_INDEX in present and not present & set(range(1, c + 1)):
        hint = (
            "set `mask_values: binary_255` in the dataset's settings to read 255 as the class"
            if c == 1
            else "save each pixel's class index (1..C), not 255"
        )
        raise DataError(
            f"the {len(masks)} masks of dataset {name} hold only 0 and {IGNORE_INDEX}: "
            f"{IGNORE_INDEX} means 'ignore', so they would score nothing. If they are binary "
            f"masks saved as 0/255 (first: {next(iter(masks))}), {hint}."
        )


def _binary_255(index: DatasetIndex, masks: Mapping[str, Sequence[int]], out_dir) -> None:
    name = index.name or "?"
    if index.num_classes != 1:
        raise ConfigError(
            f"datasets.{name}.mask_values: binary_255 is for one class; this dataset has "
            f"{index.num_classes} ({', '.join(index.class_names[1:])})."
        )
    if out_dir is None:
        raise ValueError("mask_values: binary_255 needs an output folder for converted masks")
    bad = {p: v for p, v in masks.items() if set(v) - {0, IGNORE_INDEX}}
    if bad:
        path, values = next(iter(bad.items()))
        raise DataError(
            f"mask_values: binary_255, but {len(bad)} masks of dataset {name} hold other values "
            f"than 0 and 255 (first: {path} holds {list(values)[:8]}). Save every mask as 0/255."
        )
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    table = index.table
    converted = []
    for path, digest in zip(table["mask"], table["mask_digest"], strict=True):
        if not path:
            converted.append("")
            continue
        target = folder / f"{digest}.png"  # named by content: a replaced mask is converted again
        if not target.is_file():
            with Image.open(path) as img:
                binary = (np.asarray(img, dtype=np.uint8) == IGNORE_INDEX).astype(np.uint8)
            with atomic_write(target) as tmp:
                Image.fromarray(binary, mode="L").save(tmp, format="PNG")
        converted.append(str(target))
    keep = {Path(p).name for p in converted if p}
    for stale in folder.glob("*.png"):
        if stale.name not in keep:
            stale.unlink()
    table["mask"] = converted

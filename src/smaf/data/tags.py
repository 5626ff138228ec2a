"""Image tags (image-level labels) from the files users have: a CSV, a COCO json, VOC XML, folders.

Every reader returns ``(tags, classes)``: ``tags`` maps an image, named by its path relative to
the image folder (POSIX separators, with its extension), to the class names it shows;
``classes`` are the class names the file itself declares, in its order (None when it declares
none). Images a reader says nothing about are unlabelled: the ``folder`` source predicts them
as its test images and never trains on them. An image listed with *no* class (an empty list)
is a **negative**: background only, trained on with an all-zero label vector.

Formats (and how each says "background only"):

* CSV with an ``image`` column and either a ``labels`` column of class names separated by
  ``;`` (negative: an empty ``labels`` field) or one 0/1 column per class (the column names are
  the classes; negative: all 0);
* a COCO-format json (``images``, ``annotations``, ``categories``): an image shows the
  categories of its annotations (crowd regions included); negative: an entry of ``images``
  without annotations;
* a folder of VOC-style XML files, ``<path without extension>.xml`` per image; negative: a
  file without ``<object>``;
* ``by_folder``: the first sub-folder of an image's path is its one class; negative: the
  sub-folder named by ``negatives_folder`` (e.g. ``background``), which is no class.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from smaf.data.labels import xml_object_names
from smaf.errors import DataError

Tags = dict[str, list[str]]


def _dedup(names: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(n for n in names if n))


def read_csv_tags(path: str | os.PathLike[str]) -> tuple[Tags, list[str] | None]:
    """Tags from a CSV: ``image`` + ``labels`` (``a;b``), or ``image`` + one 0/1 column per class."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except FileNotFoundError:
        raise DataError(f"label file not found: {path}. Check the dataset's `labels`.") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"label file {path} is not UTF-8 text ({exc}).") from None
    if not rows:
        raise DataError(f"label file {path} is empty; it needs a header with an `image` column.")
    header = [h.strip() for h in rows[0]]
    if "image" not in header:
        raise DataError(
            f"label file {path} has no `image` column (columns: {', '.join(header)}); the first "
            "row must name the columns: image,labels (class names separated by ;) or image,<class>,..."
        )
    col = header.index("image")
    one_hot = "labels" not in header
    classes = [h for k, h in enumerate(header) if k != col] if one_hot else None
    tags: Tags = {}
    lines: dict[str, int] = {}
    for lineno, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise DataError(
                f"label file {path}, line {lineno}: {len(row)} fields, expected {len(header)}."
            )
        image = str(PurePosixPath(row[col].strip().replace("\\", "/")))
        if image in lines:
            raise DataError(
                f"label file {path}, line {lineno}: {image} is listed again (first on line "
                f"{lines[image]}). Keep one row per image."
            )
        lines[image] = lineno
        if one_hot:
            cells = {h: row[k].strip() for k, h in enumerate(header) if k != col}
            bad = {h: v for h, v in cells.items() if v not in ("0", "1")}
            if bad:
                raise DataError(
                    f"label file {path}, line {lineno} ({image}): class columns must be 0 or 1, "
                    f"got {bad}."
                )
            tags[image] = [h for h, v in cells.items() if v == "1"]
        else:
            tags[image] = _dedup(n.strip() for n in row[header.index("labels")].split(";"))
    return tags, classes


def read_coco_tags(path: str | os.PathLike[str]) -> tuple[Tags, list[str]]:
    """Tags from a COCO-format json: each image's annotation categories; classes by category id."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"annotation file not found: {path}.") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(
            f"annotation file {path} is not valid JSON ({exc}); it may be truncated: "
            "download or export it again."
        ) from None
    if not isinstance(data, dict) or not all(k in data for k in ("images", "categories")):
        raise DataError(
            f"annotation file {path} is not in COCO format: it needs `images`, `categories` "
            "and `annotations` lists."
        )
    categories = {int(c["id"]): str(c["name"]) for c in data["categories"]}
    files = {int(im["id"]): str(PurePosixPath(im["file_name"])) for im in data["images"]}
    tags: Tags = {name: [] for name in files.values()}
    for ann in data.get("annotations") or []:
        image_id, cat = int(ann["image_id"]), int(ann["category_id"])
        if image_id not in files:
            raise DataError(
                f"annotation file {path}: annotation {ann.get('id')} points at image id "
                f"{image_id}, which is not in `images`. Fix or regenerate the file."
            )
        if cat not in categories:
            raise DataError(
                f"annotation file {path}: annotation {ann.get('id')} has category id {cat}, "
                f"which is not in `categories` (ids: {sorted(categories)[:10]}...)."
            )
        tags[files[image_id]].append(categories[cat])
    # An image without annotations is background only (a negative), not unlabelled.
    tags = {name: _dedup(names) for name, names in tags.items()}
    return tags, [categories[k] for k in sorted(categories)]


def read_xml_tags(folder: str | os.PathLike[str], images: Iterable[str]) -> tuple[Tags, None]:
    """Tags from ``<folder>/<image path without extension>.xml`` (VOC-style object names)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"annotation folder not found: {folder}. Check the dataset's `labels`.")
    tags: Tags = {}
    for image in images:
        xml = folder / PurePosixPath(image).with_suffix(".xml")
        if xml.is_file():
            tags[image] = _dedup(xml_object_names(xml))
    return tags, None


def folder_tags(
    images: Iterable[str], negatives_folder: str | None = None
) -> tuple[Tags, list[str]]:
    """``by_folder``: an image's first sub-folder is its class (images at the top: unlabelled;
    in ``negatives_folder``: background only, no class)."""
    tags: Tags = {}
    for image in images:
        parts = PurePosixPath(image).parts
        if len(parts) > 1:
            tags[image] = [] if parts[0] == negatives_folder else [parts[0]]
    return tags, sorted({t[0] for t in tags.values() if t})


def read_tags(
    labels: str, images: list[str], *, negatives_folder: str | None = None
) -> tuple[Tags, list[str] | None]:
    """Tags from the ``labels`` setting: ``by_folder``, a ``.csv``, a ``.json`` or a folder."""
    if labels == "by_folder":
        return folder_tags(images, negatives_folder)
    path = Path(labels)
    if path.is_dir():
        return read_xml_tags(path, images)
    if path.suffix.lower() == ".json":
        return read_coco_tags(path)
    if path.suffix.lower() in (".csv", ".txt", ".tsv"):
        return read_csv_tags(path)
    if not path.exists():
        raise DataError(f"label file not found: {path}. Check the dataset's `labels`.")
    raise DataError(
        f"labels {path}: expected a .csv file, a COCO .json file, a folder of .xml files or "
        "`by_folder`."
    )

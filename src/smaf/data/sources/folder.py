"""The ``folder`` source: a user's own folder of images with image-level labels → the index.

Settings (``datasets.<name>``)::

    source: folder
    images: data/leaves/images          # any depth of sub-folders
    labels: data/leaves/labels.csv      # or a COCO .json, a folder of VOC .xml, or by_folder
    negatives_folder: healthy           # by_folder: its images are background only (optional)
    classes: [rust, blight, mildew]     # optional when the labels name them
    masks: data/leaves/masks            # optional: <path without extension>.png, 0/1..C/255
    mask_values: indices                # or binary_255 (one class saved as 0/255)
    saliency: data/leaves/saliency      # optional: <path without extension>.png; or `compute`
    splits: {val_fraction: 0.15, seed: 0}   # or lists: {train_aug: f, val: f, test: f}

* Images: every file with an image extension under ``images`` (Pillow reads them; EXIF
  orientation and modes are handled by :func:`smaf.io.load_image`). An image's *name* is its path
  relative to ``images`` (spaces and non-ASCII allowed); its *id*, which names every output
  file, is that path made file-name safe and unique (:func:`safe_ids`); the index keeps both.
* Labels (:mod:`smaf.data.tags`): images the labels name are trained on; the others are the
  ``test`` role (predicted, never trained on). A listed image with no class is a *negative*
  (background only, :mod:`smaf.data.tags` says how each format writes one): trained on with an
  all-zero label vector, as weakly supervised segmentation of one class needs.
* Splits: ``val_fraction`` of the labelled images, drawn once, stratified by label set and
  seeded, form ``val``; the rest ``train_aug``; ``train`` (seed evaluation) is the ``train_aug``
  images that have a mask. Or lists of image names (one per line) per role.
* Masks may exist for a subset: evaluation uses the images that have one.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import unicodedata
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from smaf.data.images import IMAGE_SUFFIXES, find_images
from smaf.data.index import SALIENCY_HELP, DatasetIndex, ImageRecord
from smaf.data.tags import read_tags
from smaf.errors import ConfigError, DataError
from smaf.io import read_listed_ids

TRAINVAL_ROLES = ("train_aug", "train", "val")
log = logging.getLogger(__name__)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def image_names(folder: str | Path) -> list[str]:
    """Image paths under ``folder`` relative to it (POSIX, with extension), sorted.

    Raises:
        DataError: the folder is missing or holds no image, or two files differ only by their
            extension (``a.jpg`` and ``a.png``: one name, two images).
    """
    found = find_images(folder)
    if not found:
        raise DataError(
            f"no images under {folder} (looked for {', '.join(IMAGE_SUFFIXES)} in any "
            "sub-folder). Check the dataset's `images`."
        )
    return [str(f.rel) for f in found]


def safe_ids(names: Sequence[str]) -> dict[str, str]:
    """``{name: id}``: the path without extension, ASCII letters, digits, ``._-`` only
    (``sub dir/Äpfel 1.jpg`` → ``sub_dir__Apfel_1``); a collision gets a short hash."""
    ids: dict[str, str] = {}
    taken: set[str] = set()
    for name in names:
        stem = str(PurePosixPath(name).with_suffix(""))
        ascii_ = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode()
        base = "__".join(_UNSAFE.sub("_", part).strip("_") or "_" for part in ascii_.split("/"))
        image_id = base
        if image_id in taken:
            image_id = f"{base}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"
        taken.add(image_id)
        ids[name] = image_id
    return ids


def _stratified_val(
    labelled: list[str], tags: Mapping[str, list[str]], fraction: float, seed: int
) -> set[str]:
    """``fraction`` of ``labelled``, spread evenly over the label sets: systematic sampling
    with a random start over the images ordered by label set (shuffled within each set), so
    every label set keeps its share and ``seed`` picks which images."""
    rng = np.random.default_rng(seed)
    groups: dict[tuple[str, ...], list[str]] = {}
    for name in labelled:
        groups.setdefault(tuple(sorted(tags[name])), []).append(name)
    ordered = []
    for key in sorted(groups):
        members = groups[key]
        ordered += [members[i] for i in rng.permutation(len(members))]
    start = float(rng.random())
    picks = (np.arange(len(ordered) + 1) * fraction + start).astype(np.int64)
    return {n for i, n in enumerate(ordered) if picks[i + 1] > picks[i]}


def _classes(settings: Mapping[str, Any], declared: list[str] | None, tags) -> list[str]:
    classes = settings.get("classes") or declared or sorted({c for t in tags.values() for c in t})
    classes = [str(c) for c in classes]
    if len(set(classes)) != len(classes):
        raise ConfigError(f"classes: a name appears twice in {classes}.")
    if settings.get("num_classes") is not None and int(settings["num_classes"]) != len(classes):
        raise ConfigError(
            f"num_classes is {settings['num_classes']} but the dataset has {len(classes)} "
            f"classes ({', '.join(classes)}); drop num_classes or fix `classes`."
        )
    return classes


def _role_lists(
    splits: Mapping[str, Any], names: Sequence[str], labelled: list[str], tags
) -> dict[str, set[str]]:
    """Role → image names, from lists (``train_aug``/``val``/``test`` files) or a drawn split."""
    known = set(names)
    if any(k in splits for k in ("train_aug", "val", "test")):
        roles = {}
        for role in ("train_aug", "val", "test"):
            if splits.get(role):
                listed = read_listed_ids(
                    splits[role],
                    known,
                    role=role,
                    where="in the image folder",
                    hint="names are paths relative to `images`, with their extension.",
                )
                roles[role] = set(listed)
        if "train_aug" not in roles:
            roles["train_aug"] = set(labelled) - roles.get("val", set()) - roles.get("test", set())
        return roles
    fraction = float(splits.get("val_fraction", 0.15))
    if not 0 <= fraction < 1:
        raise ConfigError(f"splits.val_fraction must be in [0, 1), got {fraction}.")
    val = _stratified_val(labelled, tags, fraction, int(splits.get("seed", 0)))
    return {"train_aug": set(labelled) - val, "val": val}


def _side_files(folder: Path | None, names: Sequence[str], key: str) -> dict[str, str]:
    """``{image path without extension: file}`` of the PNGs under ``folder`` (masks or saliency
    maps; the extension in any case: ``.png``, ``.PNG``).

    Raises:
        DataError: the folder is missing, or holds PNGs of which none matches an image.
    """
    if folder is None:
        return {}
    if not folder.is_dir():
        raise DataError(f"{key} folder not found: {folder}. Check the dataset's `{key}`.")
    found: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for f in filenames:
            if f.lower().endswith(".png") and not f.startswith("."):
                rel = (Path(dirpath) / f).relative_to(folder).as_posix()
                found[str(PurePosixPath(rel).with_suffix(""))] = str(Path(dirpath) / f)
    stems = {str(PurePosixPath(n).with_suffix("")) for n in names}
    matched = found.keys() & stems
    if found and not matched:
        example = sorted(found)[0]
        raise DataError(
            f"{key} folder {folder} holds {len(found)} PNGs but none matches an image: a "
            f"{key[:-1] if key == 'masks' else 'saliency map'} is <{key}>/<image path without "
            f"extension>.png (for {names[0]}: {folder / PurePosixPath(names[0]).with_suffix('.png')}"
            f"; found e.g. {found[example]}). Check the dataset's `{key}` and `images`."
        )
    unmatched = sorted(found.keys() - stems)
    if unmatched:
        log.warning(
            "%d files in %s match no image (first: %s)", len(unmatched), folder, unmatched[0]
        )
    return {k: v for k, v in found.items() if k in matched}


def build(
    settings: Mapping[str, Any], *, name: str, roles: Sequence[str] = TRAINVAL_ROLES
) -> DatasetIndex:
    """The images under ``settings['images']`` with their labels, masks and splits as an index."""
    images_dir = Path(settings["images"])
    names = image_names(images_dir)
    tags, declared = read_tags(
        str(settings["labels"]), names, negatives_folder=settings.get("negatives_folder")
    )
    unknown_images = sorted(set(tags) - set(names))
    if unknown_images:
        raise DataError(
            f"labels {settings['labels']} list {len(unknown_images)} images that are not under "
            f"{images_dir} (first: {unknown_images[0]}). Names are paths relative to `images`, "
            "with their extension; add the images or remove their rows."
        )
    classes = _classes(settings, declared, tags)
    index = {c: k for k, c in enumerate(classes)}
    for image, names_ in tags.items():
        bad = [c for c in names_ if c not in index]
        if bad:
            raise DataError(
                f"labels {settings['labels']}: image {image} has class {bad[0]!r}, which is not "
                f"in classes ({', '.join(classes)}). Fix the name or add it to `classes`."
            )
    ids = safe_ids(names)
    labelled = [n for n in names if n in tags]
    role_sets = _role_lists(settings.get("splits") or {}, names, labelled, tags)
    role_sets.setdefault("test", set(names) - set(labelled))
    masks_dir = Path(settings["masks"]) if settings.get("masks") else None
    saliency = settings.get("saliency")
    sal_dir = Path(saliency) if saliency and saliency != "compute" else None
    side = {
        "masks": _side_files(masks_dir, names, "masks"),
        "saliency": _side_files(sal_dir, names, "saliency"),
    }

    def side_file(key: str, image: str) -> str:
        return side[key].get(str(PurePosixPath(image).with_suffix("")), "")

    records = []
    wanted = set(roles)
    for image in names:
        mask = side_file("masks", image)
        member = {r for r, s in role_sets.items() if image in s}
        if "train_aug" in member and mask:
            member.add("train")
        member &= wanted
        if not member:
            continue
        if saliency == "compute":
            sal = f"{settings['saliency_out']}/{ids[image]}.png"
        else:
            sal = side_file("saliency", image)
        labels = np.zeros(len(classes), np.float32)
        for c in tags.get(image, ()):
            labels[index[c]] = 1.0
        records.append(
            ImageRecord(
                image_id=ids[image],
                name=image,
                image=str(images_dir / image),
                mask=mask,
                saliency=sal,
                roles=member,
                labels=labels if image in tags else None,
            )
        )
    info = {
        "name": name,
        "images_dir": str(images_dir),
        "labels": str(settings["labels"]),
        "masks_dir": str(masks_dir) if masks_dir else None,
        "saliency": saliency,
        "saliency_computed": saliency == "compute",
        # Masks may cover a subset: evaluation scores the images that have one.
        "masks_required": [],
        "unlabelled_images": len(names) - len(labelled),
        # Listed with no class: background only, trained on with an all-zero label vector.
        "negatives_allowed": True,
        "classes_inferred": not settings.get("classes") and declared is None,
        "negative_images": sum(1 for n in labelled if not tags[n]),
        "mask_values": settings.get("mask_values") or "indices",
    }
    return DatasetIndex.build(records, ["background", *classes], info)


def problems(settings: Mapping[str, Any], *, needs_saliency: bool = False) -> list[str]:
    """What is wrong with a folder dataset's settings before any image is read: paths that do
    not exist and keys that do not go together (one line each, naming the key)."""
    found = []

    def missing(key: str, path: Any, kind: str) -> None:
        ok = Path(path).is_dir() if kind == "folder" else Path(path).exists()
        if not ok:
            found.append(f"{key}: {kind} not found: {path}.")

    missing("images", settings["images"], "folder")
    labels = settings["labels"]
    if labels != "by_folder":
        missing("labels", labels, "file or folder")
        if settings.get("negatives_folder"):
            found.append(
                "negatives_folder is for labels: by_folder; in other label formats an "
                "image listed with no class is a negative."
            )
    if settings.get("masks"):
        missing("masks", settings["masks"], "folder")
    saliency = settings.get("saliency")
    if saliency and saliency != "compute":
        missing("saliency", saliency, "folder")
    for role, value in (settings.get("splits") or {}).items():
        if role in ("train_aug", "val", "test") and value:
            missing(f"splits.{role}", value, "file")
    if needs_saliency and not saliency:
        found.append(
            f"saliency is not set: {SALIENCY_HELP} (folder datasets: `saliency: compute`)."
        )
    classes = settings.get("classes") or []
    if settings.get("mask_values") == "binary_255" and len(classes) > 1:
        found.append(f"mask_values: binary_255 is for one class; classes lists {len(classes)}.")
    return found


def watched(settings: Mapping[str, Any]) -> list[Path]:
    """What the index depends on: the image, mask and saliency folders, labels, split lists."""
    paths = [Path(settings["images"])]
    if settings["labels"] != "by_folder":
        paths.append(Path(settings["labels"]))
    for key in ("masks", "saliency"):
        if settings.get(key) and settings[key] != "compute":
            paths.append(Path(settings[key]))
    for role in ("train_aug", "val", "test"):
        value = (settings.get("splits") or {}).get(role)
        if value:
            paths.append(Path(value))
    return paths

"""The PASCAL VOC 2012 source: the devkit layout, its split lists and labels → the dataset index.

The layout is the devkit's (``root`` is the ``VOC2012`` folder)::

    JPEGImages/<id>.jpg                 RGB images
    SegmentationClass/<id>.png          palette masks, 0 = background, 1..20 classes, 255 = ignore
    SegmentationClassAug/<id>.png       optional SBD-derived masks (may live elsewhere)
    ImageSets/Segmentation/<split>.txt  one id per line
    Annotations/<id>.xml                optional XML annotations (object names -> image labels)
    SALImages/<id>.png                  optional saliency maps, grey 0..255 (EPS; manual download)
    cls_labels.csv                      optional image-level labels (the project's CSV format)

:func:`build` reads it into a :class:`~smaf.data.index.DatasetIndex`; no stage looks at this
layout. The synthetic demo dataset is generated in the same layout
(:mod:`smaf.data.sources.synthetic`).
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from smaf.data.index import DatasetIndex, ImageRecord
from smaf.data.labels import (
    _foreground_names,
    labels_from_mask,
    labels_from_xml,
    read_labels_csv,
)
from smaf.errors import DataError
from smaf.io import load_mask, read_id_list

log = logging.getLogger(__name__)

#: The 21 VOC labels; index = value in the masks (0 = background). 255 is "ignore", not a class.
VOC_CLASSES: tuple[str, ...] = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)

#: Where the EPS saliency maps come from; they cannot be fetched automatically.
_SALIENCY_HINT = (
    "EPS saliency maps (PFAN) are distributed on Google Drive only "
    "(id 19AjSmgdMlIZH4FXVZ5zjlUZcoZZCkwrI): download and unpack them by hand, then point the "
    "dataset's saliency_dir at the folder of <id>.png files"
)
LabelSource = Literal["auto", "masks", "xml", "csv"]


def _first(items: Iterable[str], n: int = 5) -> str:
    """``'a, b, c'`` for the first ``n`` items, plus ``'... (N in all)'`` when there are more."""
    items = list(items)
    shown = ", ".join(items[:n])
    return shown + (f", ... ({len(items)} in all)" if len(items) > n else "")


@dataclass(frozen=True)
class VOCLayout:
    """Where the parts of a VOC-style dataset live. Build it with :meth:`from_root`."""

    root: Path  # the VOC2012 folder
    image_dir: Path  # JPEGImages/<id>.jpg
    mask_dir: Path  # SegmentationClass/<id>.png
    split_dir: Path  # ImageSets/Segmentation/<split>.txt
    annotation_dir: Path  # Annotations/<id>.xml (may not exist)
    aug_mask_dir: Path | None = None  # SegmentationClassAug/<id>.png; None = not available
    saliency_dir: Path | None = None  # SALImages/<id>.png; None = not available

    @classmethod
    def from_root(
        cls,
        root: str | os.PathLike[str],
        aug_mask_dir: str | os.PathLike[str] | None = None,
        saliency_dir: str | os.PathLike[str] | None = None,
    ) -> VOCLayout:
        """The standard devkit layout under ``root``.

        ``aug_mask_dir`` / ``saliency_dir`` default to ``root/SegmentationClassAug`` and
        ``root/SALImages`` when those folders exist, else None; explicit paths are kept as given
        (checked when used), since both are often unpacked outside the devkit.
        """
        root = Path(root)
        if aug_mask_dir is None and (root / "SegmentationClassAug").is_dir():
            aug_mask_dir = root / "SegmentationClassAug"
        if saliency_dir is None and (root / "SALImages").is_dir():
            saliency_dir = root / "SALImages"
        return cls(
            root=root,
            image_dir=root / "JPEGImages",
            mask_dir=root / "SegmentationClass",
            split_dir=root / "ImageSets" / "Segmentation",
            annotation_dir=root / "Annotations",
            aug_mask_dir=Path(aug_mask_dir) if aug_mask_dir is not None else None,
            saliency_dir=Path(saliency_dir) if saliency_dir is not None else None,
        )

    def image_path(self, image_id: str) -> Path:
        """``JPEGImages/<id>.jpg``."""
        return self.image_dir / f"{image_id}.jpg"

    def mask_path(self, image_id: str, aug: bool = False) -> Path:
        """``SegmentationClass/<id>.png``, or ``SegmentationClassAug/<id>.png`` when ``aug``."""
        if not aug:
            return self.mask_dir / f"{image_id}.png"
        if self.aug_mask_dir is None:
            raise DataError(
                f"SegmentationClassAug masks requested but none found under {self.root}: "
                "unpack SegmentationClassAug.zip (or convert SBD) there, or set the dataset's "
                "aug_mask_dir to the folder holding them."
            )
        return self.aug_mask_dir / f"{image_id}.png"

    def saliency_path(self, image_id: str) -> Path:
        """``SALImages/<id>.png`` (or the configured saliency folder)."""
        if self.saliency_dir is None:
            raise DataError(
                f"saliency maps requested but no saliency folder is set and "
                f"{self.root / 'SALImages'} does not exist. {_SALIENCY_HINT}."
            )
        return self.saliency_dir / f"{image_id}.png"

    def annotation_path(self, image_id: str) -> Path:
        """``Annotations/<id>.xml``."""
        return self.annotation_dir / f"{image_id}.xml"

    def split_ids(self, split: str) -> list[str]:
        """Image ids of ``split`` from ``split_dir/<split>.txt``, in file order."""
        path = self.split_dir / f"{split}.txt"
        if not path.is_file():
            available = sorted(p.stem for p in self.split_dir.glob("*.txt"))
            hint = (
                f"available splits there: {', '.join(available)}"
                if available
                else f"{self.split_dir} holds no split lists"
            )
            raise DataError(
                f"split list not found: {path} ({hint}). Pick an existing split or create "
                "the list (one image id per line)."
            )
        ids = read_id_list(path)
        if not ids:
            raise DataError(f"split list {path} is empty; it needs one image id per line.")
        return ids

    def validate(
        self,
        split: str,
        require_masks: bool = False,
        *,
        aug: bool = False,
        name: str | None = None,
    ) -> list[str]:
        """Check that ``split`` can be read: root, split list, every image (and mask).

        Args:
            split: split list name (``train``, ``val``, ``train_aug``, ...).
            require_masks: also require a mask for every id.
            aug: check ``SegmentationClassAug`` instead of ``SegmentationClass``.
            name: the dataset's config name, used in the messages (``datasets.<name>.root``).

        Returns:
            The split's ids.

        Raises:
            DataError: naming the missing folder/files (first few ids) and the fix.
        """
        key = f"datasets.{name or '<name>'}"
        if not self.root.is_dir():
            raise DataError(
                f"dataset folder not found: {self.root}; run the download rule or set {key}.root."
            )
        if not self.image_dir.is_dir():
            raise DataError(
                f"image folder not found: {self.image_dir}; is {key}.root the VOC2012 folder "
                "(the one holding JPEGImages)?"
            )
        ids = self.split_ids(split)
        fix = "Re-extract the dataset or fix the split list."
        _check_present(ids, self.image_dir, ".jpg", f"images of split {split!r}", fix)
        if require_masks:
            mask_dir = self.mask_path("x", aug=aug).parent
            if not mask_dir.is_dir():
                raise DataError(
                    f"mask folder not found: {mask_dir}; split {split!r} needs masks. "
                    f"Re-extract the dataset or set {key}.root / aug_mask_dir."
                )
            fix = "Use a split with ground truth (the test split has none) or re-extract the masks."
            _check_present(ids, mask_dir, ".png", f"masks of split {split!r}", fix)
        return ids


def _check_present(ids: Sequence[str], folder: Path, suffix: str, what: str, fix: str) -> None:
    """DataError naming the ids without a file ``<id><suffix>`` in ``folder``, and ``fix``."""
    # One listdir instead of one stat per id: much faster on network file systems.
    present = set(os.listdir(folder))
    missing = [i for i in ids if f"{i}{suffix}" not in present]
    if missing:
        raise DataError(
            f"{len(missing)} of {len(ids)} {what} are missing from {folder}: {_first(missing)} "
            f"(first: {folder / (missing[0] + suffix)}). {fix}"
        )


def _labels_from_mask_file(layout: VOCLayout, image_id: str, num_classes: int) -> np.ndarray:
    """Labels from the id's mask: SegmentationClassAug when it has one, else SegmentationClass."""
    path = layout.mask_path(image_id)
    if layout.aug_mask_dir is not None:
        aug_path = layout.mask_path(image_id, aug=True)
        if aug_path.is_file():
            path = aug_path
    return labels_from_mask(load_mask(path), num_classes, source=path)


def image_labels(
    layout: VOCLayout,
    ids: Sequence[str],
    num_classes: int,
    source: LabelSource = "auto",
    labels_csv: str | os.PathLike[str] | None = None,
    *,
    class_names: Sequence[str] = VOC_CLASSES,
) -> dict[str, np.ndarray]:
    """Image-level labels of ``ids`` as ``{id: float32 [C] of 0.0/1.0}``.

    Sources:
        ``'csv'``: ``labels_csv`` (default ``root/cls_labels.csv``, see :func:`write_labels_csv`).
        ``'xml'``: ``Annotations/<id>.xml`` object names.
        ``'masks'``: the classes present in ``SegmentationClassAug/<id>.png`` when that exists,
        else ``SegmentationClass/<id>.png``.
        ``'auto'``: the CSV when given or present; otherwise, per id, the XML when present,
        else the mask.

    Args:
        class_names: names used to read XML / check the CSV header (``VOC_CLASSES`` by default;
            a leading ``'background'`` is dropped). Must hold ``num_classes`` foreground names.
    """
    names = _foreground_names(class_names)
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names given for num_classes={num_classes}")
    if source not in ("auto", "masks", "xml", "csv"):
        raise ValueError(f"unknown label source {source!r}; use auto, masks, xml or csv")

    csv_path = Path(labels_csv) if labels_csv is not None else layout.root / "cls_labels.csv"
    if source == "csv" or (source == "auto" and (labels_csv is not None or csv_path.is_file())):
        table = read_labels_csv(csv_path, num_classes, class_names=names)
        missing = [i for i in ids if i not in table]
        if missing:
            raise DataError(
                f"image-label CSV {csv_path} lacks {len(missing)} of {len(ids)} ids: "
                f"{_first(missing)}. Regenerate it for this split or use label source 'masks'."
            )
        return {i: table[i] for i in ids}

    labels: dict[str, np.ndarray] = {}
    for image_id in ids:
        xml = layout.annotation_path(image_id)
        if source == "xml" or (source == "auto" and xml.is_file()):
            labels[image_id] = labels_from_xml(xml, names)
        else:
            labels[image_id] = _labels_from_mask_file(layout, image_id, num_classes)
    return labels


# ------------------------------------------------------------------------------ the adapter
#: Split roles of the training/evaluation index; ``test`` (no masks) has an index of its own.
TRAINVAL_ROLES = ("train_aug", "train", "val")


def class_names_for(root: Path, num_classes: int) -> list[str]:
    """Class names, background first: the CSV header if present, else VOC's, else generic."""
    csv_path = root / "cls_labels.csv"
    if csv_path.is_file():
        with open(csv_path, newline="") as f:
            header = next(csv.reader(f), [])
        if len(header) == num_classes + 1:
            return ["background", *(n.strip() for n in header[1:])]
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


def _existing(folder: Path | None, ids: Iterable[str]) -> dict[str, str]:
    """``{id: path}`` of the ``<id>.png`` files present in ``folder`` (one listdir)."""
    if folder is None or not folder.is_dir():
        return {}
    have = set(os.listdir(folder))
    return {i: str(folder / f"{i}.png") for i in ids if f"{i}.png" in have}


def build(
    settings: Mapping[str, Any], *, name: str, roles: Sequence[str] = TRAINVAL_ROLES
) -> DatasetIndex:
    """The VOC-layout dataset described by ``settings`` (a ``datasets:`` entry) as an index.

    ``settings``: ``root``, ``num_classes``, ``splits`` (list name per role), optional
    ``label_source`` (auto | csv | xml | masks), ``aug_mask_dir``, ``saliency_dir`` and
    ``test_root`` (the folder of the ``test`` role, VOC2012test; default ``root``).

    ``roles``: the train_aug/train/val index (:data:`TRAINVAL_ROLES`; train and val need masks)
    or ``("test",)``: the test images, without masks or labels.
    """
    num_classes = int(settings["num_classes"])
    splits = dict(settings["splits"])
    if tuple(roles) == ("test",):
        root = Path(settings.get("test_root") or settings["root"])
        layout = VOCLayout.from_root(root)
        names = class_names_for(Path(settings["root"]), num_classes)
        ids = layout.validate(splits.get("test", "test"), name=name)
        records = [ImageRecord(i, str(layout.image_path(i)), roles={"test"}) for i in ids]
        info = {"name": name, "root": str(root), "split_lists": {"test": splits.get("test")}}
        return DatasetIndex.build(records, names, info)
    if set(roles) != set(TRAINVAL_ROLES):
        raise ValueError(f"roles must be {TRAINVAL_ROLES} or ('test',), got {tuple(roles)}")

    root = Path(settings["root"])
    layout = VOCLayout.from_root(
        root, aug_mask_dir=settings.get("aug_mask_dir"), saliency_dir=settings.get("saliency_dir")
    )
    ids: dict[str, list[str]] = {}
    ids["val"] = layout.validate(splits["val"], require_masks=True, name=name)
    ids["train"] = layout.validate(splits["train"], require_masks=True, name=name)
    ids["train_aug"] = _train_aug_ids(layout, splits["train_aug"], ids["val"])
    # Rows in train_aug order: the training sample stream follows the index order.
    order = list(dict.fromkeys(ids["train_aug"] + ids["train"] + ids["val"]))
    names = class_names_for(root, num_classes)
    source = settings.get("label_source", "auto")
    labels = image_labels(layout, order, num_classes, source, class_names=names)
    masks = _existing(layout.mask_dir, order)
    aug = _existing(layout.aug_mask_dir, order)
    saliency = _existing(layout.saliency_dir, order)
    member = {role: set(v) for role, v in ids.items()}
    records = [
        ImageRecord(
            image_id=i,
            image=str(layout.image_path(i)),
            mask=masks.get(i, ""),
            aug_mask=aug.get(i, ""),
            saliency=saliency.get(i, ""),
            roles={r for r in TRAINVAL_ROLES if i in member[r]},
            labels=labels[i],
        )
        for i in order
    ]
    info = {
        "name": name,
        "root": str(root),
        "label_source": source,
        "split_lists": {r: splits[r] for r in TRAINVAL_ROLES},
        "aug_mask_dir": str(layout.aug_mask_dir) if layout.aug_mask_dir else None,
        "saliency_dir": str(layout.saliency_dir) if layout.saliency_dir else None,
    }
    return DatasetIndex.build(records, names, info)


def watched(settings: Mapping[str, Any]) -> list[Path]:
    """Files and folders whose listing (names, sizes, mtimes) the index depends on."""
    root = Path(settings["root"])
    paths = [
        root / "JPEGImages",
        root / "SegmentationClass",
        root / "ImageSets" / "Segmentation",
        root / "Annotations",
        root / "cls_labels.csv",
        root / "SegmentationClassAug",
        root / "SALImages",
    ]
    for key in ("aug_mask_dir", "saliency_dir"):
        if settings.get(key):
            paths.append(Path(settings[key]))
    if settings.get("test_root"):
        test = Path(settings["test_root"])
        paths += [test / "JPEGImages", test / "ImageSets" / "Segmentation"]
    return list(dict.fromkeys(paths))

"""The dataset index: the one table every stage reads about the data.

The dataset stage (rule ``prepare_dataset``) asks the dataset's *source adapter*
(:mod:`smaf.data.sources`) for its images, checks them once (:mod:`smaf.data.validate`) and
writes two files that later stages read instead of the dataset's own folders::

    results/<dataset>/data/index.csv      one row per image (below)
    results/<dataset>/data/dataset.json   name, source, class names, counts, provenance

Columns of ``index.csv``, in this order:

=================  ===================================================================
``image_id``       the id every output is named by (``<image_id>.png``): file-name safe
``name``           the source's own name of the image (VOC id, a relative path, ...)
``image``          path of the RGB image
``mask``           ground-truth label PNG (0 background, 1..C, 255 ignore), or empty
``aug_mask``       a second ground truth (VOC: SBD's SegmentationClassAug), or empty
``saliency``       saliency map (grey PNG, EPS pretraining), or empty
``width``          image width (px)
``height``         image height (px)
``<path>_digest``  content identity of each path column's file (``image_digest``,
                   ``mask_digest``, ...: BLAKE2b-128 of its bytes, :mod:`smaf.data.files`), or
                   empty: a replaced file changes its row
``split_<role>``   0/1 per split role: ``train_aug`` (training), ``train`` (seed
                   evaluation), ``val`` (segmentation evaluation), ``test`` (no masks)
``label_<class>``  0/1 image-level label of each foreground class, in label order
=================  ===================================================================

Paths are written as the adapter found them (relative ones are relative to the working
directory of the workflow). Row order is the order of the training split, so the sample stream
of a training run does not depend on how the source lists its images.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from smaf.errors import DataError
from smaf.io import atomic_write

#: Path columns; empty means "this image has none".
PATH_COLUMNS = ("image", "mask", "aug_mask", "saliency")
#: Every column that is not a split role or a label, in file order.
BASE_COLUMNS = ("image_id", "name", *PATH_COLUMNS, "width", "height")
#: The content identity of each path column's file (filled by the dataset stage; optional on
#: read, so an index written before them still reads).
DIGEST_COLUMNS = tuple(f"{c}_digest" for c in PATH_COLUMNS)
#: Split roles every dataset may fill (a source may add others, e.g. a held-out subset).
ROLES = ("train_aug", "train", "val", "test")
SPLIT_PREFIX = "split_"
LABEL_PREFIX = "label_"
#: Ground-truth kinds as the config and results/summary.csv name them → index column.
GT_COLUMNS = {"SegmentationClass": "mask", "SegmentationClassAug": "aug_mask"}


def info_path_for(index_path: str | os.PathLike[str]) -> Path:
    """The info file of an index: ``dataset.json`` beside ``index.csv``, ``<name>.json`` beside
    any other ``<name>.csv`` (the test images' ``test_index.csv`` → ``test_index.json``)."""
    path = Path(index_path)
    return path.with_name("dataset.json" if path.name == "index.csv" else f"{path.stem}.json")


@dataclass
class ImageRecord:
    """One image as a source adapter reports it (before validation)."""

    image_id: str
    image: str
    name: str = ""  # default: the image id
    mask: str = ""
    aug_mask: str = ""
    saliency: str = ""
    roles: set[str] = field(default_factory=set)
    labels: np.ndarray | None = None  # float32 [C] 0/1; None = unknown (test images)
    width: int = 0  # 0 = not read yet (validation fills it)
    height: int = 0


class DatasetIndex:
    """An index table with its class names; read with :meth:`read`, built with :meth:`build`.

    Lookups by id are dictionary-fast (the training datasets call them per sample).

    Attributes:
        table: the rows, indexed by ``image_id``, in file order.
        info: the ``dataset.json`` contents (``class_names`` with background first, ...).
    """

    def __init__(self, table: pd.DataFrame, info: Mapping[str, Any]) -> None:
        self.table = table
        self.info = dict(info)
        names = list(self.info["class_names"])
        self._label_cols = [LABEL_PREFIX + n for n in names[1:]]
        missing = [c for c in (*BASE_COLUMNS[1:], *self._label_cols) if c not in table.columns]
        if missing:
            raise DataError(
                f"dataset index of {self.info.get('name', '?')} lacks columns "
                f"{', '.join(missing)}; rerun the prepare_dataset rule."
            )
        self._row = {image_id: k for k, image_id in enumerate(table.index)}
        self._labels = table[self._label_cols].to_numpy(dtype=np.float32)  # [N, C]
        self._paths = {c: table[c].tolist() for c in PATH_COLUMNS}
        self._size = table[["height", "width"]].to_numpy(dtype=np.int64)  # [N, 2]
        self._identities: dict[str, str] | None = None

    # ------------------------------------------------------------------------ construction
    @classmethod
    def build(
        cls,
        records: Iterable[ImageRecord],
        class_names: Sequence[str],
        info: Mapping[str, Any] | None = None,
    ) -> DatasetIndex:
        """An index from adapter records. ``class_names``: background first, then C classes.

        Rows keep the records' order; roles are ``split_<role>`` columns for every role any
        record has (plus the standard :data:`ROLES`).
        """
        names = list(class_names)
        if not names or names[0] != "background":
            names = ["background", *names]
        num_classes = len(names) - 1
        records = list(records)
        roles = list(ROLES) + sorted({r for rec in records for r in rec.roles} - set(ROLES))
        rows = []
        for rec in records:
            labels = np.zeros(num_classes, np.float32) if rec.labels is None else rec.labels
            labels = np.asarray(labels, dtype=np.float32)
            if labels.shape != (num_classes,):
                raise DataError(
                    f"image {rec.image_id}: {labels.size} labels for {num_classes} classes."
                )
            row = {
                "image_id": rec.image_id,
                "name": rec.name or rec.image_id,
                "image": str(rec.image),
                "mask": str(rec.mask or ""),
                "aug_mask": str(rec.aug_mask or ""),
                "saliency": str(rec.saliency or ""),
                "width": int(rec.width),
                "height": int(rec.height),
                **{d: "" for d in DIGEST_COLUMNS},
            }
            row.update({SPLIT_PREFIX + r: int(r in rec.roles) for r in roles})
            row.update({LABEL_PREFIX + n: int(v) for n, v in zip(names[1:], labels, strict=True)})
            rows.append(row)
        columns = [
            *BASE_COLUMNS,
            *DIGEST_COLUMNS,
            *(SPLIT_PREFIX + r for r in roles),
            *(LABEL_PREFIX + n for n in names[1:]),
        ]
        table = pd.DataFrame(rows, columns=columns).set_index("image_id", drop=False)
        table.index.name = None
        return cls(table, {**dict(info or {}), "num_classes": num_classes, "class_names": names})

    @classmethod
    def read(
        cls, path: str | os.PathLike[str], info_path: str | os.PathLike[str] | None = None
    ) -> DatasetIndex:
        """Read ``index.csv`` and the ``dataset.json`` beside it (or ``info_path``)."""
        path = Path(path)
        info_path = Path(info_path) if info_path is not None else info_path_for(path)
        try:
            info = json.loads(info_path.read_text())
            table = pd.read_csv(
                path,
                dtype={c: str for c in ("image_id", "name", *PATH_COLUMNS, *DIGEST_COLUMNS)},
                keep_default_na=False,
            )
        except FileNotFoundError as exc:
            raise DataError(
                f"dataset index not found: {exc.filename}; run the prepare_dataset rule first."
            ) from None
        table = table.set_index("image_id", drop=False)
        table.index.name = None
        return cls(table, info)

    def write(
        self, path: str | os.PathLike[str], info_path: str | os.PathLike[str] | None = None
    ) -> None:
        """Write ``index.csv`` then ``dataset.json`` (last: its presence means both are whole)."""
        info_path = Path(info_path) if info_path is not None else info_path_for(path)
        with atomic_write(path) as tmp:
            self.table.to_csv(tmp, index=False, lineterminator="\n")
        with atomic_write(info_path) as tmp:
            tmp.write_text(json.dumps(self.info, indent=2) + "\n")

    # ----------------------------------------------------------------------------- queries
    @property
    def name(self) -> str:
        return str(self.info.get("name") or "")

    @property
    def num_classes(self) -> int:
        """Foreground classes C."""
        return len(self._label_cols)

    @property
    def class_names(self) -> list[str]:
        """C+1 names, background first (label value = position)."""
        return list(self.info["class_names"])

    @property
    def roles(self) -> list[str]:
        """Split roles present as columns (possibly with no images)."""
        return [c[len(SPLIT_PREFIX) :] for c in self.table.columns if c.startswith(SPLIT_PREFIX)]

    def __len__(self) -> int:
        return len(self.table)

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._row

    def ids(
        self, role: str | Sequence[str] | None = None, *, allow_empty: bool = False
    ) -> list[str]:
        """Image ids of split ``role`` (all ids for None; several roles: every image in any of
        them, once), in index order.

        Raises:
            DataError: a role is unknown, or the selection has no images (unless
                ``allow_empty``).
        """
        if role is None:
            return list(self.table.index)
        if not isinstance(role, str):
            chosen = {i for r in role for i in self.ids(r, allow_empty=True)}
            ids = [i for i in self.table.index if i in chosen]
            if not ids and not allow_empty:
                raise DataError(
                    f"splits {', '.join(role)} of dataset {self.name or '?'} have no images."
                )
            return ids
        col = SPLIT_PREFIX + role
        if col not in self.table.columns:
            raise DataError(
                f"dataset {self.name or '?'} has no split {role!r} (has: {', '.join(self.roles)})."
            )
        ids = list(self.table.index[self.table[col].to_numpy() == 1])
        if not ids and not allow_empty:
            raise DataError(
                f"split {role!r} of dataset {self.name or '?'} has no images; check the "
                "dataset's split lists."
            )
        return ids

    def subset(self, ids: Sequence[str]) -> DatasetIndex:
        """The rows of ``ids`` only (in that order), same classes and info."""
        self._check_ids(ids)
        return DatasetIndex(self.table.loc[list(ids)], self.info)

    def _check_ids(self, ids: Iterable[str]) -> None:
        missing = [i for i in ids if i not in self._row]
        if missing:
            raise DataError(
                f"{len(missing)} image ids are not in the dataset index of "
                f"{self.name or '?'} (first: {missing[0]}); rerun the prepare_dataset rule."
            )

    def _path(self, column: str, image_id: str) -> Path | None:
        value = self._paths[column][self._row[image_id]]
        return Path(value) if value else None

    def image_path(self, image_id: str) -> Path:
        """The RGB image of ``image_id``."""
        return Path(self._paths["image"][self._row[image_id]])

    def mask_path(self, image_id: str, gt: str = "mask") -> Path | None:
        """Ground truth of ``image_id``: column ``gt`` (``mask`` / ``aug_mask``, or a
        :data:`GT_COLUMNS` name such as ``SegmentationClass``); None when it has none."""
        return self._path(GT_COLUMNS.get(gt, gt), image_id)

    def saliency_path(self, image_id: str) -> Path | None:
        """Saliency map of ``image_id``, or None."""
        return self._path("saliency", image_id)

    def labels(self, image_id: str) -> np.ndarray:
        """Image-level labels: float32 ``[C]`` of 0/1 (a copy)."""
        return self._labels[self._row[image_id]].copy()

    def label_map(self, ids: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """``{id: float32 [C]}`` for ``ids`` (default: every image)."""
        ids = self.ids() if ids is None else list(ids)
        self._check_ids(ids)
        return {i: self._labels[self._row[i]].copy() for i in ids}

    def size(self, image_id: str) -> tuple[int, int]:
        """``(height, width)`` of ``image_id`` as recorded at validation."""
        h, w = self._size[self._row[image_id]]
        return int(h), int(w)

    def fingerprint(self, ids: Sequence[str] | None = None) -> str:
        """sha256 of the rows of ``ids`` (paths, file digests, sizes, roles, labels): what a stage's
        per-image results depend on, for resumable staging folders."""
        rows = self.table if ids is None else self.table.loc[list(ids)]
        text = rows.to_csv(index=False, lineterminator="\n")
        return hashlib.sha256(text.encode()).hexdigest()

    def row_identity(self, image_id: str) -> str:
        """sha256 of image ``image_id``'s row (its id, paths, sizes, labels and any digest
        columns; not its split roles, which no per-image result depends on): a per-image
        stage redoes an image whose identity changed (:func:`smaf.perimage.run_per_image`)."""
        if self._identities is None:
            cols = [c for c in self.table.columns if not c.startswith(SPLIT_PREFIX)]
            text = self.table[cols].to_csv(header=False, lineterminator="\n")
            lines = text.splitlines() if len(self.table) else []
            if len(lines) != len(self.table):  # a field with a line break: row by row
                lines = [
                    self.table.loc[[i], cols].to_csv(header=False, lineterminator="\n")
                    for i in self.table.index
                ]
            self._identities = {
                i: hashlib.sha256(line.encode()).hexdigest()
                for i, line in zip(self.table.index, lines, strict=True)
            }
        return self._identities[image_id]

    def has_column(self, column: str) -> bool:
        """Whether any image has a file in path column ``column`` (GT names accepted)."""
        column = GT_COLUMNS.get(column, column)
        return any(self._paths[column])


def read_index(index: str | os.PathLike[str] | DatasetIndex) -> DatasetIndex:
    """``index`` itself, or the index read from its path (stages accept either)."""
    return index if isinstance(index, DatasetIndex) else DatasetIndex.read(index)


#: What to do when EPS has no saliency maps (the three ways to get them, in order).
SALIENCY_HELP = (
    "EPS pretraining needs one saliency map per training image. Either (1) point the "
    "dataset's saliency folder at them (VOC 2012: EPS's PFAN maps, on Google Drive only: the "
    "manual item voc2012_saliency says how), (2) compute them with the `saliency` rule, or "
    "(3) set pretrain.method: cam, which needs none"
)


def require_saliency(index: DatasetIndex, ids: list[str], role: str) -> None:
    """Raise one clear DataError when images of ``ids`` have no saliency map in the index."""
    missing = [i for i in ids if index.saliency_path(i) is None]
    if missing:
        raise DataError(
            f"{len(missing)} of {len(ids)} {role} images of dataset {index.name or '?'} have no "
            f"saliency map (first: {missing[0]}). {SALIENCY_HELP}."
        )


#: ``dataset.json`` keys that count or check the whole index (images per role, per class,
#: warnings): what no stage's result depends on, so :func:`rows_fingerprint` leaves them out.
INFO_COUNTS = (
    "images",
    "images_per_class_train_aug",
    "classes_per_image_train_aug",
    "saliency_maps_train_aug",
    "aug_masks_train",
    "warnings",
)
#: All rows of an index (:func:`rows_fingerprint`), for the jobs that read every split.
ALL_ROLES = ("*",)

_ROWS: dict[tuple[str, int, int], tuple[pd.DataFrame, dict[str, Any]]] = {}
_ROWS_DIGESTS: dict[tuple[tuple[str, int, int], tuple[str, ...]], str] = {}


def rows_fingerprint(path: str | os.PathLike[str], roles: Sequence[str]) -> str:
    """sha256 of what a job reading the rows of ``roles`` of the index at ``path`` sees: those
    rows (paths, file digests, sizes, labels and their ``roles`` columns; not the other split
    columns) and ``dataset.json`` without its counts (:data:`INFO_COUNTS`). :data:`ALL_ROLES`:
    every row and column.

    The workflow gives it to each job as a parameter and the index as an ``ancient`` input, so
    an edit reruns only the jobs whose rows changed: adding a val image reruns no training
    (issue 21). The table and each digest are cached by path, mtime and size (the planner
    asks per job: a COCO-size index is read once and hashed once per set of roles).
    """
    path = Path(path)
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    if (key, tuple(roles)) not in _ROWS_DIGESTS:
        _ROWS_DIGESTS[key, tuple(roles)] = _rows_digest(path, key, roles)
    return _ROWS_DIGESTS[key, tuple(roles)]


def _rows_digest(path: Path, key: tuple[str, int, int], roles: Sequence[str]) -> str:
    """:func:`rows_fingerprint` of the index at ``path`` (read once per ``key``)."""
    if key not in _ROWS:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
        info = json.loads(info_path_for(path).read_text())
        _ROWS[key] = (table, {k: v for k, v in info.items() if k not in INFO_COUNTS})
    table, info = _ROWS[key]
    if tuple(roles) != ALL_ROLES:
        splits = [c for c in table.columns if c.startswith(SPLIT_PREFIX)]
        wanted = [SPLIT_PREFIX + r for r in roles if SPLIT_PREFIX + r in table.columns]
        rows = table[wanted].eq("1").any(axis=1) if wanted else pd.Series(False, table.index)
        drop = [c for c in splits if c not in wanted]
        table = table.loc[rows, [c for c in table.columns if c not in drop]]
    digest = hashlib.sha256(json.dumps(info, sort_keys=True).encode())
    digest.update(table.to_csv(index=False, lineterminator="\n").encode())
    return digest.hexdigest()


_ROLE_COUNTS: dict[tuple[str, int], pd.DataFrame] = {}


def role_count(path: str | os.PathLike[str], roles: Sequence[str]) -> int:
    """Images in any of ``roles`` of the index file at ``path``, reading only its split columns
    (the workflow plans shards with it; 123k rows read in a fraction of a second)."""
    path = Path(path)
    key = (str(path), path.stat().st_mtime_ns)
    if key not in _ROLE_COUNTS:
        header = pd.read_csv(path, nrows=0).columns
        splits = [c for c in header if c.startswith(SPLIT_PREFIX)]
        _ROLE_COUNTS[key] = pd.read_csv(path, usecols=splits, dtype="int8")
    table = _ROLE_COUNTS[key]
    columns = [SPLIT_PREFIX + r for r in roles if SPLIT_PREFIX + r in table.columns]
    return int(table[columns].any(axis=1).sum()) if columns else 0

"""PASCAL VOC 2012 reader: folder layout, split lists, image-level labels and a plain Dataset.

The layout is the devkit's (``root`` is the ``VOC2012`` folder)::

    JPEGImages/<id>.jpg                 RGB images
    SegmentationClass/<id>.png          palette masks, 0 = background, 1..20 classes, 255 = ignore
    SegmentationClassAug/<id>.png       optional SBD-derived masks (may live elsewhere)
    ImageSets/Segmentation/<split>.txt  one id per line
    Annotations/<id>.xml                optional XML annotations (object names -> image labels)
    SALImages/<id>.png                  optional saliency maps, grey 0..255 (EPS; manual download)

Image-level labels are float32 vectors of length ``C`` (20 for VOC) over the *foreground*
classes 1..C: entry ``k - 1`` is 1.0 when class ``k`` is present. Background is never a label.
"""

from __future__ import annotations

import csv
import os
import pickle
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.lib.format as npformat
import torch.utils.data
from PIL import Image, UnidentifiedImageError

from smaf.errors import DataError
from smaf.io import IGNORE_INDEX, atomic_write, load_image, load_mask, read_id_list

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
MaskMode = Literal["auto", "required", "none"]


def _foreground_names(class_names: Sequence[str]) -> tuple[str, ...]:
    """Foreground class names: ``class_names`` without a leading ``'background'``.

    Lets callers pass either :data:`VOC_CLASSES` (21 names) or just the 20 foreground names.
    """
    names = tuple(class_names)
    return names[1:] if names and names[0] == "background" else names


def _first(items: Iterable[str], n: int = 5) -> str:
    """``'a, b, c'`` for the first ``n`` items, plus ``'... (N in all)'`` when there are more."""
    items = list(items)
    shown = ", ".join(items[:n])
    return shown + (f", ... ({len(items)} in all)" if len(items) > n else "")


# --------------------------------------------------------------------------- image-level labels


def labels_from_mask(
    mask: np.ndarray, num_classes: int, *, source: str | os.PathLike[str] | None = None
) -> np.ndarray:
    """Image-level labels of a label map: which of the classes 1..``num_classes`` occur.

    Args:
        mask: integer label map of any shape (usually ``[H, W]`` uint8); 0 = background,
            1..``num_classes`` = classes, :data:`~smaf.io.IGNORE_INDEX` (255) = ignore.
        num_classes: number of foreground classes ``C`` (20 for VOC).
        source: file the mask came from, only used to name it in error messages.

    Returns:
        float32 ``[C]`` of 0.0/1.0; entry ``k - 1`` is 1.0 iff value ``k`` occurs. Background
        and ignore pixels never set a label.

    Raises:
        DataError: the mask holds values outside ``0..C`` and 255 (e.g. a mask of another
            dataset, or an RGB mask converted to grey).
    """
    mask = np.asarray(mask)
    if not np.issubdtype(mask.dtype, np.integer):
        raise ValueError(f"mask must hold integers, got dtype {mask.dtype}")
    if mask.dtype == np.uint8:
        # Counting all 256 values is a single pass, faster than np.unique's sort.
        values = np.flatnonzero(np.bincount(mask.ravel(), minlength=256))
    else:
        values = np.unique(mask)
    bad = values[((values < 0) | (values > num_classes)) & (values != IGNORE_INDEX)]
    if bad.size:
        where = f"mask {source}" if source is not None else "mask"
        raise DataError(
            f"{where} holds values {bad.tolist()} outside 0..{num_classes} and {IGNORE_INDEX} "
            f"(ignore). Check that the masks belong to this dataset (num_classes={num_classes}) "
            "and are palette PNGs of class indices, not colour images."
        )
    labels = np.zeros(num_classes, dtype=np.float32)
    present = values[(values >= 1) & (values <= num_classes)]
    labels[present - 1] = 1.0
    return labels


def labels_from_xml(path: str | os.PathLike[str], class_names: Sequence[str]) -> np.ndarray:
    """Image-level labels from a VOC XML annotation: the ``<object><name>`` tags.

    Every object counts, ``difficult`` and ``truncated`` ones included (as in the field's
    ``cls_labels.npy``); body-part names (``<part><name>``) are not objects and are skipped.

    Args:
        path: the ``Annotations/<id>.xml`` file.
        class_names: the foreground class names in label order (a leading ``'background'``,
            as in :data:`VOC_CLASSES`, is dropped).

    Returns:
        float32 ``[C]`` of 0.0/1.0, ``C = len(foreground names)``.
    """
    path = Path(path)
    names = _foreground_names(class_names)
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        raise DataError(
            f"annotation not found: {path}. Check the dataset root, or derive the image labels "
            "from the masks (label source 'masks')."
        ) from None
    # ElementTree does not fetch external entities, but entity expansion ("billion laughs")
    # is still possible; VOC annotations never declare a DTD, so refuse any that does.
    if b"<!DOCTYPE" in text or b"<!ENTITY" in text:
        raise DataError(
            f"annotation {path} declares a DOCTYPE/ENTITY, which VOC annotations never do; "
            "refusing to parse it. Replace it with the file from the VOC devkit."
        )
    try:
        tree = ET.fromstring(text)
    except ET.ParseError as exc:
        raise DataError(
            f"cannot parse annotation {path} ({exc}). Re-download or re-extract the dataset."
        ) from None
    labels = np.zeros(len(names), dtype=np.float32)
    index = {name: i for i, name in enumerate(names)}
    for obj in tree.iter("object"):
        name_el = obj.find("name")  # direct child only: <part><name> tags are body parts
        if name_el is None or not (name_el.text or "").strip():
            raise DataError(f"annotation {path} has an <object> without a <name>.")
        name = name_el.text.strip()
        if name not in index:
            raise DataError(
                f"annotation {path} names an unknown class {name!r}; "
                f"expected one of: {', '.join(names)}."
            )
        labels[index[name]] = 1.0
    return labels


def _expected_header(names: Sequence[str]) -> str:
    return ",".join(["image_id", *names])


def read_labels_csv(
    path: str | os.PathLike[str],
    num_classes: int,
    *,
    class_names: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """Read the project's image-label CSV (see :func:`write_labels_csv`).

    Args:
        path: CSV file with header ``image_id,<class1>,...,<classC>`` and 0/1 cells.
        num_classes: expected number of class columns ``C``.
        class_names: if given, the class columns must carry exactly these names (a leading
            ``'background'`` is dropped first).

    Returns:
        ``{image_id: float32 [C] of 0.0/1.0}`` in file order; ids stay strings (``'2007_000032'``).
    """
    path = Path(path)
    names = _foreground_names(class_names) if class_names is not None else None
    if names is not None and len(names) != num_classes:
        raise ValueError(f"{len(names)} class names given for num_classes={num_classes}")
    expected = (
        _expected_header(names)
        if names is not None
        else f"image_id,<class1>,...,<class{num_classes}>"
    )
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except FileNotFoundError:
        raise DataError(
            f"image-label CSV not found: {path}. Run the rule that writes it, or pick another "
            "label source (masks or xml)."
        ) from None
    if not rows:
        raise DataError(f"image-label CSV {path} is empty; expected the header {expected}.")
    header = [h.strip() for h in rows[0]]
    if (
        len(header) != num_classes + 1
        or header[0] != "image_id"
        or (names is not None and tuple(header[1:]) != names)
    ):
        raise DataError(
            f"image-label CSV {path} has columns {','.join(header)}; expected {expected}. "
            "Regenerate it with smaf.data.write_labels_csv."
        )
    labels: dict[str, np.ndarray] = {}
    for lineno, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != num_classes + 1:
            raise DataError(
                f"image-label CSV {path}, line {lineno}: {len(row)} fields, expected "
                f"{num_classes + 1} ({expected})."
            )
        image_id = row[0].strip()
        cells = [c.strip() for c in row[1:]]
        if any(c not in ("0", "1") for c in cells):
            raise DataError(
                f"image-label CSV {path}, line {lineno} ({image_id}): cells must be 0 or 1, "
                f"got {','.join(cells)}."
            )
        if image_id in labels:
            raise DataError(f"image-label CSV {path}, line {lineno}: duplicate id {image_id}.")
        labels[image_id] = np.array([c == "1" for c in cells], dtype=np.float32)
    return labels


def write_labels_csv(
    path: str | os.PathLike[str], labels: Mapping[str, np.ndarray], class_names: Sequence[str]
) -> None:
    """Write image labels as CSV, atomically: the project's pickle-free label format.

    Header ``image_id,<class1>,...,<classC>`` (background excluded), one row per id in the
    mapping's order, cells ``0``/``1``. Ids are written verbatim, so leading zeros survive.

    Args:
        path: destination ``.csv``.
        labels: ``{image_id: [C] array of 0/1 (any numeric dtype)}``.
        class_names: class names in label order (a leading ``'background'`` is dropped).
    """
    names = _foreground_names(class_names)
    rows = []
    for image_id, vec in labels.items():
        vec = np.asarray(vec)
        if vec.shape != (len(names),):
            raise ValueError(
                f"labels of {image_id} have shape {vec.shape}, expected ({len(names)},)"
            )
        if not np.isin(vec, (0, 1)).all():
            raise ValueError(f"labels of {image_id} must be 0/1, got {vec.tolist()}")
        rows.append([str(image_id), *(str(int(v)) for v in vec)])
    with atomic_write(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["image_id", *names])
        writer.writerows(rows)


# --------------------------------------------------------------- legacy cls_labels.npy (pickle)


def _multiarray_attr(name: str) -> Any:
    """``numpy._core.multiarray.<name>`` (numpy 2) or ``numpy.core.multiarray.<name>`` (1.x)."""
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray
    return getattr(multiarray, name)


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """The only use of ``_codecs.encode`` in a protocol-2 pickle: rebuilding a bytes object.

    Python 3 pickles ``bytes`` at protocol 2 as ``_codecs.encode(str, 'latin1')``; any other
    codec is refused so the allowed callable cannot be bent to other uses.
    """
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode with codec {encoding!r} is not allowed")
    return text.encode("latin1")


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the callables a pickled dict of numpy arrays needs.

    ``np.load(allow_pickle=True)`` would run whatever callable the file names (``os.system``
    included); here every other global is refused.
    """

    _ALLOWED: dict[tuple[str, str], Callable[[], Any]] = {
        ("numpy.core.multiarray", "_reconstruct"): lambda: _multiarray_attr("_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"): lambda: _multiarray_attr("_reconstruct"),
        ("numpy.core.multiarray", "scalar"): lambda: _multiarray_attr("scalar"),
        ("numpy._core.multiarray", "scalar"): lambda: _multiarray_attr("scalar"),
        ("numpy", "ndarray"): lambda: np.ndarray,
        ("numpy", "dtype"): lambda: np.dtype,
        ("_codecs", "encode"): lambda: _latin1_encode,
    }

    def find_class(self, module: str, name: str) -> Any:
        resolve = self._ALLOWED.get((module, name))
        if resolve is None:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")
        return resolve()


def _decode_int_id(key: Any) -> str:
    """``2007000032`` (int or numpy int) -> ``'2007_000032'``; strings pass through."""
    if isinstance(key, str):
        return key
    if not isinstance(key, (int, np.integer)):
        raise ValueError(f"unexpected key {key!r} of type {type(key).__name__}")
    s = str(int(key))
    if len(s) != 10:  # YYYY + 6-digit serial, as VOC ids 'YYYY_NNNNNN'
        raise ValueError(f"key {s} is not a 10-digit YYYYNNNNNN image id")
    return f"{s[:4]}_{s[4:]}"


def load_legacy_cls_labels(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read the field's ``cls_labels.npy`` (psa/irn/EPS) without executing arbitrary pickles.

    That file is a 0-d object ``.npy`` wrapping a pickled ``dict`` of ``np.int32(YYYYNNNNNN) ->
    float32[20]``. The ``.npy`` header is parsed with :mod:`numpy.lib.format`; the pickle after
    it is read by an unpickler that only knows numpy's array/scalar reconstruction.

    Returns:
        ``{'YYYY_NNNNNN': float32 [C] of 0.0/1.0}``.

    Raises:
        DataError: the file is missing, not such a ``.npy``, or its pickle names anything else.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            version = npformat.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = npformat.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = npformat.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy format version {version}")
            if shape != () or dtype != np.dtype(object):
                raise ValueError(f"holds a {dtype} array of shape {shape}, not a pickled dict")
            obj = _NumpyOnlyUnpickler(f, encoding="latin1").load()
    except FileNotFoundError:
        raise DataError(f"legacy label file not found: {path}.") from None
    except (pickle.UnpicklingError, ValueError, EOFError, TypeError, AttributeError) as exc:
        raise DataError(
            f"cannot read {path} as a legacy cls_labels.npy ({exc}). Only a pickled dict of "
            "numpy arrays is accepted; use the project's labels CSV or derive labels from masks."
        ) from None
    # np.save wraps the dict in a 0-d object array; a bare pickled dict is accepted too.
    if isinstance(obj, np.ndarray) and obj.shape == () and obj.dtype == object:
        obj = obj.item()
    if not isinstance(obj, dict):
        raise DataError(f"{path} holds a {type(obj).__name__}, expected a dict id -> labels.")
    out: dict[str, np.ndarray] = {}
    for key, value in obj.items():
        try:
            image_id = _decode_int_id(key)
        except ValueError as exc:
            raise DataError(f"{path}: {exc}.") from None
        vec = np.asarray(value)
        if vec.ndim != 1 or not np.issubdtype(vec.dtype, np.number):
            raise DataError(f"{path}: labels of {image_id} are {vec.dtype} {vec.shape}, not 1-D.")
        out[image_id] = vec.astype(np.float32)
    return out


# ---------------------------------------------------------------------------------- the layout


def load_saliency(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a saliency map as uint8 ``[H, W]`` (0 = background .. 255 = salient)."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode not in ("L", "P", "RGB", "RGBA", "LA", "1"):
                raise DataError(
                    f"saliency map {path} has mode {img.mode!r}; expected an 8-bit grey PNG."
                )
            return np.asarray(img.convert("L"), dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"saliency map not found: {path}. {_SALIENCY_HINT}.") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataError(
            f"cannot read saliency map {path} ({exc}). The file is corrupt or truncated: "
            "re-download or re-extract it."
        ) from None


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
        # One listdir instead of one stat per id: much faster on network file systems.
        images = set(os.listdir(self.image_dir))
        missing = [i for i in ids if f"{i}.jpg" not in images]
        if missing:
            raise DataError(
                f"{len(missing)} of {len(ids)} images of split {split!r} are missing from "
                f"{self.image_dir}: {_first(missing)} (first: {self.image_path(missing[0])}). "
                "Re-extract the dataset or fix the split list."
            )
        if require_masks:
            mask_dir = self.mask_path("x", aug=aug).parent
            if not mask_dir.is_dir():
                raise DataError(
                    f"mask folder not found: {mask_dir}; split {split!r} needs masks. "
                    f"Re-extract the dataset or set {key}.root / aug_mask_dir."
                )
            masks = set(os.listdir(mask_dir))
            missing = [i for i in ids if f"{i}.png" not in masks]
            if missing:
                raise DataError(
                    f"{len(missing)} of {len(ids)} masks of split {split!r} are missing from "
                    f"{mask_dir}: {_first(missing)} (first: {mask_dir / (missing[0] + '.png')}). "
                    "Use a split with ground truth (the test split has none) or re-extract "
                    "the masks."
                )
        return ids


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


# --------------------------------------------------------------------------------- the dataset


class VOCSegmentation(torch.utils.data.Dataset):
    """The images of one split, with masks, image labels and (optionally) saliency maps.

    Each item is a dict:

    - ``'id'``: str
    - ``'image'``: uint8 ``[H, W, 3]`` RGB
    - ``'mask'``: uint8 ``[H, W]`` class indices (255 = ignore), or None when not loaded
    - ``'labels'``: float32 ``[C]`` of 0.0/1.0 (foreground classes only)
    - ``'saliency'``: uint8 ``[H, W]``, only when ``saliency=True``

    No resizing or augmentation happens here: ``transform(item) -> item`` is applied last
    (the training code's transforms also turn None masks into something collatable).

    Args:
        layout: where the dataset lives.
        split: split list name.
        num_classes: foreground classes ``C``.
        masks: ``'auto'`` loads a mask when the file exists (None otherwise, e.g. test
            images), ``'required'`` checks up front that every id has one, ``'none'`` never loads.
        aug_masks: read masks from ``SegmentationClassAug`` instead of ``SegmentationClass``.
        saliency: also load ``saliency_dir/<id>.png``.
        labels: precomputed image labels for every id; else computed with :func:`image_labels`.
        label_source, labels_csv: passed to :func:`image_labels` when ``labels`` is None.
        transform: callable applied to each item dict.
    """

    def __init__(
        self,
        layout: VOCLayout,
        split: str,
        *,
        num_classes: int = 20,
        masks: MaskMode = "auto",
        aug_masks: bool = False,
        saliency: bool = False,
        labels: Mapping[str, np.ndarray] | None = None,
        label_source: LabelSource = "auto",
        labels_csv: str | os.PathLike[str] | None = None,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        if masks not in ("auto", "required", "none"):
            raise ValueError(f"masks must be 'auto', 'required' or 'none', got {masks!r}")
        self.layout = layout
        self.split = split
        self.num_classes = num_classes
        self.masks = masks
        self.aug_masks = aug_masks
        self.saliency = saliency
        self.transform = transform
        self.ids = layout.validate(split, require_masks=masks == "required", aug=aug_masks)
        if saliency:
            layout.saliency_path(self.ids[0])  # fail now, not in a worker, if no folder is set
        if labels is None:
            labels = image_labels(layout, self.ids, num_classes, label_source, labels_csv)
        missing = [i for i in self.ids if i not in labels]
        if missing:
            raise DataError(
                f"no image labels for {len(missing)} ids of split {split!r}: {_first(missing)}."
            )
        self.labels = {i: np.asarray(labels[i], dtype=np.float32) for i in self.ids}

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_id = self.ids[index]
        image = load_image(self.layout.image_path(image_id))  # [H, W, 3]
        size = image.shape[:2]
        item: dict[str, Any] = {
            "id": image_id,
            "image": image,
            "mask": None,
            "labels": self.labels[image_id].copy(),  # copy: transforms may edit it in place
        }
        if self.masks != "none":
            path = self.layout.mask_path(image_id, aug=self.aug_masks)
            if self.masks == "required" or path.is_file():
                mask = load_mask(path)  # [H, W]
                if mask.shape != size:
                    raise DataError(
                        f"image {image_id}: mask {path} is {mask.shape[1]}x{mask.shape[0]} but "
                        f"the image is {size[1]}x{size[0]} (WxH); the mask belongs to another "
                        "image or was resized. Re-extract the masks."
                    )
                item["mask"] = mask
        if self.saliency:
            path = self.layout.saliency_path(image_id)
            sal = load_saliency(path)  # [H, W]
            if sal.shape != size:
                raise DataError(
                    f"image {image_id}: saliency map {path} is {sal.shape[1]}x{sal.shape[0]} "
                    f"but the image is {size[1]}x{size[0]} (WxH). Use saliency maps made for "
                    "these images at full resolution."
                )
            item["saliency"] = sal
        if self.transform is not None:
            item = self.transform(item)
        return item

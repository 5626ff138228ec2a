"""Image-level label formats: from masks, VOC XML, the project's CSV, the field's legacy ``.npy``.

Image-level labels are float32 vectors of length ``C`` over the *foreground* classes 1..C:
entry ``k - 1`` is 1.0 when class ``k`` is present. Background is never a label. Every source
adapter (:mod:`smaf.data.sources`) turns its own annotation format into these vectors.
"""

from __future__ import annotations

import csv
import os
import pickle
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.lib.format as npformat

from smaf.errors import DataError
from smaf.io import IGNORE_INDEX, atomic_write


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


def xml_object_names(path: str | os.PathLike[str]) -> list[str]:
    """The ``<object><name>`` tags of a VOC-style XML annotation, in file order.

    Every object counts, ``difficult`` and ``truncated`` ones included (as in the field's
    ``cls_labels.npy``); body-part names (``<part><name>``) are not objects and are skipped.
    A file declaring a DOCTYPE/ENTITY is refused (entity expansion).
    """
    path = Path(path)
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
    names = []
    for obj in tree.iter("object"):
        name_el = obj.find("name")  # direct child only: <part><name> tags are body parts
        if name_el is None or not (name_el.text or "").strip():
            raise DataError(f"annotation {path} has an <object> without a <name>.")
        names.append(name_el.text.strip())
    return names


def labels_from_xml(path: str | os.PathLike[str], class_names: Sequence[str]) -> np.ndarray:
    """Image-level labels from a VOC XML annotation: its object names (:func:`xml_object_names`).

    Args:
        path: the ``Annotations/<id>.xml`` file.
        class_names: the foreground class names in label order (a leading ``'background'``,
            as in :data:`VOC_CLASSES`, is dropped).

    Returns:
        float32 ``[C]`` of 0.0/1.0, ``C = len(foreground names)``.
    """
    names = _foreground_names(class_names)
    labels = np.zeros(len(names), dtype=np.float32)
    index = {name: i for i, name in enumerate(names)}
    for name in xml_object_names(path):
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

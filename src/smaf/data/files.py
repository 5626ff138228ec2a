"""The files an index names, read once each: a content digest and a full decode.

The dataset stage reads every image, mask and saliency map it indexes once, in the same pass:

* its **digest** (BLAKE2b-128 of the bytes) goes into the index row (``<column>_digest``), so a
  replaced file changes ``index.csv`` and the row's identity even when its name, size and
  modification time look the same to a folder listing;
* the bytes are **decoded** (a truncated JPEG, an RGB-coloured mask stop here, naming the file,
  not hours later in training), giving the size as loaded (EXIF orientation applied) and, for a
  mask, the pixel values it holds.

What was read is remembered in a cache file beside the index (:func:`cache_path_for`), keyed by
path, size and ``mtime_ns``: a rerun reads only new or changed files (MS-COCO: 123k images once).
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from smaf.errors import DataError
from smaf.io import atomic_write, reading_image

#: What a file is read as: ``image`` (any Pillow image), ``mask`` (P / L PNG of class indices),
#: ``saliency`` (grey PNG).
KINDS = ("image", "mask", "saliency")
_COLUMNS = ("kind", "path", "size", "mtime_ns", "digest", "height", "width", "values")
#: EXIF orientations that swap width and height.
_TRANSPOSED = (5, 6, 7, 8)


@dataclass(frozen=True)
class FileCheck:
    """What one read of a file found."""

    digest: str
    height: int
    width: int
    values: tuple[int, ...] = ()  # masks: the pixel values present, sorted


def digest_bytes(data: bytes) -> str:
    """The content identity of a file's bytes: BLAKE2b-128, hex."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def file_digest(path: str | os.PathLike[str], chunk: int = 1 << 22) -> str:
    """:func:`digest_bytes` of a (large) file, read in chunks: the content identity of a model
    file a training run starts from."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def cache_path_for(index_path: str | os.PathLike[str]) -> Path:
    """The read cache of an index: ``index.csv`` → ``index.files.csv`` beside it."""
    path = Path(index_path)
    return path.with_name(f"{path.stem}.files.csv")


def _decode(kind: str, data: bytes, path: str) -> FileCheck:
    digest = digest_bytes(data)
    with reading_image(path, kind), Image.open(io.BytesIO(data)) as img:
        img.load()
        w, h = img.size
        if kind == "image":
            if img.getexif().get(0x0112, 1) in _TRANSPOSED:
                w, h = h, w
            return FileCheck(digest, h, w)
        if kind == "mask":
            if img.mode not in ("P", "L"):
                raise DataError(
                    f"mask {path} has mode {img.mode!r} (a colour image); expected a palette "
                    "('P') or grey ('L') PNG whose pixel values are class indices (0 "
                    "background, 1..C, 255 ignore). Convert the colours to class indices."
                )
            counts = np.bincount(np.asarray(img, dtype=np.uint8).ravel(), minlength=256)
            return FileCheck(digest, h, w, tuple(int(v) for v in np.flatnonzero(counts)))
        return FileCheck(digest, h, w)


def check_file(kind: str, path: str) -> FileCheck:
    """Read ``path`` once: its digest and a full decode as ``kind`` (:data:`KINDS`).

    Raises:
        DataError: the file is missing, not readable as ``kind``, or truncated.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path} ({exc.strerror or exc}).") from None
    return _decode(kind, data, path)


class FileChecks:
    """The reads of one index's files, remembered in a cache file by (path, size, mtime)."""

    def __init__(self, cache: str | os.PathLike[str] | None) -> None:
        self.cache = Path(cache) if cache is not None else None
        self._known: dict[tuple[str, str], tuple[int, int, FileCheck]] = {}
        self.read = 0  # files actually read by the last :meth:`check`
        if self.cache is not None and self.cache.is_file():
            self._load()

    def _load(self) -> None:
        try:
            with open(self.cache, newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f))
            for r in rows:
                values = tuple(int(v) for v in r["values"].split(";") if v)
                check = FileCheck(r["digest"], int(r["height"]), int(r["width"]), values)
                self._known[(r["kind"], r["path"])] = (int(r["size"]), int(r["mtime_ns"]), check)
        except (OSError, KeyError, ValueError, csv.Error):
            self._known = {}  # a damaged cache is read again from the files

    def _save(self) -> None:
        if self.cache is None:
            return
        self.cache.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(self.cache) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(_COLUMNS)
            for (kind, path), (size, mtime, c) in sorted(self._known.items()):
                values = ";".join(map(str, c.values))
                writer.writerow([kind, path, size, mtime, c.digest, c.height, c.width, values])

    def _one(self, job: tuple[str, str]) -> FileCheck | DataError:
        kind, path = job
        try:
            st = os.stat(path)
        except OSError as exc:
            return DataError(f"cannot read {path} ({exc.strerror or exc}).")
        known = self._known.get(job)
        if known is not None and known[:2] == (st.st_size, st.st_mtime_ns):
            return known[2]
        try:
            check = check_file(kind, path)
        except DataError as exc:
            return exc
        self._known[job] = (st.st_size, st.st_mtime_ns, check)
        self.read += 1
        return check

    def check(
        self, jobs: Sequence[tuple[str, str]], threads: int = 4
    ) -> dict[tuple[str, str], FileCheck]:
        """``{(kind, path): FileCheck}`` for every job, reading only new or changed files (in
        ``threads`` threads); the cache is saved before an error is raised, so a rerun after
        fixing one file reads that file only.

        Raises:
            DataError: the first job (in order) whose file cannot be read, naming it.
        """
        self.read = 0
        jobs = list(dict.fromkeys(jobs))
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            results = list(pool.map(self._one, jobs))
        wanted = set(jobs)
        self._known = {k: v for k, v in self._known.items() if k in wanted}
        self._save()
        for result in results:
            if isinstance(result, DataError):
                raise result
        return dict(zip(jobs, results, strict=True))

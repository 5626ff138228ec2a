"""A user's folder of images: finding them (any depth) and naming their outputs.

Used by the ``folder`` dataset source and by ``smaf predict``; every image is then read by
:func:`smaf.io.load_image` (upright, 8-bit RGB, whatever its format). Standard library only,
so the workflow can import it at start-up.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from smaf.errors import DataError

#: File name endings (case-insensitive) of the images :func:`find_images` lists.
IMAGE_SUFFIXES = (".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class ImageFile:
    """One image found under a folder, with the names of its outputs."""

    rel: PurePosixPath  # path relative to the folder, with its extension ("a/b c.jpg")
    path: Path  # where to read it

    @property
    def stem(self) -> PurePosixPath:
        """The relative path without the extension: the name of every output."""
        return self.rel.with_suffix("")

    def output(self, suffix: str, tag: str = "") -> PurePosixPath:
        """Relative output path ``<stem><tag><suffix>`` (e.g. ``a/b c.png``, ``a/b c_dog.png``)."""
        return self.rel.with_name(f"{self.stem.name}{tag}{suffix}")


def find_images(
    root: str | os.PathLike[str], exclude: tuple[str | os.PathLike[str], ...] = ()
) -> list[ImageFile]:
    """Every image under ``root`` (any depth), sorted by relative path.

    Images are files whose name ends in one of :data:`IMAGE_SUFFIXES` (any case); names
    starting with ``.`` (hidden files, unfinished writes) are left out, and so is every
    folder in ``exclude`` (an output folder inside ``root``). Symbolic links are followed
    (each real folder once).

    Raises:
        DataError: ``root`` is not a folder, or two images would give the same output name
            (``a.jpg`` and ``a.png`` in one folder).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder not found: {root}.")
    skip = {Path(p).resolve() for p in exclude}
    seen_dirs: set[Path] = set()
    found: list[ImageFile] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        here = Path(dirpath)
        real = here.resolve()
        if real in seen_dirs or real in skip:
            dirnames[:] = []
            continue
        seen_dirs.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.startswith(".") or not name.lower().endswith(IMAGE_SUFFIXES):
                continue
            rel = PurePosixPath((here / name).relative_to(root).as_posix())
            found.append(ImageFile(rel, here / name))
    found.sort(key=lambda f: str(f.rel))
    clash = stem_clash(found)
    if clash:
        first, second = clash
        raise DataError(
            f"{first.rel} and {second.rel} in {root} would both be written as {second.stem}.png; "
            "rename one of them."
        )
    return found


def stem_clash(files: Sequence[ImageFile]) -> tuple[ImageFile, ImageFile] | None:
    """The first two of ``files`` whose outputs would share a name (the same ``stem``), or
    None: ``a.jpg`` and ``a.png`` both become ``a.png``."""
    by_stem: dict[PurePosixPath, ImageFile] = {}
    for f in files:
        other = by_stem.setdefault(f.stem, f)
        if other is not f:
            return other, f
    return None


def folder_fingerprint(
    root: str | os.PathLike[str], exclude: tuple[str | os.PathLike[str], ...] = ()
) -> str:
    """sha256 of the images under ``root``: relative names, sizes and modification times.

    A workflow params entry: an added, removed or replaced image changes it (and reruns the
    rule); an untouched folder keeps it. Reads no pixels.
    """
    digest = hashlib.sha256()
    for f in find_images(root, exclude):
        st = f.path.stat()
        digest.update(
            f"{f.rel}\t{st.st_size}\t{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape")
        )
    return digest.hexdigest()

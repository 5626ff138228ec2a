"""A user's folder of images: finding them, reading any of them as 8-bit RGB, naming outputs.

:func:`find_images` lists every image under a folder (any depth); :func:`read_rgb` reads one
the same way whatever its format:

* EXIF orientation applied (:func:`PIL.ImageOps.exif_transpose`): a phone photo taken upright
  comes out upright, with its displayed width and height.
* Grey, palette, CMYK, YCbCr, 1-bit → RGB by Pillow's ``convert("RGB")`` (grey copied to the
  three channels; CMYK by Pillow's formula, no ICC profile).
* Alpha (RGBA, LA, PA) is dropped: the stored colours are kept, not composited on a
  background, exactly as :func:`smaf.io.load_image` (and so training) reads such a file.
* 16-bit (and 32-bit integer) grey ``v`` → ``round(v / 257)`` (0 → 0, 65535 → 255), values
  clipped to 0..65535 first. Pillow reads 16-bit RGB PNGs as 8-bit RGB itself.
* Float grey (mode F): clipped to 0..255 by Pillow.

Used by ``smaf predict`` (:mod:`smaf.predict`); numpy and Pillow only.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from smaf.errors import DataError

#: File name endings (case-insensitive) of the images :func:`find_images` lists.
IMAGE_SUFFIXES = (".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
#: Pillow modes holding integer grey values of more than 8 bits (taken as 16-bit).
WIDE_GREY_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")


def to_rgb(img: Image.Image) -> np.ndarray:
    """A Pillow image as uint8 RGB ``[H, W, 3]`` (rules in the module docstring)."""
    if img.mode in WIDE_GREY_MODES:
        grey = np.clip(np.asarray(img, dtype=np.int64), 0, 65535)  # [H, W]
        # (v + 128) // 257 == round(v / 257): v / 257 is never exactly k + 0.5 (257 is odd).
        grey = ((grey + 128) // 257).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if img.mode != "RGB":
        img = img.convert("RGB")  # also drops alpha: RGBA -> RGB keeps the stored colours
    return np.asarray(img, dtype=np.uint8)


def read_rgb(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as uint8 RGB ``[H, W, 3]``, EXIF orientation applied.

    Raises:
        DataError: the file is missing, not an image Pillow reads, truncated or too large.
    """
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            upright = ImageOps.exif_transpose(img)  # a new image; the same pixels if no tag
            return to_rgb(upright)
    except FileNotFoundError:
        raise DataError(f"image not found: {path}.") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"cannot read image {path} ({exc}).") from None
    except Image.DecompressionBombError as exc:  # not an OSError
        raise DataError(f"cannot read image {path} ({exc}).") from None


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
    by_stem: dict[PurePosixPath, ImageFile] = {}
    for f in found:
        other = by_stem.setdefault(f.stem, f)
        if other is not f:
            raise DataError(
                f"{other.rel} and {f.rel} in {root} would both be written as {f.stem}.png; "
                "rename one of them."
            )
    return found


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

"""Small I/O helpers shared by every stage: atomic writes, VOC palette PNGs, image loading.

Every file a stage produces goes through :func:`atomic_write`, so a crash never leaves a
truncated file under its final name.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Container, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from smaf.errors import DataError

#: Label value for "ignore" (object boundaries, unlabelled pixels) in VOC masks.
IGNORE_INDEX = 255
#: A path argument: a string or any ``os.PathLike``.
PathLike = str | os.PathLike[str]


def _umask() -> int:
    """The process's umask, read without changing it where Linux allows (threads may be writing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # elsewhere: the classic two-call dance
    os.umask(mask)
    return mask


def default_mode(directory: bool = False) -> int:
    """The mode ``open()`` / ``mkdir()`` would give a new file / folder under the current umask.

    Temporary files and folders (``tempfile.mkstemp``: 0600, ``mkdtemp``: 0700) get it before
    they are renamed into place, so outputs are as readable to colleagues on a shared cluster
    as any file the user writes.
    """
    return (0o777 if directory else 0o666) & ~_umask()


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only on success.

    The temporary file keeps the final suffix (so PIL/numpy pick the right format) and lives in
    the same directory (so the rename is atomic on POSIX). On any exception it is removed. The
    file gets the mode a plain ``open()`` would give it (the umask applies).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent
    )
    os.fchmod(fd, default_mode())
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def voc_palette(num_entries: int = 256) -> list[int]:
    """The PASCAL VOC colour map as a flat ``[r0, g0, b0, r1, ...]`` list of 768 ints.

    Label ``i`` gets the colour whose bits are spread from ``i`` (the devkit's ``labelcolormap``);
    255 (ignore) comes out as (224, 224, 192).
    """
    palette = []
    for i in range(num_entries):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette += [r, g, b]
    return palette


_PALETTE = voc_palette()


def save_mask(path: str | os.PathLike[str], mask: np.ndarray) -> None:
    """Write an ``[H, W]`` label map (values 0..254 and 255) as a VOC palette PNG, atomically."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D [H, W], got shape {mask.shape}")
    if mask.size and (mask.min() < 0 or mask.max() > 255):
        raise ValueError(f"mask values must be in 0..255, got {mask.min()}..{mask.max()}")
    img = Image.fromarray(mask.astype(np.uint8), mode="P")
    img.putpalette(_PALETTE)
    with atomic_write(path) as tmp:
        img.save(tmp, format="PNG")


def save_image(path: str | os.PathLike[str], image: np.ndarray, quality: int = 95) -> None:
    """Write a uint8 ``[H, W, 3]`` RGB image (JPEG or PNG by suffix), atomically."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be uint8 [H, W, 3], got {image.dtype} {image.shape}")
    fmt = "JPEG" if Path(path).suffix.lower() in (".jpg", ".jpeg") else "PNG"
    with atomic_write(path) as tmp:
        Image.fromarray(image, mode="RGB").save(tmp, format=fmt, quality=quality)


#: EXIF orientations that swap width and height (rotations by 90 / 270 degrees).
_TRANSPOSED = {5, 6, 7, 8}
#: Pillow modes holding integer grey values of more than 8 bits (taken as 16-bit).
WIDE_GREY_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")


def to_rgb(img: Image.Image) -> np.ndarray:
    """A Pillow image as uint8 RGB ``[H, W, 3]``, deterministically, whatever its mode.

    * 16-bit (and 32-bit integer) grey ``v`` → ``round(v / 257)`` (0 → 0, 65535 → 255), values
      clipped to 0..65535 first. Pillow reads 16-bit RGB PNGs as 8-bit RGB itself.
    * Alpha (RGBA, LA, PA) is dropped: the stored colours are kept, not composited.
    * Grey, palette, CMYK, YCbCr, 1-bit, float → RGB by Pillow's ``convert("RGB")`` (grey
      copied to the three channels; CMYK by Pillow's formula, no ICC profile; float clipped).
    """
    if img.mode in WIDE_GREY_MODES:
        grey = np.clip(np.asarray(img, dtype=np.int64), 0, 65535)  # [H, W]
        # (v + 128) // 257 == round(v / 257): v / 257 is never exactly k + 0.5 (257 is odd).
        grey = ((grey + 128) // 257).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img, dtype=np.uint8)


def image_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """``(height, width)`` of an image as :func:`load_image` returns it, from the header only."""
    with Image.open(path) as img:
        w, h = img.size
        orientation = img.getexif().get(0x0112, 1)  # EXIF Orientation
    return (w, h) if orientation in _TRANSPOSED else (h, w)


@contextlib.contextmanager
def reading_image(
    path: str | os.PathLike[str],
    what: str = "image",
    *,
    missing: str | None = None,
    fix: str = "Replace or remove it.",
) -> Iterator[None]:
    """Turn what Pillow raises while reading ``path`` (a ``what``: image, mask, saliency map)
    into one :class:`DataError` that names the file: ``missing`` (default ``<what> not found:
    <path>.``) when it does not exist, else that it is unreadable, and ``fix``."""
    try:
        yield
    except FileNotFoundError:
        raise DataError(missing or f"{what} not found: {path}.") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(
            f"cannot read {path} ({exc}): the {what} file is corrupt or truncated, or not an "
            f"image. {fix}"
        ) from None
    except Image.DecompressionBombError as exc:  # not an OSError
        raise DataError(f"cannot read {path} ({exc}).") from None


def load_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as uint8 RGB ``[H, W, 3]``: EXIF orientation applied (a phone photo
    taken upright comes out upright, with its displayed size), then :func:`to_rgb`.

    Raises:
        DataError: the file is missing, not an image Pillow reads, truncated or too large.
    """
    path = Path(path)
    missing = f"image not found: {path}. Check the dataset root and the split list."
    with reading_image(path, missing=missing), Image.open(path) as img:
        img.load()
        return to_rgb(ImageOps.exif_transpose(img))  # the same pixels when there is no tag


def load_mask(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a label PNG as uint8 ``[H, W]`` of raw palette indices (no colour conversion)."""
    path = Path(path)
    missing = f"mask not found: {path}. Check the dataset root and the split list."
    with reading_image(path, "mask", missing=missing), Image.open(path) as img:
        img.load()
        if img.mode not in ("P", "L"):
            raise DataError(
                f"mask {path} has mode {img.mode!r}; expected a palette ('P') or grey ('L') "
                "PNG of class indices, as in VOC's SegmentationClass."
            )
        return np.asarray(img, dtype=np.uint8)


def load_saliency(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a saliency map as uint8 ``[H, W]`` (0 = background .. 255 = salient)."""
    path = Path(path)
    missing = (
        f"saliency map not found: {path}. Rerun the prepare_dataset rule if the saliency "
        "folder changed."
    )
    fix = "Re-download or re-extract it."
    with reading_image(path, "saliency map", missing=missing, fix=fix), Image.open(path) as img:
        img.load()
        if img.mode not in ("L", "P", "RGB", "RGBA", "LA", "1"):
            raise DataError(
                f"saliency map {path} has mode {img.mode!r}; expected an 8-bit grey PNG."
            )
        return np.asarray(img.convert("L"), dtype=np.uint8)


#: A line of the field's train_aug lists: "/JPEGImages/<id>.jpg /SegmentationClassAug/<id>.png".
_PAIR_LINE = re.compile(r"^/?JPEGImages/(?P<id>.+?)\.jpg\s+/?SegmentationClass\w*/\S+\.png$")


def read_id_list(path: str | os.PathLike[str]) -> list[str]:
    """Read a split list: one image id per line, the whole line (stripped; spaces are part of
    the id); blank lines ignored. The field's two-column train_aug lines give their image id.

    Raises:
        DataError: the file is missing, or an id appears twice (it would count twice).
    """
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise DataError(f"split list not found: {path}.") from None
    ids: dict[str, int] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        pair = _PAIR_LINE.match(line)
        image_id = pair["id"] if pair else line
        if image_id in ids:
            raise DataError(
                f"split list {path}, line {lineno}: {image_id!r} is listed again (first on line "
                f"{ids[image_id]}); an image listed twice would count twice. Remove the duplicate."
            )
        ids[image_id] = lineno
    return list(ids)


def read_listed_ids(
    path: str | os.PathLike[str], known: Container[str], *, role: str, where: str, hint: str
) -> list[str]:
    """:func:`read_id_list` of the ``role`` split, each id checked against ``known``.

    Raises:
        DataError: as read_id_list, or ``"split list PATH (ROLE) names N images that are not
            WHERE (first: ID); HINT"``.
    """
    listed = read_id_list(path)
    unknown = [i for i in listed if i not in known]
    if unknown:
        raise DataError(
            f"split list {path} ({role}) names {len(unknown)} images that are not {where} "
            f"(first: {unknown[0]}); {hint}"
        )
    return listed


def write_id_list(path: str | os.PathLike[str], ids: list[str]) -> None:
    """Write a split list atomically, one id per line."""
    with atomic_write(path) as tmp:
        Path(tmp).write_text("".join(f"{i}\n" for i in ids))


def save_maps(path: str | os.PathLike[str], maps: Any, labels: np.ndarray) -> None:
    """Store fused maps ``[C, H, W]`` (numpy or torch) compactly: present classes only, float16,
    compressed ``.npz``.

    Keys: ``classes`` (int16 class indices 1..C of the stored channels), ``maps``
    (float16 ``[k, H, W]``), ``shape`` (``[C, H, W]``).
    """
    present = np.flatnonzero(np.asarray(labels) > 0)
    arr = maps.detach().cpu().numpy() if hasattr(maps, "detach") else np.asarray(maps)
    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(
            f,
            classes=(present + 1).astype(np.int16),
            maps=arr[present].astype(np.float16),
            shape=np.asarray(arr.shape, dtype=np.int32),
        )


def load_maps(path: str | os.PathLike[str]) -> np.ndarray:
    """Inverse of :func:`save_maps`: float32 ``[C, H, W]`` with zeros for absent classes."""
    with np.load(path, allow_pickle=False) as z:
        out = np.zeros(tuple(z["shape"]), dtype=np.float32)
        out[z["classes"].astype(np.int64) - 1] = z["maps"].astype(np.float32)
    return out

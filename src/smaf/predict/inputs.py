"""What ``smaf predict --images`` names: a folder (any depth), an image file, or several of both.

Each image keeps the output name :class:`~smaf.data.images.ImageFile` gives it: its path under
its folder, or, for a file given by itself, its file name.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from smaf.data.images import IMAGE_SUFFIXES, ImageFile, find_images, stem_clash
from smaf.errors import ConfigError, DataError, SmafError

PathLike = str | os.PathLike[str]


def as_list(images: PathLike | Sequence[PathLike]) -> list[Path]:
    """``--images`` as a list of paths (one path or several)."""
    if isinstance(images, str | os.PathLike):
        return [Path(images)]
    return [Path(p) for p in images]


def gather_images(
    images: PathLike | Sequence[PathLike],
    out: PathLike,
    exclude: tuple[PathLike, ...] = (),
) -> list[ImageFile]:
    """The images of every folder (:func:`~smaf.data.images.find_images`, ``exclude`` left out)
    and image file in ``images``, in the order given.

    Raises:
        SmafError: ``out`` is one of the image folders (the outputs need a folder of their own).
        DataError: a path that does not exist, a file that is not an image, or two images
            that would give the same output name.
    """
    paths = as_list(images)
    if not paths:
        raise ConfigError("--images: give a folder of images, an image file, or several.")
    out = Path(out)
    found: list[ImageFile] = []
    for path in paths:
        if path.is_dir():
            if out.resolve() == path.resolve():
                raise SmafError(
                    f"--out {out} is the images folder: the outputs need a folder of their own "
                    f"(e.g. --out {path.parent / (path.name + '_predictions')})."
                )
            found += find_images(path, exclude)
        elif path.is_file():
            if not path.name.lower().endswith(IMAGE_SUFFIXES):
                raise DataError(
                    f"--images {path} is not an image file (the names predict reads end in "
                    f"{', '.join(IMAGE_SUFFIXES)})."
                )
            found.append(ImageFile(PurePosixPath(path.name), path))
        else:
            raise DataError(
                f"--images {path}: no such file or folder (give a folder of images, an image "
                "file, or several)."
            )
    clash = stem_clash(found)
    if clash:
        first, second = clash
        raise DataError(
            f"{first.path} and {second.path} would both be written as masks/{second.stem}.png; "
            "predict them into separate --out folders, or rename one."
        )
    return found

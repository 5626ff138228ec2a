"""SBD (Hariharan et al. 2011) class masks → VOC palette PNGs (``SegmentationClassAug``).

SBD's ``benchmark_RELEASE/dataset/cls/<id>.mat`` are MATLAB v5 files holding a struct
``GTcls`` whose field ``Segmentation`` is the label map (uint8 ``[H, W]``, 0..20), read here
with :func:`scipy.io.loadmat`. The field's pre-converted ``SegmentationClassAug.zip`` holds the
same masks as PNGs; this is the route for people who start from SBD's own ``benchmark.tgz``.
"""

from __future__ import annotations

import logging
import os
import zlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from scipy.io import loadmat
from scipy.io.matlab import MatReadError, matfile_version

from smaf.archives import safe_extract
from smaf.errors import DataError, DownloadError
from smaf.io import atomic_write, save_mask

log = logging.getLogger(__name__)


def load_sbd_segmentation(path: str | os.PathLike[str]) -> np.ndarray:
    """The ``GTcls.Segmentation`` label map (uint8 ``[H, W]``) of one SBD ``cls/<id>.mat``.

    Raises :class:`DataError` naming the file if it is not a MATLAB v5 MAT-file (v7.3/HDF5
    included), is corrupt, or has no 2-D ``GTcls.Segmentation``.
    """
    path = Path(path)
    try:
        major, _ = matfile_version(path)
    except (MatReadError, ValueError, IndexError) as exc:  # IndexError: under 128 bytes
        raise DataError(
            f"{path} is not a MATLAB v5 MAT-file (bad header: {exc}); the download or extraction "
            "is corrupt: delete it and download SBD again."
        ) from None
    if major == 2:
        raise DataError(
            f"{path} is a MATLAB v7.3 (HDF5) file; only v5/v7 MAT-files are supported. Use the "
            "original SBD benchmark.tgz, or the pre-converted SegmentationClassAug.zip."
        )
    if major != 1:
        raise DataError(f"{path} is a MATLAB v4 file, not a MATLAB v5 MAT-file from SBD.")
    try:
        # Unsqueezed: GTcls is a 1x1 struct array, and a mask keeps its 2 dimensions.
        variables = loadmat(path, variable_names=["GTcls"])
    except (MatReadError, ValueError, OSError, zlib.error) as exc:
        raise DataError(
            f"cannot parse MAT-file {path}: {exc}. The file is corrupt; re-extract or download "
            "SBD again, or use the pre-converted SegmentationClassAug.zip."
        ) from None
    gt = variables.get("GTcls")  # a struct array: one record, one field per struct field
    seg = None
    if isinstance(gt, np.ndarray) and gt.size == 1 and "Segmentation" in (gt.dtype.names or ()):
        seg = gt["Segmentation"].item()
    if not isinstance(seg, np.ndarray) or seg.ndim != 2:
        raise DataError(
            f"{path} has no 2-D GTcls.Segmentation (variables: {sorted(variables)}); expected an "
            "SBD benchmark_RELEASE/dataset/cls/*.mat file."
        )
    return seg.astype(np.uint8)


def convert_sbd_to_png(
    cls_mat_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    ids: Iterable[str] | None = None,
) -> list[Path]:
    """Convert SBD ``benchmark_RELEASE/dataset/cls/<id>.mat`` to VOC palette PNGs ``<id>.png``.

    ``ids`` selects the images (default: every ``.mat`` in ``cls_mat_dir``). The PNGs are what
    ``SegmentationClassAug`` holds for SBD images. Each is written atomically; returns their
    paths in order.
    """
    cls_mat_dir, out_dir = Path(cls_mat_dir), Path(out_dir)
    if not cls_mat_dir.is_dir():
        raise DataError(
            f"SBD class folder {cls_mat_dir} not found: extract benchmark.tgz first (it holds "
            "benchmark_RELEASE/dataset/cls), or use the pre-converted SegmentationClassAug.zip."
        )
    id_list = sorted(p.stem for p in cls_mat_dir.glob("*.mat")) if ids is None else list(ids)
    if not id_list:
        raise DataError(f"no .mat files in {cls_mat_dir}; is SBD fully extracted?")
    written = []
    for image_id in id_list:
        mat = cls_mat_dir / f"{image_id}.mat"
        if not mat.is_file():
            raise DataError(f"SBD label {mat} not found; is SBD fully extracted?")
        png = out_dir / f"{image_id}.png"
        save_mask(png, load_sbd_segmentation(mat))
        written.append(png)
    log.info("converted %d SBD labels from %s to %s", len(written), cls_mat_dir, out_dir)
    return written


def extract_and_convert_sbd(
    archive: str | os.PathLike[str],
    *,
    workdir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    marker: str | os.PathLike[str],
) -> int:
    """SBD ``benchmark.tgz`` → ``out_dir/<id>.png`` (SegmentationClassAug); returns the count.

    Extracts into ``workdir`` (safely), converts every ``benchmark_RELEASE/dataset/cls/*.mat``
    and writes ``marker`` last, atomically, so an interrupted run never looks finished.
    SBD images that are also in VOC's SegmentationClass keep SBD's masks here, as in the
    field's SegmentationClassAug.
    """
    safe_extract(archive, workdir)
    cls_dir = Path(workdir) / "benchmark_RELEASE" / "dataset" / "cls"
    if not cls_dir.is_dir():
        raise DownloadError(
            f"{archive} did not contain benchmark_RELEASE/dataset/cls/: is it SBD's benchmark.tgz? "
            "Delete it and download it again, or use aug_source: zip."
        )
    written = convert_sbd_to_png(cls_dir, out_dir)
    with atomic_write(marker) as tmp:
        tmp.write_text(f"files: {len(written)}\narchive: {archive}\ndest: {out_dir}\n")
    return len(written)

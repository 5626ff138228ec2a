"""SBD cls/*.mat → VOC palette PNGs, with .mat files written by scipy.io.savemat as SBD's are."""

from __future__ import annotations

import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse
from scipy.io import savemat

from smaf.data.sbd import convert_sbd_to_png, extract_and_convert_sbd, load_sbd_segmentation
from smaf.errors import DataError, DownloadError
from smaf.io import load_mask


def _sbd_mat(path: Path, seg: np.ndarray, compress: bool = True) -> Path:
    """An SBD-like cls .mat: struct GTcls {Boundaries: cell of sparse, Segmentation, Categories}."""
    boundaries = np.empty((1, 1), dtype=object)  # a MATLAB cell holding one sparse matrix
    boundaries[0, 0] = scipy.sparse.csc_matrix(([1.0], ([1], [1])), shape=seg.shape)
    gtcls = {
        "Boundaries": boundaries,
        "Segmentation": seg,
        "CategoriesPresent": np.unique(seg[seg > 0]).reshape(-1, 1),
    }
    # Another variable first: the reader must pick GTcls out of several.
    variables = {"version": np.array([[4.0, 2.0]]), "GTcls": gtcls}
    savemat(path, variables, do_compression=compress)
    return path


@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize("dtype", [np.uint8, np.float64])  # MATLAB may store labels as double
def test_load_sbd_segmentation(tmp_path: Path, compress: bool, dtype: type) -> None:
    seg = np.arange(12, dtype=np.uint8).reshape(3, 4)  # not square: catches a transpose
    got = load_sbd_segmentation(_sbd_mat(tmp_path / "x.mat", seg.astype(dtype), compress))
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, seg)


def test_mat_without_gtcls_segmentation_is_named(tmp_path: Path) -> None:
    path = tmp_path / "other.mat"
    savemat(path, {"GTinst": {"Segmentation": np.zeros((2, 2), np.uint8)}})
    with pytest.raises(DataError, match=r"other\.mat has no 2-D GTcls\.Segmentation"):
        load_sbd_segmentation(path)
    savemat(path, {"GTcls": {"Boundaries": np.zeros((2, 2))}})
    with pytest.raises(DataError, match="GTcls.Segmentation"):
        load_sbd_segmentation(path)


def test_convert_sbd_to_png(tmp_path: Path) -> None:
    cls_dir = tmp_path / "benchmark_RELEASE" / "dataset" / "cls"
    cls_dir.mkdir(parents=True)
    rng = np.random.default_rng(1)
    segs = {i: rng.integers(0, 21, (7, 9), dtype=np.uint8) for i in ("2008_000002", "2008_000003")}
    for image_id, seg in segs.items():
        _sbd_mat(cls_dir / f"{image_id}.mat", seg)
    out = tmp_path / "SegmentationClassAug"
    written = convert_sbd_to_png(cls_dir, out)
    assert written == [out / "2008_000002.png", out / "2008_000003.png"]
    for image_id, seg in segs.items():
        np.testing.assert_array_equal(load_mask(out / f"{image_id}.png"), seg)
    assert convert_sbd_to_png(cls_dir, tmp_path / "one", ids=["2008_000003"]) == [
        tmp_path / "one" / "2008_000003.png"
    ]
    with pytest.raises(DataError, match="2008_999999.mat not found"):
        convert_sbd_to_png(cls_dir, out, ids=["2008_999999"])
    # A v7.3 (HDF5) header: text, subsystem offset, version 0x0200, endian indicator.
    v73 = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, HDF5 schema 1.00 .".ljust(116, b" ")
    v73 += b"\0" * 8 + struct.pack("<H", 0x0200) + b"IM"
    (cls_dir / "v73.mat").write_bytes(v73.ljust(512, b"\0"))
    with pytest.raises(DataError, match="v7.3"):
        convert_sbd_to_png(cls_dir, out, ids=["v73"])
    (cls_dir / "junk.mat").write_bytes(b"<html>not a mat file</html>")
    with pytest.raises(DataError, match="not a MATLAB v5"):
        convert_sbd_to_png(cls_dir, out, ids=["junk"])
    broken = _sbd_mat(cls_dir / "broken.mat", segs["2008_000002"]).read_bytes()
    (cls_dir / "broken.mat").write_bytes(broken[:-40])  # truncated zlib stream
    with pytest.raises(DataError, match="cannot parse MAT-file"):
        convert_sbd_to_png(cls_dir, out, ids=["broken"])


def test_extract_and_convert_sbd(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    segs = {i: rng.integers(0, 21, (5, 6), dtype=np.uint8) for i in ("2008_000004", "2008_000005")}
    archive = tmp_path / "benchmark.tgz"
    with tarfile.open(archive, "w:gz") as tf:
        for image_id, seg in segs.items():
            mat = _sbd_mat(tmp_path / f"{image_id}.mat", seg)
            tf.add(mat, f"benchmark_RELEASE/dataset/cls/{image_id}.mat")
    out, marker = tmp_path / "SegmentationClassAug", tmp_path / "flags" / "sbd.extracted"
    assert (
        extract_and_convert_sbd(archive, workdir=tmp_path / "sbd", out_dir=out, marker=marker) == 2
    )
    for image_id, seg in segs.items():
        np.testing.assert_array_equal(load_mask(out / f"{image_id}.png"), seg)
    assert marker.read_text().startswith("files: 2\n")

    other = tmp_path / "other.tgz"
    with tarfile.open(other, "w:gz") as tf:
        tf.add(tmp_path / "2008_000004.mat", "somewhere/else.mat")
    with pytest.raises(DownloadError, match="did not contain benchmark_RELEASE/dataset/cls"):
        extract_and_convert_sbd(
            other, workdir=tmp_path / "sbd2", out_dir=out, marker=tmp_path / "flags" / "other"
        )
    assert not (tmp_path / "flags" / "other").exists()

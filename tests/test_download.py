"""Downloads (resume, retries, checksums), safe extraction, manual items, SBD .mat conversion.

Every network test talks only to a throw-away HTTP server on 127.0.0.1 (port 0) started here;
proxies are switched off so nothing leaves the machine.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import struct
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from smaf.download import (
    EPS_SALIENCY_DRIVE_ID,
    EPS_SALIENCY_INSTRUCTIONS,
    VOC_TEST_INSTRUCTIONS,
    ManualDownloadRequired,
    check_manual,
    convert_sbd_to_png,
    download,
    file_digest,
    read_mat_v5,
    require_manual,
    safe_extract,
    verify_checksum,
)
from smaf.errors import DownloadError
from smaf.io import load_mask

REPO_ROOT = Path(__file__).resolve().parents[1]
PAYLOAD = np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes()
MD5 = hashlib.md5(PAYLOAD).hexdigest()
SHA256 = hashlib.sha256(PAYLOAD).hexdigest()
FAST = {"backoff_s": 0.001, "timeout_s": 5, "chunk_bytes": 4096}


# ------------------------------------------------------------------------------------------------
# A local HTTP server with Range support and scripted failures
# ------------------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    """Serves files from ``root``; records request headers; can cut or fail upcoming requests."""

    daemon_threads = True

    def __init__(self, root: Path) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = root
        self.requests: list[dict[str, str]] = []  # lower-cased headers + "path", per GET
        self.cut_after: list[int] = []  # per upcoming request: body bytes sent before hanging up
        self.status_next: list[int] = []  # per upcoming request: an error status to answer
        self.stall_s: float = 0.0  # after a cut, hold the connection open this long (a hang)
        self.ignore_range = False  # answer 200 with the whole file even to Range requests

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{name}"


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        srv = self.server
        srv.requests.append({"path": self.path, **{k.lower(): v for k, v in self.headers.items()}})
        if srv.status_next:
            self.send_error(srv.status_next.pop(0))
            return
        path = srv.root / self.path.lstrip("/")
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if m and not srv.ignore_range:
            start = int(m.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        # The full length is announced even when cutting: that is what an interrupted transfer
        # looks like to the client (fewer bytes than Content-Length, then EOF).
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = srv.cut_after.pop(0) if srv.cut_after else None
        self.wfile.write(body if cut is None else body[:cut])
        if cut is not None and srv.stall_s:
            self.wfile.flush()
            time.sleep(srv.stall_s)
        self.close_connection = True


@pytest.fixture(autouse=True)
def _no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    """urllib honours *_proxy variables; make sure 127.0.0.1 is contacted directly."""
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[_Server]:
    root = tmp_path / "srv"
    root.mkdir()
    (root / "data.bin").write_bytes(PAYLOAD)
    srv = _Server(root)
    # A short poll interval keeps shutdown() (and so each test) fast.
    thread = threading.Thread(target=srv.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(5)


# ------------------------------------------------------------------------------------------------
# download()
# ------------------------------------------------------------------------------------------------


def test_download_verifies_md5_and_sha256(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "out" / "data.bin"
    lines: list[str] = []
    got = download(server.url("data.bin"), dest, md5=MD5, sha256=SHA256, progress=lines.append)
    assert got == dest and dest.read_bytes() == PAYLOAD
    assert not dest.with_name("data.bin.part").exists()
    assert len(server.requests) == 1 and "range" not in server.requests[0]
    assert lines and "100%" in lines[-1] and "MB/s" in lines[-1]
    assert file_digest(dest, "sha256") == SHA256
    verify_checksum(dest, md5=MD5.upper(), sha256=SHA256)  # case does not matter


def test_checksum_mismatch_deletes_everything(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    with pytest.raises(DownloadError) as err:
        download(server.url("data.bin"), dest, md5="0" * 32, config_key="voc_trainval", **FAST)
    msg = str(err.value)
    assert "checksum mismatch" in msg and str(dest) in msg and server.url("data.bin") in msg
    assert f"got {MD5}" in msg and "downloads.voc_trainval.md5" in msg
    assert not dest.exists() and not dest.with_name("data.bin.part").exists()
    with pytest.raises(DownloadError, match="sha256"):
        download(server.url("data.bin"), dest, md5=MD5, sha256="f" * 64, **FAST)
    assert not dest.exists()


def test_malformed_checksum_fails_before_any_request(server: _Server, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="32 hex digits"):
        download(server.url("data.bin"), tmp_path / "x", md5="abc")
    assert server.requests == []


def test_interrupted_download_resumes_on_rerun(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    part = tmp_path / "data.bin.part"
    server.cut_after = [1000]
    with pytest.raises(DownloadError, match="rerun to resume") as err:
        download(server.url("data.bin"), dest, md5=MD5, retries=0, **FAST)
    assert str(part) in str(err.value)
    assert part.read_bytes() == PAYLOAD[:1000] and not dest.exists()

    download(server.url("data.bin"), dest, md5=MD5, retries=0, **FAST)
    assert server.requests[1]["range"] == "bytes=1000-"
    assert dest.read_bytes() == PAYLOAD and not part.exists()


def test_retries_within_one_call_resume(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    server.cut_after = [1000, 5000]  # two interruptions, then a clean transfer
    download(server.url("data.bin"), dest, sha256=SHA256, retries=3, **FAST)
    assert [r.get("range") for r in server.requests] == [None, "bytes=1000-", "bytes=6000-"]
    assert dest.read_bytes() == PAYLOAD


def test_stalled_transfer_times_out_and_resumes(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    server.cut_after, server.stall_s = [2000], 2.0
    download(server.url("data.bin"), dest, md5=MD5, retries=1, **{**FAST, "timeout_s": 0.5})
    assert [r.get("range") for r in server.requests] == [None, "bytes=2000-"]
    assert dest.read_bytes() == PAYLOAD


def test_server_ignoring_range_restarts_from_zero(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    (tmp_path / "data.bin.part").write_bytes(b"x" * 1000)  # not even the right bytes
    server.ignore_range = True
    download(server.url("data.bin"), dest, md5=MD5, **FAST)
    assert server.requests[0]["range"] == "bytes=1000-"
    assert dest.read_bytes() == PAYLOAD


def test_complete_part_is_finished_with_416(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD)  # crashed between the last byte and rename
    download(server.url("data.bin"), dest, md5=MD5, **FAST)
    assert len(server.requests) == 1 and dest.read_bytes() == PAYLOAD


def test_part_longer_than_remote_starts_over(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD + b"stale")
    download(server.url("data.bin"), dest, md5=MD5, **FAST)
    assert [r.get("range") for r in server.requests] == [f"bytes={len(PAYLOAD) + 5}-", None]
    assert dest.read_bytes() == PAYLOAD


def test_valid_dest_makes_no_request(server: _Server, tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    dest.write_bytes(PAYLOAD)
    assert download(server.url("data.bin"), dest, md5=MD5) == dest
    assert server.requests == []
    dest.write_bytes(b"corrupt")  # a bad existing file is fetched again
    download(server.url("data.bin"), dest, md5=MD5, **FAST)
    assert len(server.requests) == 1 and dest.read_bytes() == PAYLOAD


def test_http_404_is_not_retried(server: _Server, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="HTTP 404") as err:
        download(server.url("missing.bin"), tmp_path / "m.bin", retries=3, **FAST)
    assert server.url("missing.bin") in str(err.value)
    assert len(server.requests) == 1


def test_http_503_is_retried(server: _Server, tmp_path: Path) -> None:
    server.status_next = [503, 503]
    download(server.url("data.bin"), tmp_path / "data.bin", md5=MD5, retries=2, **FAST)
    assert len(server.requests) == 3


def test_file_url_is_copied_and_verified(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(PAYLOAD)
    dest = download(src.as_uri(), tmp_path / "copy" / "data.bin", md5=MD5)
    assert dest.read_bytes() == PAYLOAD
    with pytest.raises(DownloadError, match="does not exist"):
        download((tmp_path / "nope").as_uri(), tmp_path / "nope.bin")


# ------------------------------------------------------------------------------------------------
# safe_extract()
# ------------------------------------------------------------------------------------------------


def _tar(path: Path, entries: list[tuple[str, str, bytes | str]], mode: str = "w") -> Path:
    """Write a tar from ``(name, kind, data-or-linkname)``; kind: file/dir/sym/hard/chr/fifo."""
    kinds = {
        "dir": tarfile.DIRTYPE,
        "sym": tarfile.SYMTYPE,
        "hard": tarfile.LNKTYPE,
        "chr": tarfile.CHRTYPE,
        "fifo": tarfile.FIFOTYPE,
    }
    with tarfile.open(path, mode) as tf:
        for name, kind, arg in entries:
            info = tarfile.TarInfo(name)
            info.mode = 0o755 if kind == "dir" else 0o644
            if kind == "file":
                assert isinstance(arg, bytes)
                info.size = len(arg)
                tf.addfile(info, io.BytesIO(arg))
                continue
            info.type = kinds[kind]
            if kind in ("sym", "hard"):
                info.linkname = str(arg)
            tf.addfile(info)
    return path


def _assert_nothing_extracted(tmp_path: Path, dest: Path) -> None:
    assert not dest.exists() or not any(dest.iterdir())
    assert not list(dest.parent.glob(f".{dest.name}.extract-*"))  # temp dir cleaned up
    assert not (tmp_path / "evil").exists() and not (tmp_path / "abs_evil").exists()


@pytest.mark.parametrize(
    ("entries", "bad_member"),
    [
        ([("ok.txt", "file", b"ok"), ("../evil", "file", b"x")], "../evil"),
        ([("top/../../evil", "file", b"x")], "top/../../evil"),
        ([("ok.txt", "file", b"ok"), ("<ABS>", "file", b"x")], "<ABS>"),
        ([("link", "sym", "../../evil")], "link"),
        ([("link", "sym", "<ABS>")], "link"),
        # Each link stays inside on its own; chained, "e" points above the root.
        ([("d", "sym", "."), ("e", "sym", "d/..")], "e"),
        ([("d", "sym", ".."), ("d/evil", "file", b"x")], "d"),
        ([("hard", "hard", "../evil")], "hard"),
        ([("null", "chr", "")], "null"),
        ([("pipe", "fifo", "")], "pipe"),
    ],
)
def test_traversal_or_link_leaving_the_tree_in_tar_is_refused(
    tmp_path: Path, entries: list[tuple[str, str, bytes | str]], bad_member: str
) -> None:
    abs_target = str(tmp_path / "abs_evil")
    entries = [
        (
            n.replace("<ABS>", abs_target),
            k,
            a.replace("<ABS>", abs_target) if isinstance(a, str) else a,
        )
        for n, k, a in entries
    ]
    bad_member = bad_member.replace("<ABS>", abs_target)
    archive = _tar(tmp_path / "evil.tar", entries)
    dest = tmp_path / "out" / "dest"
    with pytest.raises(DownloadError) as err:
        safe_extract(archive, dest)
    assert repr(bad_member) in str(err.value) and str(archive) in str(err.value)
    _assert_nothing_extracted(tmp_path, dest)


@pytest.mark.parametrize("name", ["../evil", "/abs_evil", "a/../../evil", "..\\evil"])
def test_traversal_in_zip_is_refused(tmp_path: Path, name: str) -> None:
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok.txt", b"ok")
        zf.writestr(zipfile.ZipInfo(name), b"x")  # ZipInfo keeps the name as given
    dest = tmp_path / "dest"
    with pytest.raises(DownloadError, match="refusing to extract"):
        safe_extract(archive, dest)
    _assert_nothing_extracted(tmp_path, dest)


def test_tar_gz_with_strip_components(tmp_path: Path) -> None:
    archive = _tar(
        tmp_path / "good.tar.gz",
        [
            ("./top", "dir", b""),
            ("./top/a.txt", "file", b"alpha"),
            ("./top/sub/b.txt", "file", b"beta"),
            ("./top/sub/link", "sym", "../a.txt"),  # inside: allowed
            ("./top/hard", "hard", "top/a.txt"),  # archive path: stripped too
        ],
        mode="w:gz",
    )
    dest = tmp_path / "dest"
    (dest / "sub").mkdir(parents=True)
    (dest / "keep.txt").write_text("kept")  # existing content is merged, not wiped
    files = safe_extract(archive, dest, strip_components=1)
    assert files == [dest / "a.txt", dest / "sub/b.txt", dest / "sub/link", dest / "hard"]
    assert (dest / "a.txt").read_bytes() == b"alpha"
    assert (dest / "sub/b.txt").read_bytes() == b"beta"
    assert (dest / "sub/link").is_symlink() and (dest / "sub/link").read_bytes() == b"alpha"
    assert (dest / "hard").read_bytes() == b"alpha"
    assert (dest / "keep.txt").read_text() == "kept"
    assert not list(tmp_path.glob(".dest.extract-*"))


def test_zip_with_strip_components(tmp_path: Path) -> None:
    archive = tmp_path / "SegmentationClassAug.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("SegmentationClassAug/", b"")
        zf.writestr("SegmentationClassAug/2007_000032.png", b"png1")
        zf.writestr("SegmentationClassAug/sub/2007_000033.png", b"png2")
        zf.writestr("__MACOSX/._junk", b"")  # stripping is blind to names: this lands too
    files = safe_extract(archive, tmp_path / "dest", strip_components=1)
    dest = tmp_path / "dest"
    assert files == [dest / "2007_000032.png", dest / "sub/2007_000033.png", dest / "._junk"]
    assert (dest / "sub/2007_000033.png").read_bytes() == b"png2"


def test_corrupt_or_foreign_archive(tmp_path: Path) -> None:
    good = _tar(tmp_path / "g.tar.gz", [("a.txt", "file", PAYLOAD)], mode="w:gz")
    truncated = tmp_path / "t.tar.gz"
    truncated.write_bytes(good.read_bytes()[:-2000])
    with pytest.raises(DownloadError, match="corrupt or truncated"):
        safe_extract(truncated, tmp_path / "dest")
    _assert_nothing_extracted(tmp_path, tmp_path / "dest")
    html = tmp_path / "page.zip"
    html.write_text("<html>Dropbox sign-in</html>")
    with pytest.raises(DownloadError, match="neither a tar nor a zip"):
        safe_extract(html, tmp_path / "dest")


# ------------------------------------------------------------------------------------------------
# Manual items
# ------------------------------------------------------------------------------------------------


def test_manual_item_message(tmp_path: Path) -> None:
    expected = tmp_path / "resources" / "saliency"
    with pytest.raises(ManualDownloadRequired) as err:
        check_manual(expected, "EPS saliency maps", EPS_SALIENCY_INSTRUCTIONS)
    msg = str(err.value)
    assert EPS_SALIENCY_DRIVE_ID in msg and "drive.google.com" in msg and str(expected) in msg
    assert isinstance(err.value, DownloadError)

    expected.mkdir(parents=True)  # an empty folder is not "downloaded"
    with pytest.raises(ManualDownloadRequired):
        check_manual(expected, "EPS saliency maps", EPS_SALIENCY_INSTRUCTIONS)
    (expected / "2007_000032.png").write_bytes(b"x")
    assert check_manual(expected, "EPS saliency maps", EPS_SALIENCY_INSTRUCTIONS) == expected

    with pytest.raises(ManualDownloadRequired, match=r"host\.robots\.ox\.ac\.uk.*voc_test"):
        require_manual("VOC test", expected_path="voc_test", instructions=VOC_TEST_INSTRUCTIONS)


# ------------------------------------------------------------------------------------------------
# SBD .mat → PNG, with MAT v5 files built byte by byte from the MathWorks format spec
# ------------------------------------------------------------------------------------------------

MI_INT8, MI_UINT8, MI_INT32, MI_UINT32, MI_DOUBLE, MI_MATRIX, MI_COMPRESSED = 1, 2, 5, 6, 9, 14, 15
MX_CELL, MX_STRUCT, MX_SPARSE, MX_DOUBLE, MX_UINT8 = 1, 2, 5, 6, 9


def _el(e: str, mtype: int, payload: bytes, pad: bool = True) -> bytes:
    """A data element: 8-byte tag (type, byte count), payload, zero padding to 8 bytes."""
    return struct.pack(e + "II", mtype, len(payload)) + payload + b"\0" * (-len(payload) % 8 * pad)


def _small_el(e: str, mtype: int, payload: bytes) -> bytes:
    """A small data element (<= 4 bytes): 16-bit count and type packed into the tag."""
    # As one uint32 in file byte order: count in the high 16 bits, type in the low 16 bits.
    head = struct.pack(e + "I", len(payload) << 16 | mtype)
    return head + payload.ljust(4, b"\0")


def _matrix(
    e: str, mx_class: int, dims: tuple[int, ...], name: str, body: bytes, nzmax: int = 0
) -> bytes:
    """A miMATRIX element: array flags (class, nzmax), dimensions, name, then ``body``."""
    flags = _el(e, MI_UINT32, struct.pack(e + "II", mx_class, nzmax))
    dims_el = _el(e, MI_INT32, struct.pack(e + f"{len(dims)}i", *dims))
    return _el(e, MI_MATRIX, flags + dims_el + _el(e, MI_INT8, name.encode()) + body)


def _uint8(e: str, arr: np.ndarray, name: str = "") -> bytes:
    return _matrix(e, MX_UINT8, arr.shape, name, _el(e, MI_UINT8, arr.tobytes(order="F")))


def _sparse(e: str) -> bytes:
    """3x4 double sparse matrix with one 1.0 at (1, 1): ir, jc, pr."""
    ir = _el(e, MI_INT32, struct.pack(e + "i", 1))
    jc = _el(e, MI_INT32, struct.pack(e + "5i", 0, 0, 1, 1, 1))
    pr = _el(e, MI_DOUBLE, struct.pack(e + "d", 1.0))
    return _matrix(e, MX_SPARSE, (3, 4), "", ir + jc + pr, nzmax=1)


def _struct(e: str, name: str, fields: dict[str, bytes]) -> bytes:
    names = b"".join(f.encode().ljust(32, b"\0") for f in fields)
    body = _small_el(e, MI_INT32, struct.pack(e + "i", 32)) + _el(e, MI_INT8, names)
    return _matrix(e, MX_STRUCT, (1, 1), name, body + b"".join(fields.values()))


def _sbd_mat(path: Path, seg: np.ndarray, e: str = "<", compress: bool = True) -> Path:
    """An SBD-like cls .mat: struct GTcls {Boundaries: cell of sparse, Segmentation, Categories}."""
    gtcls = _struct(
        e,
        "GTcls",
        {
            "Boundaries": _matrix(e, MX_CELL, (1, 1), "", _sparse(e)),
            "Segmentation": _uint8(e, seg),
            "CategoriesPresent": _uint8(e, np.unique(seg[seg > 0]).reshape(-1, 1)),
        },
    )
    # A double array stored as miUINT8, as MATLAB does for small integers.
    other = _matrix(e, MX_DOUBLE, (1, 2), "version", _el(e, MI_UINT8, bytes([4, 2])))
    text = b"MATLAB 5.0 MAT-file, Platform: smaf tests, Created on: 2011".ljust(116, b" ")
    header = text + b"\0" * 8 + struct.pack(e + "H", 0x0100) + struct.pack(e + "H", 0x4D49)
    elements = [other, gtcls]
    if compress:  # MATLAB >= 7 wraps each variable in an unpadded zlib element
        elements = [_el(e, MI_COMPRESSED, zlib.compress(x), pad=False) for x in elements]
    path.write_bytes(header + b"".join(elements))
    return path


@pytest.mark.parametrize(("endian", "compress"), [("<", True), (">", False)])
def test_read_mat_v5(tmp_path: Path, endian: str, compress: bool) -> None:
    seg = np.arange(12, dtype=np.uint8).reshape(3, 4)
    variables = read_mat_v5(_sbd_mat(tmp_path / "x.mat", seg, endian, compress))
    np.testing.assert_array_equal(variables["version"], [[4.0, 2.0]])
    gt = variables["GTcls"]
    assert gt["Segmentation"].dtype == np.uint8
    np.testing.assert_array_equal(gt["Segmentation"], seg)
    np.testing.assert_array_equal(gt["CategoriesPresent"].ravel(), np.arange(1, 12))
    assert gt["Boundaries"] == [None]  # sparse: skipped, but correctly stepped over


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
    with pytest.raises(DownloadError, match="2008_999999.mat not found"):
        convert_sbd_to_png(cls_dir, out, ids=["2008_999999"])
    (cls_dir / "v73.mat").write_bytes(b"MATLAB 7.3 MAT-file".ljust(512, b" "))
    with pytest.raises(DownloadError, match="v7.3"):
        convert_sbd_to_png(cls_dir, out, ids=["v73"])
    (cls_dir / "junk.mat").write_bytes(b"<html>not a mat file</html>")
    with pytest.raises(DownloadError, match="not a MATLAB v5"):
        convert_sbd_to_png(cls_dir, out, ids=["junk"])
    broken = _sbd_mat(cls_dir / "broken.mat", segs["2008_000002"]).read_bytes()
    (cls_dir / "broken.mat").write_bytes(broken[:-40])  # truncated zlib stream
    with pytest.raises(DownloadError, match="cannot parse MAT-file"):
        convert_sbd_to_png(cls_dir, out, ids=["broken"])


# ------------------------------------------------------------------------------------------------
# Workflow scripts, run as Snakemake would (a fresh interpreter with a `snakemake` object)
# ------------------------------------------------------------------------------------------------

_RUNNER = """
import json, runpy, sys
class NamedList(list):
    def __init__(self, spec):
        super().__init__(spec.get("_", []) + [v for k, v in spec.items() if k != "_"])
        self.__dict__.update({k: v for k, v in spec.items() if k != "_"})
spec = json.loads(sys.argv[2])
smk = type("Snakemake", (), {})()
for key in ("input", "output", "params", "log"):
    setattr(smk, key, NamedList(spec.get(key, {})))
runpy.run_path(sys.argv[1], init_globals={"snakemake": smk}, run_name="__main__")
"""


def _run_script(name: str, spec: dict[str, dict[str, object]]) -> subprocess.CompletedProcess[str]:
    script = REPO_ROOT / "workflow" / "scripts" / name
    cmd = [sys.executable, "-c", _RUNNER, str(script), json.dumps(spec)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def test_download_script(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(PAYLOAD)
    log = tmp_path / "logs" / "download.log"
    log.parent.mkdir()
    spec: dict[str, dict[str, object]] = {
        "output": {"_": [str(tmp_path / "data.bin")]},
        "params": {"url": src.as_uri(), "md5": MD5, "sha256": "", "retries": 1},
        "log": {"_": [str(log)]},
    }
    done = _run_script("download.py", spec)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "data.bin").read_bytes() == PAYLOAD and "saved" in log.read_text()

    spec["output"] = {"_": [str(tmp_path / "bad.bin")]}
    spec["params"]["md5"] = "0" * 32
    done = _run_script("download.py", spec)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "checksum mismatch" in done.stderr
    assert "Traceback" not in done.stderr and "checksum mismatch" in log.read_text()


def test_extract_and_manual_scripts(tmp_path: Path) -> None:
    entries: list[tuple[str, str, bytes | str]] = [
        ("top/a.txt", "file", b"a"),
        ("top/b.txt", "file", b"b"),
    ]
    archive = _tar(tmp_path / "a.tgz", entries, "w:gz")
    marker = tmp_path / "flags" / "extracted"
    spec: dict[str, dict[str, object]] = {
        "input": {"archive": str(archive)},
        "output": {"marker": str(marker)},
        "params": {"dest": str(tmp_path / "dest"), "strip_components": 1},
        "log": {"_": [str(tmp_path / "extract.log")]},
    }
    done = _run_script("extract.py", spec)
    assert done.returncode == 0, done.stderr
    assert "files: 2" in marker.read_text() and (tmp_path / "dest" / "b.txt").read_bytes() == b"b"

    evil = _tar(tmp_path / "evil.tar", [("../evil", "file", b"x")])
    spec["input"] = {"archive": str(evil)}
    spec["output"] = {"marker": str(tmp_path / "flags" / "evil")}
    done = _run_script("extract.py", spec)
    assert done.returncode == 1 and "refusing to extract" in done.stderr
    assert not (tmp_path / "flags" / "evil").exists()

    manual = {
        "output": {"_": [str(tmp_path / "flags" / "saliency")]},
        "params": {
            "path": str(tmp_path / "saliency"),
            "name": "EPS saliency maps",
            "instructions": EPS_SALIENCY_INSTRUCTIONS,
        },
        "log": {"_": [str(tmp_path / "manual.log")]},
    }
    done = _run_script("manual_item.py", manual)
    assert done.returncode == 1 and EPS_SALIENCY_DRIVE_ID in done.stderr
    assert done.stderr.count("\n") == 1 and not (tmp_path / "flags" / "saliency").exists()


@pytest.mark.parametrize("name", ["download.py", "extract.py", "manual_item.py"])
def test_scripts_have_no_future_import(name: str) -> None:
    """Snakemake prepends a preamble to scripts: a __future__ import there is a SyntaxError."""
    text = (REPO_ROOT / "workflow" / "scripts" / name).read_text()
    assert not re.search(r"^from __future__ import", text, re.MULTILINE)

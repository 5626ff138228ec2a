"""Downloads (resume, retries, checksums), manual items, and the download/extract scripts.

Every network test talks only to a throw-away HTTP server on 127.0.0.1 (port 0) started here;
proxies are switched off so nothing leaves the machine. Extraction is tested in
test_archives.py, SBD's .mat conversion in test_sbd.py.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from test_archives import _tar

from smaf.download import (
    EPS_SALIENCY_DRIVE_ID,
    EPS_SALIENCY_INSTRUCTIONS,
    VOC_TEST_INSTRUCTIONS,
    ManualDownloadRequired,
    check_manual,
    download,
    file_digest,
    require_manual,
)
from smaf.errors import DownloadError

pytestmark = pytest.mark.usefixtures("direct_localhost")  # reach 127.0.0.1 directly

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
    # A present file that matches is kept, without a request (the checksums' case does not matter).
    assert download(server.url("data.bin"), dest, md5=MD5.upper(), sha256=SHA256) == dest
    assert len(server.requests) == 1


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


def _error_lines(stderr: str) -> list[str]:
    """The first ERROR line of a script's stderr and every line after it.

    Scripts log to stderr through smaf.runner.run_logged, so progress (INFO) lines may come
    first; a failure must end them with exactly one line: the reason, no traceback.
    """
    lines = stderr.splitlines()
    start = next((i for i, line in enumerate(lines) if " ERROR " in line), len(lines))
    return lines[start:]


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
    (line,) = _error_lines(done.stderr)  # one line, nothing after it
    assert "checksum mismatch" in line
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


@pytest.mark.parametrize("name", ["download.py", "extract.py", "manual_item.py", "convert_sbd.py"])
def test_scripts_have_no_future_import(name: str) -> None:
    """Snakemake prepends a preamble to scripts: a __future__ import there is a SyntaxError."""
    text = (REPO_ROOT / "workflow" / "scripts" / name).read_text()
    assert not re.search(r"^from __future__ import", text, re.MULTILINE)

"""Fetching and unpacking the datasets: resumable, checksummed downloads and safe extraction.

Everything here uses the standard library (plus numpy and :mod:`smaf.io` for the SBD
conversion), so the download stage runs before any heavy dependency is needed.

* :func:`download` — HTTP(S)/``file://`` download to ``<dest>.part``, resumed with ``Range``
  requests across retries and reruns, verified (md5 and/or sha256) before it is renamed onto
  ``dest``.
* :func:`safe_extract` — tar/tar.gz/zip extraction that refuses members escaping the destination
  (absolute paths, ``..``, links pointing outside, device files) and only moves the result into
  place once the whole archive extracted.
* :func:`require_manual` / :func:`check_manual` — items that cannot be downloaded automatically
  (EPS saliency maps on Google Drive, the VOC test set behind a registration).
* :func:`convert_sbd_to_png` — SBD ``cls/*.mat`` → VOC palette PNGs (``SegmentationClassAug``)
  with a minimal MATLAB v5 reader (:func:`read_mat_v5`), so scipy is not needed.

Every problem a user can fix is a :class:`~smaf.errors.DownloadError` whose message names the
file or URL and the fix.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import shutil
import struct
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath
from typing import Any, NoReturn

import numpy as np

from smaf.errors import DownloadError

log = logging.getLogger(__name__)

#: Instructions for the EPS saliency maps (PFAN), distributed on Google Drive only.
EPS_SALIENCY_DRIVE_ID = "19AjSmgdMlIZH4FXVZ5zjlUZcoZZCkwrI"
EPS_SALIENCY_INSTRUCTIONS = (
    "download the PFAN saliency maps used by EPS from Google Drive "
    f"(file id {EPS_SALIENCY_DRIVE_ID}, "
    f"https://drive.google.com/file/d/{EPS_SALIENCY_DRIVE_ID}/view) in a browser or with "
    f"`gdown {EPS_SALIENCY_DRIVE_ID}`, and unpack it so that the folder holds one "
    "<image id>.png per VOC image."
)
#: Instructions for the VOC 2012 test images, which sit behind the evaluation server's login.
VOC_TEST_INSTRUCTIONS = (
    "register at the PASCAL VOC evaluation server (http://host.robots.ox.ac.uk:8080/), "
    "download VOC2012test.tar from its 'PASCAL VOC 2012 test data' page and unpack it so that "
    "the folder holds VOCdevkit/VOC2012/JPEGImages and ImageSets/Segmentation/test.txt."
)

# A sha256 may be given as a prefix of >= 8 hex digits: torchvision publishes only the first 8
# in its file names (resnet101-63fe2227.pth); a full digest is preferred where one is known.
_HEX = {"md5": re.compile(r"[0-9a-f]{32}"), "sha256": re.compile(r"[0-9a-f]{8,64}")}
# Server-side hiccups worth another try; anything else (404, 403, ...) will not fix itself.
_RETRY_HTTP_CODES = frozenset({408, 425, 429, 500, 502, 503, 504})
_USER_AGENT = "smaf-download/0.1 (python urllib)"


class ManualDownloadRequired(DownloadError):
    """An input that SMAF cannot fetch by itself (login, Google Drive): a person must fetch it."""


class _ShortRead(Exception):
    """The server closed the connection before sending all the bytes it announced."""


# Errors after which a retry can succeed; the .part file is kept so the retry resumes.
# OSError covers socket errors (resets, timeouts, SSL); local disk errors are turned into a
# DownloadError inside _fetch_http, so they are not retried.
_RETRYABLE: tuple[type[BaseException], ...] = (
    urllib.error.URLError,
    http.client.HTTPException,  # IncompleteRead, RemoteDisconnected, BadStatusLine, ...
    OSError,  # ConnectionError, TimeoutError, socket.error
    _ShortRead,
)


# ------------------------------------------------------------------------------------------------
# Checksums
# ------------------------------------------------------------------------------------------------


def file_digest(path: str | os.PathLike[str], algo: str, chunk_bytes: int = 1 << 20) -> str:
    """Hex digest of a file with ``hashlib`` algorithm ``algo`` ("md5", "sha256", ...).

    Reads in chunks so multi-GB archives (VOC trainval is 2 GB) do not load into memory.
    """
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            h.update(chunk)
    return h.hexdigest()


def _normalise_checksums(md5: str | None, sha256: str | None, what: str) -> dict[str, str]:
    """``{"md5": ..., "sha256": ...}`` for the checksums given; "" and None mean "not given"."""
    out = {}
    for algo, value in (("md5", md5), ("sha256", sha256)):
        if not value:
            continue
        value = str(value).strip().lower()
        if not _HEX[algo].fullmatch(value):
            n = "32" if algo == "md5" else "8 to 64"
            raise DownloadError(
                f"invalid {algo} {value!r} for {what}: expected {n} hex digits. "
                f"Fix the {algo} of this download in config.yaml."
            )
        out[algo] = value
    return out


def _first_mismatch(path: Path, expected: dict[str, str]) -> tuple[str, str, str] | None:
    """``(algo, expected, actual)`` of the first checksum that does not match, else None."""
    for algo, want in expected.items():
        got = file_digest(path, algo)
        if not got.startswith(want) or (algo == "md5" and got != want):
            return algo, want, got
    return None


def verify_checksum(
    path: str | os.PathLike[str], md5: str | None = None, sha256: str | None = None
) -> None:
    """Raise :class:`DownloadError` unless ``path`` matches every checksum given.

    With neither ``md5`` nor ``sha256`` this only checks that the file exists.
    """
    path = Path(path)
    expected = _normalise_checksums(md5, sha256, str(path))
    if not path.is_file():
        raise DownloadError(f"cannot verify {path}: file not found.")
    bad = _first_mismatch(path, expected)
    if bad:
        algo, want, got = bad
        raise DownloadError(
            f"checksum mismatch for {path}: expected {algo} {want}, got {got}. "
            "The file is corrupt or truncated (or upstream changed it): delete it and download "
            "it again."
        )


# ------------------------------------------------------------------------------------------------
# Download
# ------------------------------------------------------------------------------------------------


class _Progress:
    """Throttled progress lines (bytes, %, MB/s) to a callable or the module logger."""

    def __init__(self, name: str, sink: Callable[[str], None] | None, interval_s: float = 5.0):
        self.name = name
        self.sink = sink or log.info
        self.interval_s = interval_s
        self.start = self.last = time.monotonic()
        self.start_bytes = 0

    def begin(self, done: int) -> None:
        """Start timing an attempt that resumes at byte ``done`` (the rate counts new bytes)."""
        self.start = self.last = time.monotonic()
        self.start_bytes = done

    def update(self, done: int, total: int | None, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self.last < self.interval_s:
            return
        self.last = now
        rate = (done - self.start_bytes) / max(now - self.start, 1e-6) / 1e6
        if total:
            size = f"{done / 1e6:.1f} of {total / 1e6:.1f} MB ({100.0 * done / total:.0f}%)"
        else:
            size = f"{done / 1e6:.1f} MB"
        self.sink(f"{self.name}: {size}, {rate:.2f} MB/s")


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """Parse ``Content-Range: bytes START-END/TOTAL`` (or ``bytes */TOTAL``) → (start, total)."""
    m = re.fullmatch(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*", value or "")
    if not m:
        return None, None
    start = int(m.group(1)) if m.group(1) is not None else None
    total = int(m.group(2)) if m.group(2) != "*" else None
    return start, total


def _fetch_http(
    url: str,
    part: Path,
    *,
    dest: Path,
    timeout_s: float,
    chunk_bytes: int,
    progress: _Progress,
    allow_restart: bool = True,
) -> None:
    """One attempt: append the missing bytes of ``url`` to ``part`` (resuming if it exists).

    Returns once the server has sent everything it announced (or said with 416 that ``part`` is
    already whole). Raises one of ``_RETRYABLE`` for transient trouble, DownloadError otherwise.
    """
    offset = part.stat().st_size if part.exists() else 0
    # identity encoding: byte ranges must refer to the file itself, not a gzip of it.
    headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        request = urllib.request.Request(url, headers=headers)
    except ValueError as exc:  # "unknown url type"
        raise DownloadError(
            f"invalid download URL {url!r} ({exc}); fix it in config.yaml."
        ) from None
    try:
        response = urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and offset:
            # Nothing left to send from `offset`: the .part is complete, unless the remote file
            # is shorter than it (upstream changed), in which case start over.
            _, total = _content_range(exc.headers.get("Content-Range"))
            if total is None or total == offset:
                return
            log.warning(
                "%s is longer than %s (%d > %d bytes); restarting", part, url, offset, total
            )
            part.unlink()
            if allow_restart:
                _fetch_http(
                    url,
                    part,
                    dest=dest,
                    timeout_s=timeout_s,
                    chunk_bytes=chunk_bytes,
                    progress=progress,
                    allow_restart=False,
                )
                return
        if exc.code in _RETRY_HTTP_CODES:
            raise
        raise DownloadError(
            f"download of {url} failed: HTTP {exc.code} {exc.reason}. Check the URL in "
            f"config.yaml, or download the file by hand and put it at {dest}."
        ) from None

    with response:
        status = response.status
        length = response.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        total: int | None
        if status == 206:
            start, total = _content_range(response.headers.get("Content-Range"))
            if start != offset:
                # A range we did not ask for: appending it would corrupt the file.
                part.unlink(missing_ok=True)
                raise _ShortRead(f"server sent a range starting at {start}, asked for {offset}")
            mode = "ab"
        else:
            if offset:
                log.info("%s ignored the Range request (HTTP %d); restarting from 0", url, status)
            offset = 0
            total = length
            mode = "wb"
        expected_end = offset + length if length is not None else total
        done = offset
        progress.begin(done)
        try:
            f = open(part, mode)
        except OSError as exc:
            raise DownloadError(f"cannot write {part}: {exc}") from None
        # read1 returns what has arrived (up to chunk_bytes) instead of waiting to fill the
        # chunk, so bytes received before a stall or reset reach the .part and are resumed from.
        read = getattr(response, "read1", response.read)
        with f:
            while chunk := read(chunk_bytes):
                try:
                    f.write(chunk)
                except OSError as exc:  # disk full, quota: retrying would not help
                    raise DownloadError(
                        f"cannot write {part} ({done} bytes so far): {exc}. Free some space "
                        "and rerun to resume."
                    ) from None
                done += len(chunk)
                progress.update(done, total)
            f.flush()
            os.fsync(f.fileno())
    if expected_end is not None and done < expected_end:
        # Python's http.client returns b"" instead of raising when the peer closes early.
        raise _ShortRead(f"connection closed after {done} of {expected_end} bytes")
    progress.update(done, total, final=True)


def _fetch_file_url(url: str, part: Path) -> None:
    """Copy a ``file://`` URL to ``part`` (used for local mirrors and tests)."""
    parsed = urllib.parse.urlparse(url)
    if parsed.netloc not in ("", "localhost"):
        raise DownloadError(f"unsupported file URL {url!r}: use file:///absolute/path.")
    src = Path(urllib.request.url2pathname(parsed.path))
    if not src.is_file():
        raise DownloadError(f"download source {src} (from {url}) does not exist.")
    shutil.copyfile(src, part)


def download(
    url: str,
    dest: str | os.PathLike[str],
    *,
    md5: str | None = None,
    sha256: str | None = None,
    retries: int = 3,
    backoff_s: float = 1.0,
    timeout_s: float = 60,
    chunk_bytes: int = 1 << 20,
    progress: Callable[[str], None] | None = None,
    config_key: str | None = None,
) -> Path:
    """Download ``url`` to ``dest``, resumably, and verify it before it appears under its name.

    Bytes go to ``<dest>.part``. If a ``.part`` exists (an earlier try or run was interrupted)
    the download resumes with ``Range: bytes=N-``; a server answering 200 instead of 206 makes
    it restart from 0, and 416 means the ``.part`` is already whole. Network errors and short
    reads are retried ``retries`` more times with exponential backoff (``backoff_s``, x2 each
    time), keeping the ``.part`` so each try resumes. Once complete, the ``.part`` is checked
    against ``md5`` and/or ``sha256`` (either, both, or none; "" counts as none) and only then
    renamed onto ``dest``. A mismatch deletes the ``.part``.

    If ``dest`` already exists and matches the checksums (or none are given), nothing is
    downloaded. ``file://`` URLs are copied. ``progress`` receives human-readable progress lines;
    without it they go to this module's logger at INFO. ``config_key`` (e.g. ``"voc_trainval"``)
    only makes error messages name the config entry to fix.

    Returns ``dest`` as a Path. Raises :class:`DownloadError` with the URL, the file and the fix.
    """
    dest = Path(dest)
    expected = _normalise_checksums(md5, sha256, url)
    if retries < 0:
        raise DownloadError(f"retries must be >= 0, got {retries}")

    if dest.is_file():
        bad = _first_mismatch(dest, expected)
        if bad is None:
            log.info(
                "%s already present%s; not downloading", dest, " and verified" if expected else ""
            )
            return dest
        algo, want, got = bad
        log.warning(
            "%s exists but its %s is %s, not %s; downloading it again", dest, algo, got, want
        )

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    meter = _Progress(dest.name, progress)
    scheme = urllib.parse.urlparse(url).scheme.lower()
    log.info("downloading %s -> %s", url, dest)

    if scheme == "file":
        _fetch_file_url(url, part)
    else:
        attempts = retries + 1
        for attempt in range(1, attempts + 1):
            try:
                _fetch_http(
                    url,
                    part,
                    dest=dest,
                    timeout_s=timeout_s,
                    chunk_bytes=chunk_bytes,
                    progress=meter,
                )
                break
            except _RETRYABLE as exc:
                if isinstance(exc, urllib.error.HTTPError):
                    reason: object = f"HTTP {exc.code} {exc.reason}"
                else:
                    reason = getattr(exc, "reason", None) or exc
                have = part.stat().st_size if part.exists() else 0
                if attempt == attempts:
                    raise DownloadError(
                        f"download of {url} failed after {attempts} attempt(s): {reason}. "
                        f"The {have} bytes received so far are kept in {part}; rerun to resume. "
                        f"Without internet access, download the file by hand and put it at {dest}."
                    ) from None
                wait = backoff_s * 2 ** (attempt - 1)
                log.warning(
                    "download of %s interrupted (%s) with %d bytes in %s; retry %d/%d in %.1f s",
                    url,
                    reason,
                    have,
                    part.name,
                    attempt,
                    retries,
                    wait,
                )
                time.sleep(wait)

    bad = _first_mismatch(part, expected)
    if bad:
        algo, want, got = bad
        part.unlink(missing_ok=True)
        fix = (
            f"update downloads.{config_key}.{algo} in config.yaml"
            if config_key
            else f"update the {algo} of this download (downloads: section) in config.yaml"
        )
        raise DownloadError(
            f"checksum mismatch for {dest} from {url}: expected {algo} {want}, got {got}. "
            "The file was deleted; rerun to download again, or if the upstream file changed, "
            f"{fix}."
        )
    if not expected:
        log.warning("no md5/sha256 given for %s: %s is not verified", url, dest)
    os.replace(part, dest)
    log.info("saved %s (%d bytes)", dest, dest.stat().st_size)
    return dest


# ------------------------------------------------------------------------------------------------
# Safe extraction
# ------------------------------------------------------------------------------------------------


def _refuse(archive: Path, member: str, why: str) -> NoReturn:
    raise DownloadError(
        f"refusing to extract {archive}: member {member!r} {why}. The archive is corrupt or "
        "malicious; delete it and download it again from its official source."
    )


def _member_parts(archive: Path, name: str, strip_components: int) -> tuple[str, ...] | None:
    """Checked path components of member ``name`` after stripping, or None if stripped away.

    Backslashes count as separators (zips made on Windows), so ``..\\x`` is caught too.
    """
    posix = name.replace("\\", "/")
    if posix.startswith("/") or re.match(r"[A-Za-z]:", posix):
        _refuse(archive, name, "has an absolute path")
    parts = PurePosixPath(posix).parts  # drops "." and empty components
    if ".." in parts:
        _refuse(archive, name, "contains '..' (it could write outside the destination)")
    parts = parts[strip_components:]
    return parts or None


def _resolve_inside(parts: Iterable[str], links: dict[str, str], hops: int = 0) -> list[str] | None:
    """Resolve a path inside the extraction root, following the archive's own symlinks.

    ``links`` maps a member path ("a/b") to its symlink target. Returns the resolved components,
    or None if the path leaves the root at any point (``..`` above it, an absolute link, a link
    loop). This is done on names, before anything touches the disk, so a link can never be used
    to write outside the destination.
    """
    out: list[str] = []
    for p in parts:
        if p in ("", "."):
            continue
        if p == "..":
            if not out:
                return None
            out.pop()
            continue
        out.append(p)
        target = links.get("/".join(out))
        if target is not None:
            if hops > 40 or target.startswith("/"):
                return None
            resolved = _resolve_inside(out[:-1] + target.split("/"), links, hops + 1)
            if resolved is None:
                return None
            out = resolved
    return out


def _check_tar(archive: Path, tf: tarfile.TarFile, strip_components: int) -> list[tarfile.TarInfo]:
    """Validate every member (names rewritten for ``strip_components``); return those to extract."""
    members: list[tarfile.TarInfo] = []
    links: dict[str, str] = {}
    for m in tf.getmembers():
        parts = _member_parts(archive, m.name, strip_components)
        if parts is None:
            continue
        if not (m.isreg() or m.isdir() or m.issym() or m.islnk()):
            _refuse(archive, m.name, "is a device file or FIFO")
        if m.issym():
            links["/".join(parts)] = m.linkname
        elif m.islnk():
            # Hard link targets are archive paths, so they are stripped like member names.
            try:
                target = _member_parts(archive, m.linkname, strip_components)
            except DownloadError:
                _refuse(archive, m.name, f"is a hard link to {m.linkname!r}, outside the archive")
            if target is None:
                _refuse(archive, m.name, f"is a hard link to {m.linkname!r}, removed by stripping")
            m.linkname = "/".join(target)
        m.name = "/".join(parts)
        members.append(m)
    for m in members:
        parts = m.name.split("/")
        # The member's parent directories must stay inside (they may go through archive links).
        if _resolve_inside(parts[:-1], links) is None or (
            not m.issym() and _resolve_inside(parts, links) is None
        ):
            _refuse(archive, m.name, "would be written through a link pointing outside")
        if m.issym() and (
            m.linkname.startswith("/")
            or _resolve_inside(parts[:-1] + m.linkname.split("/"), links) is None
        ):
            _refuse(archive, m.name, f"is a symlink to {m.linkname!r}, outside the destination")
        if m.islnk() and _resolve_inside(m.linkname.split("/"), links) is None:
            _refuse(archive, m.name, f"is a hard link to {m.linkname!r}, outside the destination")
    return members


def _extract_tar(archive: Path, tmp: Path, strip_components: int) -> list[str]:
    with tarfile.open(archive, "r:*") as tf:
        members = _check_tar(archive, tf, strip_components)
        if hasattr(tarfile, "data_filter"):
            # Python >= 3.11.4 / 3.12: the stdlib's own checks on top of ours (and no chown).
            tf.extractall(tmp, members=members, filter="data")
        else:  # pragma: no cover - older Pythons rely on _check_tar alone
            tf.extractall(tmp, members=members)
    return [m.name for m in members if not m.isdir()]


def _extract_zip(archive: Path, tmp: Path, strip_components: int) -> list[str]:
    files: list[str] = []
    with zipfile.ZipFile(archive) as zf:
        checked = []
        for info in zf.infolist():
            parts = _member_parts(archive, info.filename, strip_components)
            if parts is not None:
                checked.append((info, parts))
        # Written by hand (not ZipFile.extract) so stripping and backslash names behave the same
        # on every Python version; zip symlinks are not followed, they become small files.
        for info, parts in checked:
            target = tmp.joinpath(*parts)
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            files.append("/".join(parts))
    return files


def _merge_move(src: Path, dst: Path) -> None:
    """Move ``src`` onto ``dst``, merging directories (two archives may share a top folder)."""
    if not dst.exists() and not dst.is_symlink():
        os.replace(src, dst)
    elif src.is_dir() and not src.is_symlink() and dst.is_dir() and not dst.is_symlink():
        for child in src.iterdir():
            _merge_move(child, dst / child.name)
        src.rmdir()
    elif (src.is_dir() and not src.is_symlink()) or (dst.is_dir() and not dst.is_symlink()):
        raise DownloadError(
            f"cannot extract into {dst}: a {'folder' if dst.is_dir() else 'file'} of that name "
            "already exists there. Remove it and rerun."
        )
    else:
        os.replace(src, dst)  # re-extraction replaces a file with its fresh copy


def safe_extract(
    archive: str | os.PathLike[str], dest_dir: str | os.PathLike[str], *, strip_components: int = 0
) -> list[Path]:
    """Extract a .tar, .tar.gz/.tgz (any tarfile compression) or .zip into ``dest_dir``, safely.

    Every member is checked first: absolute paths, ``..`` components, symlinks or hard links
    whose target leaves ``dest_dir``, and device files/FIFOs make the whole extraction fail with
    a DownloadError naming the member and the archive. ``strip_components`` drops that many
    leading path components from each member (like ``tar --strip-components``); members left
    with no path are skipped.

    The archive is extracted into a temporary sibling of ``dest_dir`` and moved into place only
    if everything succeeded (merged into ``dest_dir`` if it exists), so a failure leaves nothing
    that looks complete. Returns the extracted non-directory paths under ``dest_dir``.
    """
    archive, dest_dir = Path(archive), Path(dest_dir)
    if strip_components < 0:
        raise DownloadError(f"strip_components must be >= 0, got {strip_components}")
    if not archive.is_file():
        raise DownloadError(f"archive {archive} not found; download it first.")
    if zipfile.is_zipfile(archive):
        extract = _extract_zip
    elif tarfile.is_tarfile(archive):
        extract = _extract_tar
    else:
        raise DownloadError(
            f"{archive} is neither a tar nor a zip archive (an HTML error page saved by mistake?); "
            "delete it and download it again."
        )
    dest_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest_dir.name}.extract-", dir=dest_dir.parent))
    try:
        try:
            names = extract(archive, tmp, strip_components)
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error) as exc:
            # tarfile.FilterError (the 'data' filter) is a TarError too.
            raise DownloadError(
                f"cannot extract {archive}: {exc}. The archive is corrupt or truncated; delete "
                "it and download it again."
            ) from None
        except OSError as exc:
            raise DownloadError(f"cannot extract {archive} into {dest_dir}: {exc}") from None
        tmp.chmod(0o755)  # mkdtemp makes it 0700; it may become dest_dir itself
        _merge_move(tmp, dest_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("extracted %d files from %s into %s", len(names), archive, dest_dir)
    return [dest_dir / n for n in dict.fromkeys(names)]


# ------------------------------------------------------------------------------------------------
# Manual items
# ------------------------------------------------------------------------------------------------


def _manual_message(
    item_name: str, expected_path: str | os.PathLike[str], instructions: str
) -> str:
    path = Path(expected_path)
    return (
        f"{item_name} must be downloaded by hand: {instructions.strip()} "
        f"Put it at {path} (absolute: {path.absolute()}), then rerun."
    )


def require_manual(
    item_name: str, *, expected_path: str | os.PathLike[str], instructions: str
) -> NoReturn:
    """Raise :class:`ManualDownloadRequired` saying what to fetch, from where, and where to put it.

    ``instructions`` says what and where from (see :data:`EPS_SALIENCY_INSTRUCTIONS`,
    :data:`VOC_TEST_INSTRUCTIONS`); the message adds the exact expected path.
    """
    raise ManualDownloadRequired(_manual_message(item_name, expected_path, instructions))


def check_manual(path: str | os.PathLike[str], item_name: str, instructions: str) -> Path:
    """Return ``path`` if it is a file or a non-empty folder; else :func:`require_manual`."""
    path = Path(path)
    if path.is_file() or (path.is_dir() and any(path.iterdir())):
        return path
    require_manual(item_name, expected_path=path, instructions=instructions)


# ------------------------------------------------------------------------------------------------
# SBD .mat → PNG (minimal MATLAB v5 reader)
# ------------------------------------------------------------------------------------------------

# MAT-file v5 data types (MathWorks "MAT-File Format", table 1-1).
_MI_MATRIX, _MI_COMPRESSED = 14, 15
_MI_DTYPES = {
    1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 9: "f8", 12: "i8", 13: "u8",
    16: "u1", 17: "u2", 18: "u4",  # miUTF8/16/32 (character data)
}  # fmt: skip
# mxArray classes (table 1-3): numeric ones map to a numpy dtype.
_MX_CELL, _MX_STRUCT, _MX_CHAR = 1, 2, 4
_MX_DTYPES = {
    6: "f8", 7: "f4", 8: "i1", 9: "u1", 10: "i2", 11: "u2", 12: "i4", 13: "u4", 14: "i8", 15: "u8",
}  # fmt: skip
_MX_COMPLEX, _MX_LOGICAL = 0x0800, 0x0200


class _MatError(Exception):
    """Malformed MAT data (turned into a DownloadError naming the file)."""


def _mat_element(buf: bytes, pos: int, e: str) -> tuple[int, bytes, int]:
    """Read the data element at ``pos``: ``(type, payload, position of the next element)``."""
    if pos + 8 > len(buf):
        raise _MatError(f"truncated element tag at byte {pos}")
    (first,) = struct.unpack_from(e + "I", buf, pos)
    if first >> 16:  # small data element: 2-byte size, 2-byte type, payload in the tag itself
        n, mtype = first >> 16, first & 0xFFFF
        if n > 4:
            raise _MatError(f"bad small element size {n} at byte {pos}")
        return mtype, buf[pos + 4 : pos + 4 + n], pos + 8
    mtype, n = struct.unpack_from(e + "II", buf, pos)
    start, end = pos + 8, pos + 8 + n
    if end > len(buf):
        raise _MatError(f"element at byte {pos} claims {n} bytes, only {len(buf) - start} left")
    # Elements are padded to 8 bytes, except compressed ones (MATLAB writes them unpadded).
    nxt = end if mtype == _MI_COMPRESSED else start + (n + 7) // 8 * 8
    return mtype, buf[start:end], nxt


def _mat_numbers(mtype: int, data: bytes, e: str) -> np.ndarray:
    if mtype not in _MI_DTYPES:
        raise _MatError(f"unsupported data type {mtype}")
    return np.frombuffer(data, dtype=np.dtype(_MI_DTYPES[mtype]).newbyteorder(e))


def _mat_matrix(data: bytes, e: str) -> tuple[str, Any]:
    """Parse a miMATRIX payload → ``(name, value)``.

    Values: numeric/logical → ndarray in MATLAB's shape; char → str (or list of row strings);
    struct → dict (1x1) or list of dicts; cell → list; sparse, objects, functions → None.
    """
    if not data:  # MATLAB writes empty arrays as a zero-length miMATRIX
        return "", np.zeros((0, 0))
    _, flags_b, p = _mat_element(data, 0, e)
    flags = struct.unpack_from(e + "I", flags_b)[0]
    mx_class = flags & 0xFF
    dtype, dims_b, p = _mat_element(data, p, e)
    dims = [int(d) for d in _mat_numbers(dtype, dims_b, e)]
    _, name_b, p = _mat_element(data, p, e)
    name = bytes(name_b).decode("latin-1")
    count = int(np.prod(dims))

    if mx_class in _MX_DTYPES:
        mtype, real_b, p = _mat_element(data, p, e)
        # MATLAB may store values in a smaller type than the class ("uint8 stored as miUINT8"
        # or doubles stored as miUINT8): convert to the class's dtype.
        arr = _mat_numbers(mtype, real_b, e).astype(_MX_DTYPES[mx_class])
        if flags & _MX_COMPLEX:
            mtype, imag_b, p = _mat_element(data, p, e)
            arr = arr + 1j * _mat_numbers(mtype, imag_b, e)
        if arr.size != count:
            raise _MatError(f"variable {name!r}: {arr.size} values for dimensions {dims}")
        arr = arr.reshape(dims, order="F")  # MATLAB stores column-major
        return name, arr.astype(bool) if flags & _MX_LOGICAL else arr
    if mx_class == _MX_CHAR:
        mtype, chars_b, p = _mat_element(data, p, e)
        if mtype == 16 and len(chars_b) != count:  # multi-byte UTF-8: decode as one string
            return name, bytes(chars_b).decode("utf-8")
        codes = _mat_numbers(mtype, chars_b, e)
        if codes.size == count and len(dims) == 2:
            rows = ["".join(map(chr, row)) for row in codes.reshape(dims, order="F")]
        else:  # odd shapes (or MATLAB's padded empties): one flat string
            rows = ["".join(map(chr, codes))]
        return name, rows[0] if len(rows) == 1 else rows
    if mx_class == _MX_STRUCT:
        mtype, len_b, p = _mat_element(data, p, e)
        name_len = int(_mat_numbers(mtype, len_b, e)[0])
        _, names_b, p = _mat_element(data, p, e)
        raw = bytes(names_b)
        fields = [
            raw[i : i + name_len].split(b"\0", 1)[0].decode("latin-1")
            for i in range(0, len(raw), name_len)
        ]
        records = []
        for _ in range(count):  # each element's fields, in field order
            rec = {}
            for field in fields:
                mtype, sub, p = _mat_element(data, p, e)
                if mtype != _MI_MATRIX:
                    raise _MatError(f"field {field!r} of {name!r} is not a matrix element")
                rec[field] = _mat_matrix(sub, e)[1]
            records.append(rec)
        return name, records[0] if count == 1 else records
    if mx_class == _MX_CELL:
        items = []
        for _ in range(count):
            mtype, sub, p = _mat_element(data, p, e)
            if mtype != _MI_MATRIX:
                raise _MatError(f"cell of {name!r} holds a non-matrix element")
            items.append(_mat_matrix(sub, e)[1])
        return name, items
    return name, None  # sparse / object / function handle: skipped (not needed here)


def read_mat_v5(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read the variables of a MATLAB v5/v7 MAT-file (the subset SBD needs), without scipy.

    Handles both byte orders, zlib-compressed elements, numeric/logical/char arrays, structs and
    cells; sparse matrices and objects are returned as None. MAT v4 and v7.3 (HDF5) files are
    refused with a DownloadError.
    """
    path = Path(path)
    try:
        buf = path.read_bytes()
    except OSError as exc:
        raise DownloadError(f"cannot read {path}: {exc}") from None
    if buf[:10] == b"MATLAB 7.3":
        raise DownloadError(
            f"{path} is a MATLAB v7.3 (HDF5) file; only v5/v7 MAT-files are supported. Use the "
            "original SBD benchmark.tgz, or the pre-converted SegmentationClassAug.zip."
        )
    endian = buf[126:128]
    if len(buf) < 128 or not buf.startswith(b"MATLAB") or endian not in (b"IM", b"MI"):
        raise DownloadError(
            f"{path} is not a MATLAB v5 MAT-file (bad header); the download or extraction is "
            "corrupt: delete it and download SBD again."
        )
    # The writer stored the 16-bit value 'MI'; reading it back as "IM" means little-endian.
    e = "<" if endian == b"IM" else ">"
    out: dict[str, Any] = {}
    pos = 128
    try:
        while pos + 8 <= len(buf):
            mtype, payload, pos = _mat_element(buf, pos, e)
            if mtype == _MI_COMPRESSED:
                mtype, payload, _ = _mat_element(zlib.decompress(payload), 0, e)
            if mtype == _MI_MATRIX:
                name, value = _mat_matrix(payload, e)
                out[name] = value
    except (_MatError, zlib.error, struct.error, ValueError) as exc:
        raise DownloadError(
            f"cannot parse MAT-file {path}: {exc}. The file is corrupt; re-extract or download "
            "SBD again, or use the pre-converted SegmentationClassAug.zip."
        ) from None
    return out


def load_sbd_segmentation(path: str | os.PathLike[str]) -> np.ndarray:
    """The ``GTcls.Segmentation`` label map (uint8 ``[H, W]``) of one SBD ``cls/<id>.mat``."""
    variables = read_mat_v5(path)
    gt = variables.get("GTcls")
    seg = gt.get("Segmentation") if isinstance(gt, dict) else None
    if not isinstance(seg, np.ndarray) or seg.ndim != 2:
        raise DownloadError(
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
    from smaf.io import save_mask  # numpy/PIL: only needed here

    cls_mat_dir, out_dir = Path(cls_mat_dir), Path(out_dir)
    if not cls_mat_dir.is_dir():
        raise DownloadError(
            f"SBD class folder {cls_mat_dir} not found: extract benchmark.tgz first (it holds "
            "benchmark_RELEASE/dataset/cls), or use the pre-converted SegmentationClassAug.zip."
        )
    id_list = sorted(p.stem for p in cls_mat_dir.glob("*.mat")) if ids is None else list(ids)
    if not id_list:
        raise DownloadError(f"no .mat files in {cls_mat_dir}; is SBD fully extracted?")
    written = []
    for image_id in id_list:
        mat = cls_mat_dir / f"{image_id}.mat"
        if not mat.is_file():
            raise DownloadError(f"SBD label {mat} not found; is SBD fully extracted?")
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
    from smaf.io import atomic_write

    safe_extract(archive, workdir)
    cls_dir = Path(workdir) / "benchmark_RELEASE" / "dataset" / "cls"
    if not cls_dir.is_dir():
        raise DownloadError(
            f"{archive} did not contain benchmark_RELEASE/dataset/cls/: is it SBD's benchmark.tgz? "
            "Delete it and download it again, or use aug_source: zip."
        )
    written = convert_sbd_to_png(cls_dir, out_dir)
    log.info("converted %d SBD masks into %s", len(written), out_dir)
    with atomic_write(marker) as tmp:
        Path(tmp).write_text(f"files: {len(written)}\narchive: {archive}\ndest: {out_dir}\n")
    return len(written)

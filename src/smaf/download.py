"""Fetching the datasets: resumable, checksummed downloads, and items fetched by hand.

:func:`download` resumes with HTTP ``Range`` requests across retries and reruns (pooch, the
usual library, restarts from zero: too costly for VOC's 2 GB tar on a flaky link).
:func:`check_manual` covers what cannot be downloaded (Google Drive, a login). Extraction is in
:mod:`smaf.archives`, SBD's ``.mat`` conversion in :mod:`smaf.data.sbd`. Every problem a user
can fix is a :class:`~smaf.errors.DownloadError` naming the file or URL and the fix.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from smaf.errors import DownloadError
from smaf.io import atomic_write
from smaf.progress import Progress

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


class ManualDownloadRequired(DownloadError):
    """An input that SMAF cannot fetch by itself (login, Google Drive): a person must fetch it."""


class _ShortRead(Exception):
    """The server closed the connection before sending all the bytes it announced."""


# Errors after which a retry can succeed (the .part is kept, so it resumes). Local disk errors
# become a DownloadError inside _fetch_http, so OSError here means socket trouble.
_RETRYABLE: tuple[type[BaseException], ...] = (
    urllib.error.URLError,
    http.client.HTTPException,  # IncompleteRead, RemoteDisconnected, BadStatusLine, ...
    OSError,  # ConnectionError, TimeoutError, socket.error
    _ShortRead,
)


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


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """Parse ``Content-Range: bytes START-END/TOTAL`` (or ``bytes */TOTAL``) → (start, total)."""
    m = re.fullmatch(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*", value or "")
    if not m:
        return None, None
    start = int(m.group(1)) if m.group(1) is not None else None
    total = int(m.group(2)) if m.group(2) != "*" else None
    return start, total


def _percent(done: int, total: int | None) -> str:
    return f"{100.0 * done / total:.0f}%" if total else ""


def _fetch_http(
    url: str,
    part: Path,
    *,
    dest: Path,
    timeout_s: float,
    chunk_bytes: int,
    sink: Callable[[str], object],
    allow_restart: bool = True,
) -> None:
    """One attempt: append the missing bytes of ``url`` to ``part`` (resuming if it exists).

    Returns once the server has sent everything it announced (or said with 416 that ``part`` is
    already whole). Raises one of ``_RETRYABLE`` for transient trouble, DownloadError otherwise.
    """
    offset = part.stat().st_size if part.exists() else 0
    # identity encoding: byte ranges must refer to the file itself, not a gzip of it.
    headers = {"User-Agent": "smaf-download/0.1 (urllib)", "Accept-Encoding": "identity"}
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
                opts = {"timeout_s": timeout_s, "chunk_bytes": chunk_bytes, "sink": sink}
                _fetch_http(url, part, dest=dest, **opts, allow_restart=False)
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
        meter = Progress(
            f"download {dest.name}",
            total / 1e6 if total else None,
            unit="MB",
            interval_s=5,
            fmt="{:.1f}",
            log=sink,
            start=offset / 1e6,  # the rate counts only the bytes of this attempt
        )
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
                # The position is set from the byte count, so summed floats never drift.
                meter.update(done / 1e6 - meter.pos, extra=_percent(done, total))
            f.flush()
            os.fsync(f.fileno())
    if expected_end is not None and done < expected_end:
        # Python's http.client returns b"" instead of raising when the peer closes early.
        raise _ShortRead(f"connection closed after {done} of {expected_end} bytes")
    meter.close(extra=_percent(done, total))


def _fetch_file_url(url: str, part: Path) -> None:
    """Copy a ``file://`` URL to ``part`` (used for local mirrors and tests)."""
    parsed = urllib.parse.urlparse(url)
    if parsed.netloc not in ("", "localhost"):
        raise DownloadError(f"unsupported file URL {url!r}: use file:///absolute/path.")
    src = Path(urllib.request.url2pathname(parsed.path))
    if not src.is_file():
        raise DownloadError(f"download source {src} (from {url}) does not exist.")
    shutil.copyfile(src, part)


def _fetch_with_retries(
    url: str, part: Path, *, dest: Path, retries: int, backoff_s: float, **opts: Any
) -> None:
    """:func:`_fetch_http`, retried with exponential backoff; each retry resumes the ``.part``."""
    for attempt in range(1, retries + 2):
        try:
            return _fetch_http(url, part, dest=dest, **opts)
        except _RETRYABLE as exc:
            reason = getattr(exc, "reason", None) or exc
            if isinstance(exc, urllib.error.HTTPError):
                reason = f"HTTP {exc.code} {exc.reason}"
            have = part.stat().st_size if part.exists() else 0
            if attempt > retries:
                raise DownloadError(
                    f"download of {url} failed after {attempt} attempt(s): {reason}. "
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

    Bytes go to ``<dest>.part``; an existing ``.part`` (an interrupted try or run) is resumed
    with ``Range: bytes=N-`` (200 instead of 206: restart from 0; 416: already whole). Network
    errors and short reads are retried ``retries`` more times, waiting ``backoff_s`` x 2^k.
    The whole ``.part`` is checked against ``md5`` and/or ``sha256`` (either, both or none; ""
    is none; a sha256 may be a prefix of >= 8 digits), deleted on a mismatch, else renamed.

    A ``dest`` that exists and matches is not downloaded again. ``file://`` URLs are copied.
    ``progress`` receives the progress lines (default: this module's logger at INFO);
    ``config_key`` (e.g. ``"voc_trainval"``) makes error messages name the entry to fix.
    Returns ``dest``; raises :class:`DownloadError` naming the URL, the file and the fix.
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
    scheme = urllib.parse.urlparse(url).scheme.lower()
    log.info("downloading %s -> %s", url, dest)

    if scheme == "file":
        _fetch_file_url(url, part)
    else:
        opts = {"timeout_s": timeout_s, "chunk_bytes": chunk_bytes, "sink": progress or log.info}
        _fetch_with_retries(url, part, dest=dest, retries=retries, backoff_s=backoff_s, **opts)

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


def require_manual(
    item_name: str, *, expected_path: str | os.PathLike[str], instructions: str
) -> NoReturn:
    """Raise :class:`ManualDownloadRequired` saying what to fetch, from where, and where to put it.

    ``instructions`` says what and where from (see :data:`EPS_SALIENCY_INSTRUCTIONS`,
    :data:`VOC_TEST_INSTRUCTIONS`); the message adds the exact expected path.
    """
    path = Path(expected_path)
    raise ManualDownloadRequired(
        f"{item_name} must be downloaded by hand: {instructions.strip()} "
        f"Put it at {path} (absolute: {path.absolute()}), then rerun."
    )


def check_manual(path: str | os.PathLike[str], item_name: str, instructions: str) -> Path:
    """Return ``path`` if it is a file or a non-empty folder; else :func:`require_manual`."""
    path = Path(path)
    if path.is_file() or (path.is_dir() and any(path.iterdir())):
        return path
    require_manual(item_name, expected_path=path, instructions=instructions)


def confirm_manual(
    path: str | os.PathLike[str], item_name: str, instructions: str, marker: str | os.PathLike[str]
) -> Path:
    """:func:`check_manual`, then write ``marker`` (atomically) naming where the item is."""
    found = check_manual(path, item_name, instructions)
    log.info("%s found at %s", item_name, found)
    with atomic_write(marker) as tmp:
        tmp.write_text(f"{item_name}: {found.absolute()}\n")
    return found

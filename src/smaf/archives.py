"""Safe extraction of downloaded archives (.tar, .tar.gz/.tgz, .zip).

:func:`safe_extract` checks member *names* itself (absolute paths and ``..`` are refused, not
silently rewritten, and ``strip_components`` works like ``tar --strip-components``) and leaves
links and special files to :func:`tarfile.data_filter` (PEP 706), which refuses symlinks and
hard links pointing outside the destination, writing through such links, and device files.
Zip members go through the same filter (as a :class:`tarfile.TarInfo` describing the member),
so both formats follow one rule set. Everything is extracted into a temporary sibling of the
destination and moved into place only once the whole archive extracted.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import stat
import sys
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import NoReturn

from smaf.errors import DownloadError
from smaf.io import atomic_write, default_mode

log = logging.getLogger(__name__)


def _refuse(archive: Path, member: str, why: str) -> NoReturn:
    raise DownloadError(
        f"refusing to extract {archive}: member {member!r} {why}. The archive is corrupt or "
        "malicious; delete it and download it again from its official source."
    )


def _require_data_filter(archive: Path) -> None:
    if not hasattr(tarfile, "data_filter"):
        version = ".".join(map(str, sys.version_info[:3]))
        raise DownloadError(
            f"cannot extract {archive} safely with Python {version}: SMAF relies on tarfile's "
            "'data' extraction filter to refuse members that would land outside the destination "
            "(path traversal through '..' or links), and it needs Python >= 3.10.12, 3.11.4 or "
            "3.12. Upgrade Python (the conda environment envs/smaf.yaml has one)."
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
    return parts[strip_components:] or None


def _filter_reason(exc: tarfile.FilterError) -> str:
    member = exc.tarinfo
    if isinstance(exc, tarfile.SpecialFileError):
        return "is a device file or FIFO"
    if isinstance(exc, (tarfile.AbsoluteLinkError, tarfile.LinkOutsideDestinationError)):
        kind = "symlink" if member.issym() else "hard link"
        return f"is a {kind} to {member.linkname!r}, outside the destination"
    return "would be written outside the destination (through a link)"


def _extract_tar(archive: Path, tmp: Path, strip_components: int) -> list[str]:
    original: dict[str, str] = {}  # member name after stripping -> name in the archive
    files: list[str] = []

    def renamed(tf: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
        # A generator, so the archive is read once, member by member, while extracting.
        for m in tf:
            parts = _member_parts(archive, m.name, strip_components)
            if parts is None:
                continue
            if m.islnk():  # hard link targets are archive paths: stripped like member names
                try:
                    target = _member_parts(archive, m.linkname, strip_components)
                except DownloadError:
                    _refuse(
                        archive, m.name, f"is a hard link to {m.linkname!r}, outside the archive"
                    )
                if target is None:
                    _refuse(
                        archive, m.name, f"is a hard link to {m.linkname!r}, removed by stripping"
                    )
                m.linkname = "/".join(target)
            name = "/".join(parts)
            original[name], m.name = m.name, name
            if not m.isdir():
                files.append(name)
            yield m

    with tarfile.open(archive, "r:*") as tf:
        try:
            # The filter runs on each member just before it is written, so links extracted
            # earlier are on disk and followed when later members are checked.
            tf.extractall(tmp, members=renamed(tf), filter="data")
        except tarfile.FilterError as exc:
            name = exc.tarinfo.name
            _refuse(archive, original.get(name, name), _filter_reason(exc))
    return files


def _extract_zip(archive: Path, tmp: Path, strip_components: int) -> list[str]:
    files: list[str] = []
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            parts = _member_parts(archive, info.filename, strip_components)
            if parts is None:
                continue
            # Described as a tar member so tarfile's data filter checks it (links included).
            member = tarfile.TarInfo("/".join(parts))
            if info.is_dir():
                member.type = tarfile.DIRTYPE
            elif stat.S_ISLNK(info.external_attr >> 16):  # unix mode in the high 16 bits
                member.type = tarfile.SYMTYPE
                member.linkname = zf.read(info).decode("utf-8")
            try:
                tarfile.data_filter(member, str(tmp))
            except tarfile.FilterError as exc:
                _refuse(archive, info.filename, _filter_reason(exc))
            target = tmp.joinpath(*parts)
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if member.issym():
                os.symlink(member.linkname, target)
            else:
                with zf.open(info) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
            files.append(member.name)
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
    archive: str | os.PathLike[str],
    dest_dir: str | os.PathLike[str],
    *,
    strip_components: int = 0,
    marker: str | os.PathLike[str] | None = None,
) -> list[Path]:
    """Extract a .tar, .tar.gz/.tgz (any tarfile compression) or .zip into ``dest_dir``, safely.

    Absolute paths, ``..`` components, symlinks or hard links whose target leaves ``dest_dir``,
    and device files/FIFOs make the whole extraction fail with a DownloadError naming the member
    and the archive. ``strip_components`` drops that many leading path components from each
    member (like ``tar --strip-components``); members left with no path are skipped.

    The archive is extracted into a temporary sibling of ``dest_dir`` and moved into place only
    if everything succeeded (merged into ``dest_dir`` if it exists), so a failure leaves nothing
    that looks complete. ``marker``, if given, is written last (atomically) with the file count.
    Returns the extracted non-directory paths under ``dest_dir``.
    """
    archive, dest_dir = Path(archive), Path(dest_dir)
    if strip_components < 0:
        raise DownloadError(f"strip_components must be >= 0, got {strip_components}")
    if not archive.is_file():
        raise DownloadError(f"archive {archive} not found; download it first.")
    _require_data_filter(archive)
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
        # ValueError: undecodable or NUL-containing names and link targets.
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, ValueError) as exc:
            raise DownloadError(
                f"cannot extract {archive}: {exc}. The archive is corrupt or truncated; delete "
                "it and download it again."
            ) from None
        except OSError as exc:
            raise DownloadError(f"cannot extract {archive} into {dest_dir}: {exc}") from None
        tmp.chmod(default_mode(directory=True))  # mkdtemp: 0700; it may become dest_dir
        _merge_move(tmp, dest_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("extracted %d files from %s into %s", len(names), archive, dest_dir)
    files = [dest_dir / n for n in dict.fromkeys(names)]
    if marker is not None:
        with atomic_write(marker) as tmp_marker:
            tmp_marker.write_text(f"files: {len(files)}\narchive: {archive}\ndest: {dest_dir}\n")
    return files

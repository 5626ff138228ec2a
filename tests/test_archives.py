"""Safe extraction: traversal and links leaving the tree refused, stripping, merging, markers."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from smaf.archives import safe_extract
from smaf.errors import DownloadError

PAYLOAD = np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes()


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


def _zip_symlink(zf: zipfile.ZipFile, name: str, target: str) -> None:
    """A symlink as Info-ZIP stores it: S_IFLNK in the external attributes, the target as data."""
    info = zipfile.ZipInfo(name)
    info.create_system = 3  # unix, so the high 16 bits of external_attr are a st_mode
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    zf.writestr(info, target)


@pytest.mark.parametrize(
    ("links", "bad_member"),
    [
        ([("link", "../../evil")], "link"),
        ([("link", "<ABS>")], "link"),
        ([("d", "."), ("e", "d/..")], "e"),  # each inside on its own, chained outside
    ],
)
def test_zip_symlink_leaving_the_tree_is_refused(
    tmp_path: Path, links: list[tuple[str, str]], bad_member: str
) -> None:
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok.txt", b"ok")
        for name, target in links:
            _zip_symlink(zf, name, target.replace("<ABS>", str(tmp_path / "abs_evil")))
    dest = tmp_path / "out" / "dest"
    with pytest.raises(DownloadError, match="refusing to extract") as err:
        safe_extract(archive, dest)
    assert repr(bad_member) in str(err.value) and str(archive) in str(err.value)
    _assert_nothing_extracted(tmp_path, dest)


@pytest.mark.parametrize("kind", ["tar", "zip"])
def test_writing_through_links_that_later_point_outside_is_refused(
    tmp_path: Path, kind: str
) -> None:
    # "x" -> "y/.." is inside while "y" does not exist; once "y" -> "." exists, x/evil
    # resolves to the parent of the destination.
    archive = tmp_path / f"evil.{kind}"
    if kind == "tar":
        _tar(archive, [("x", "sym", "y/.."), ("y", "sym", "."), ("x/evil", "file", b"x")])
    else:
        with zipfile.ZipFile(archive, "w") as zf:
            _zip_symlink(zf, "x", "y/..")
            _zip_symlink(zf, "y", ".")
            zf.writestr("x/evil", b"x")
    dest = tmp_path / "out" / "dest"
    with pytest.raises(DownloadError, match="'x/evil' would be written outside the destination"):
        safe_extract(archive, dest)
    _assert_nothing_extracted(tmp_path, dest)
    assert not (tmp_path / "out" / "evil").exists()


def test_zip_symlink_inside_the_tree_is_extracted_as_a_link(tmp_path: Path) -> None:
    archive = tmp_path / "ok.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("top/a.txt", b"alpha")
        _zip_symlink(zf, "top/sub/link", "../a.txt")
    dest = tmp_path / "dest"
    assert safe_extract(archive, dest, strip_components=1) == [dest / "a.txt", dest / "sub/link"]
    assert (dest / "sub/link").is_symlink() and os.readlink(dest / "sub/link") == "../a.txt"
    assert (dest / "sub/link").read_bytes() == b"alpha"


def test_marker_is_written_last_and_only_on_success(tmp_path: Path) -> None:
    good = _tar(tmp_path / "good.tar", [("a.txt", "file", b"a"), ("b/c.txt", "file", b"c")])
    marker = tmp_path / "flags" / "good.extracted"
    safe_extract(good, tmp_path / "dest", marker=marker)
    assert marker.read_text() == f"files: 2\narchive: {good}\ndest: {tmp_path / 'dest'}\n"

    evil = _tar(tmp_path / "evil.tar", [("a.txt", "file", b"a"), ("link", "sym", "../../x")])
    with pytest.raises(DownloadError, match="'link' is a symlink to '../../x'"):
        safe_extract(evil, tmp_path / "dest2", marker=tmp_path / "flags" / "evil.extracted")
    assert not (tmp_path / "flags" / "evil.extracted").exists()


@pytest.mark.parametrize("kind", ["tar", "zip"])
def test_python_without_the_data_filter_is_refused_with_the_version_needed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    if kind == "tar":
        archive = _tar(tmp_path / "a.tar", [("a.txt", "file", b"a")])
    else:
        archive = tmp_path / "a.zip"
        with zipfile.ZipFile(archive, "w") as zf:
            zf.writestr("a.txt", b"a")
    monkeypatch.delattr(tarfile, "data_filter")  # as on Python < 3.10.12 / 3.11.4
    with pytest.raises(DownloadError) as err:
        safe_extract(archive, tmp_path / "dest")
    msg = str(err.value)
    assert "3.10.12" in msg and "3.11.4" in msg and "traversal" in msg and str(archive) in msg
    assert not (tmp_path / "dest").exists()

"""Which files of an output folder ``smaf predict`` wrote: it deletes those and nothing else.

``predict.json`` lists every file a finished run wrote (``files``, paths relative to the
folder). While a run goes on, each file's path is appended to :data:`LEDGER` *before* the
file is written, so an interrupted run's files are known too; the finished manifest takes
them over and the ledger is removed. A folder that holds any other file (a dataset's
ground-truth ``masks/``, the user's photos) is refused, ``--overwrite`` or not, naming what
is there; ``--overwrite`` removes only the listed files (and the folders they leave empty).
Names starting with ``.`` (``.DS_Store``) are ignored: no output has such a name.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

from smaf.errors import SmafError

#: The running list of the files a run is writing (one relative path a line).
LEDGER = "predict-files.txt"


def read_manifest(out: Path, manifest: str) -> dict[str, Any] | None:
    """``out/<manifest>`` as a dict; None when there is none; ``{}`` when it is unreadable."""
    path = out / manifest
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _inside(rel: str) -> str | None:
    """``rel`` as a clean relative POSIX path inside the folder; None if it leaves it."""
    p = PurePosixPath(rel)
    if not rel or p.is_absolute() or ".." in p.parts:
        return None
    return str(p)


def owned_files(out: Path, manifest: str) -> set[str]:
    """Relative paths ``smaf predict`` recorded writing in ``out`` (manifest + ledger)."""
    data = read_manifest(out, manifest)
    if data is None and not (out / LEDGER).is_file():
        return set()
    owned = {manifest, LEDGER}
    listed = (data or {}).get("files")
    names: list[str] = [str(x) for x in listed] if isinstance(listed, list) else []
    try:
        names += (out / LEDGER).read_text(encoding="utf-8").splitlines()
    except OSError:
        pass
    owned.update(r for r in map(_inside, names) if r is not None)
    return owned


def foreign_files(out: Path, owned: set[str]) -> list[str]:
    """Relative paths of the files under ``out`` not in ``owned`` (hidden names ignored)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(out):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        here = Path(dirpath)
        for name in sorted(filenames):
            rel = (here / name).relative_to(out).as_posix()
            if not name.startswith(".") and rel not in owned:
                found.append(rel)
    return found


def check_output_folder(out: Path, manifest: str) -> set[str]:
    """Refuse ``out`` unless it is new, empty or holds only files ``smaf predict`` wrote;
    return those files' relative paths.

    Raises:
        SmafError: ``out`` is a file, or holds files this tool did not write (named).
    """
    if out.exists() and not out.is_dir():
        raise SmafError(f"--out {out} is a file; give a folder for the outputs.")
    if not out.is_dir():
        return set()
    owned = owned_files(out, manifest)
    foreign = foreign_files(out, owned)
    if foreign:
        shown = ", ".join(foreign[:3]) + (", …" if len(foreign) > 3 else "")
        data = read_manifest(out, manifest)
        why = ""
        if data == {}:
            why = f" (its {manifest} is unreadable)"
        elif data is not None and "files" not in data:
            why = f" (its {manifest}, from an older smaf, does not list the files it wrote)"
        raise SmafError(
            f"{out} holds {len(foreign)} file(s) smaf did not write ({shown}){why}; they are "
            "never deleted: choose another --out (a new or empty folder)."
        )
    return {r for r in owned if (out / r).is_file()}


def remove_files(out: Path, files: Iterable[str]) -> None:
    """Delete ``out/<rel>`` for each listed file, then the folders this leaves empty (never
    ``out`` itself, never a folder that still holds anything)."""
    parents: set[Path] = set()
    root = out.resolve()
    for rel in files:
        clean = _inside(rel)
        if clean is None:
            continue
        path = out / clean
        if path.is_file() or path.is_symlink():
            path.unlink()
        parent = path.parent
        while parent.resolve() != root and root in parent.resolve().parents:
            parents.add(parent)
            parent = parent.parent
    for folder in sorted(parents, key=lambda p: len(p.parts), reverse=True):
        try:
            folder.rmdir()  # only when empty
        except OSError:
            pass


def claim(root: Path, rels: Iterable[str]) -> None:
    """Record, before writing them, that this run writes ``root/<rel>`` for each ``rel``."""
    lines = "".join(f"{r}\n" for r in rels)
    if lines:
        with open(root / LEDGER, "a", encoding="utf-8") as fh:
            fh.write(lines)
            fh.flush()

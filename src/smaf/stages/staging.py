"""Resumable directory outputs: write per-image files into a staging folder, publish at the end.

Snakemake deletes a ``directory()`` output before its job starts (``Job.prepare`` →
``remove_existing_output``, Snakemake 9) and after the job fails, so files written straight
into the output folder never survive to a rerun. (``--keep-incomplete`` is worse for folders: the
partial folder is then kept *and* treated as complete.) The per-image stages therefore write
into a staging folder beside the output that Snakemake does not know about, skip the images
already there on a rerun, and move the finished folder onto the output path in one rename.

A staging folder carries a fingerprint (model file, settings, inputs); when it differs from
the current run's, the old partial results are discarded instead of being mixed in.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from smaf.errors import SmafError
from smaf.io import atomic_write

log = logging.getLogger(__name__)

#: Name of the fingerprint file inside a staging folder.
FINGERPRINT = ".staging.json"


def file_identity(path: str | os.PathLike[str]) -> dict[str, Any]:
    """What identifies a (large) input file cheaply: path, size and modification time."""
    st = Path(path).stat()
    return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def open_staging(
    out_dir: str | os.PathLike[str],
    work_dir: str | os.PathLike[str] | None,
    fingerprint: dict[str, Any],
) -> Path:
    """Return the folder a stage writes its per-image files into (created if needed).

    ``work_dir=None``: the output folder itself (library use; resumes whenever the folder
    survives). Otherwise ``work_dir``, emptied first when its fingerprint differs from
    ``fingerprint`` (a JSON-able dict of everything the files depend on).

    Raises:
        SmafError: ``work_dir`` exists, is not empty and holds no fingerprint (it is not a
            staging folder, so it is not deleted).
    """
    if work_dir is None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        return out
    work = Path(work_dir)
    stamp = json.loads(json.dumps(fingerprint, sort_keys=True, default=str))
    fp_path = work / FINGERPRINT
    if work.is_dir():
        old = None
        if fp_path.is_file():
            try:
                old = json.loads(fp_path.read_text())
            except ValueError:
                old = None
        elif any(work.iterdir()):
            raise SmafError(
                f"staging folder {work} is not empty and was not made by SMAF (no "
                f"{FINGERPRINT}); remove it or choose another work_dir."
            )
        if old != stamp:
            if old is not None:
                log.info("staging folder %s holds results of other settings: starting over", work)
            shutil.rmtree(work)
        else:
            n = sum(1 for _ in work.iterdir()) - 1
            log.info("staging folder %s: resuming (%d entries from an earlier run)", work, n)
    work.mkdir(parents=True, exist_ok=True)
    with atomic_write(fp_path) as tmp:
        tmp.write_text(json.dumps(stamp, indent=2, sort_keys=True))
    return work


def publish(work: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> None:
    """Move a finished staging folder onto ``out_dir`` (replacing it); no-op if they are one."""
    work, out = Path(work), Path(out_dir)
    if work.resolve() == out.resolve():
        return
    (work / FINGERPRINT).unlink(missing_ok=True)
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        # The staging folder normally sits beside the output: one atomic rename.
        os.replace(work, out)
    except OSError:
        shutil.move(work, out)  # another file system: copy, then delete

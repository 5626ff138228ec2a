"""Resumable directory outputs: write per-image files into a staging folder, publish at the end.

Snakemake deletes a ``directory()`` output before its job starts (``Job.prepare`` →
``remove_existing_output``, Snakemake 9) and after the job fails, so files written straight
into the output folder never survive to a rerun. (``--keep-incomplete`` is worse for folders: the
partial folder is then kept *and* treated as complete.) The per-image stages therefore write
into a staging folder beside the output that Snakemake does not know about, skip the images
already there on a rerun, and move the finished folder onto the output path in one rename.

A staging folder carries a fingerprint (model file, settings); when it differs from the
current run's, the old partial results are discarded instead of being mixed in. Which images
in it are finished is the runner's business (:mod:`smaf.perimage`: outputs plus a journal of
per-image identities). Shards: :func:`shard_ids` cuts a split, :func:`gather_shards` publishes
the shards' staging folders as one output.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from smaf.data.files import file_digest
from smaf.errors import SmafError
from smaf.io import atomic_write

log = logging.getLogger(__name__)

#: Name of the fingerprint file inside a staging folder.
FINGERPRINT = ".staging.json"
#: Name of the journal of finished images inside a staging (or output) folder.
JOURNAL = ".done.jsonl"
#: Files of the runner's own, never published.
BOOKKEEPING = (FINGERPRINT, JOURNAL)


def file_identity(path: str | os.PathLike[str]) -> dict[str, Any]:
    """What identifies a (large) input file cheaply: path, size and modification time."""
    st = Path(path).stat()
    return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def folder_identity(folder: str | os.PathLike[str], manifest: str) -> str:
    """What identifies the run that wrote an input folder (seeds, SAM masks): the digest of
    its ``manifest`` (each run writes a new one), else the folder's inode and mtime."""
    path = Path(folder) / manifest
    if path.is_file():
        return hashlib.sha256(path.read_bytes()).hexdigest()
    st = Path(folder).stat()
    return f"{st.st_ino}:{st.st_mtime_ns}"


def content_identity(path: str | os.PathLike[str] | None) -> str | None:
    """The content digest of a file (None for none): what a training run starts from (init or
    teacher weights). Unlike :func:`file_identity` it sees a file replaced by another of the
    same size and time."""
    return None if path is None else file_digest(path)


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
    for name in BOOKKEEPING:
        (work / name).unlink(missing_ok=True)
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        # The staging folder normally sits beside the output: one atomic rename.
        os.replace(work, out)
    except OSError:
        shutil.move(work, out)  # another file system: copy, then delete


# -------------------------------------------------------------------------------- shards
#: How a shard is named in paths and wildcards: ``<k>of<n>`` (k = 1..n).
SHARD_PATTERN = re.compile(r"^(?P<k>[0-9]+)of(?P<n>[0-9]+)$")


def parse_shard(shard: str | tuple[int, int] | None) -> tuple[int, int] | None:
    """``"3of8"`` or ``(3, 8)`` → ``(3, 8)``; None stays None (the whole split)."""
    if shard is None:
        return None
    if isinstance(shard, str):
        m = SHARD_PATTERN.match(shard)
        if not m:
            raise ValueError(f"shard must look like '3of8', got {shard!r}")
        shard = (int(m["k"]), int(m["n"]))
    k, n = (int(v) for v in shard)
    if not 1 <= k <= n:
        raise ValueError(f"shard {k} of {n}: need 1 <= k <= n")
    return k, n


def shard_ids(ids: Sequence[str], shard: str | tuple[int, int] | None) -> list[str]:
    """Shard ``k`` of ``n`` of ``ids``: the k-th of n contiguous blocks (sizes differ by at most
    one), so the shards of a split partition it in order. ``None``: every id."""
    parsed = parse_shard(shard)
    if parsed is None:
        return list(ids)
    k, n = parsed
    return list(ids[(k - 1) * len(ids) // n : k * len(ids) // n])


def select_shard(
    ids: Sequence[str],
    shard: str | tuple[int, int] | None,
    work_dir: str | os.PathLike[str] | None,
) -> list[str]:
    """:func:`shard_ids`, for a stage: a shard's files wait in ``work_dir`` for the gather."""
    if shard is not None and work_dir is None:
        raise ValueError("a shard needs a work_dir (its files wait there for the gather)")
    return shard_ids(ids, shard)


def shard_names(n: int) -> list[str]:
    """``["1of<n>", ..., "<n>of<n>"]``."""
    return [f"{k}of{n}" for k in range(1, n + 1)]


def gather_shards(
    work_dirs: Sequence[str | os.PathLike[str]],
    outputs: Mapping[str, str | os.PathLike[str]],
    manifest: str | None = None,
    merge: Callable[[list[dict[str, Any]]], dict[str, Any]] | None = None,
) -> dict[str, Any] | None:
    """Publish the staging folders of a stage's shards as its outputs, in one go.

    Args:
        work_dirs: every shard's staging folder (each holding its finished per-image files).
        outputs: sub-folder of a staging folder (``""``: its top) → the output folder it
            becomes; e.g. ``{"": seeds_dir}`` or ``{"pred": pred_dir, "logits": logits_dir}``.
        manifest: name of each shard's manifest file (JSON, in the top sub-folder), merged
            with ``merge`` into one manifest of the same name in the first output.
        merge: list of the shards' manifests → the merged one.

    Returns:
        The merged manifest (None without one). The staging folders are removed.

    Raises:
        SmafError: a shard's staging folder or manifest is missing (its job did not finish).
    """
    work_dirs = [Path(w) for w in work_dirs]
    manifests = []
    for work in work_dirs:
        if not work.is_dir() or (manifest and not (work / manifest).is_file()):
            raise SmafError(
                f"shard folder {work} is missing or unfinished: rerun the workflow to redo that "
                "shard."
            )
        if manifest:
            manifests.append(json.loads((work / manifest).read_text()))
    for sub, out in outputs.items():
        out = Path(out)
        stage = out.with_name(f".{out.name}.gathering")
        if stage.exists():
            shutil.rmtree(stage)
        for work in work_dirs:
            src = work / sub if sub else work
            for path in src.rglob("*"):
                rel = path.relative_to(src)
                if path.is_dir() or rel.name in (*BOOKKEEPING, manifest) or rel.parts[0] in outputs:
                    continue
                (stage / rel).parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, stage / rel)
        stage.mkdir(parents=True, exist_ok=True)
        if out.exists():
            shutil.rmtree(out)
        os.replace(stage, out)
    merged = None
    if manifest:
        merged = merge(manifests) if merge is not None else manifests[0]
        first = Path(next(iter(outputs.values())))
        with atomic_write(first / manifest) as tmp:
            tmp.write_text(json.dumps(merged, indent=2, default=str))
    for work in work_dirs:
        shutil.rmtree(work, ignore_errors=True)
    return merged


def merge_counts(manifests: list[dict[str, Any]], weighted: Sequence[str] = ()) -> dict[str, Any]:
    """Shards' manifests → one: settings of the first, ``images`` / ``computed`` / ``seconds``
    summed, the ``weighted`` fractions averaged over the computed images, ``shards`` counted."""
    out = dict(manifests[0])
    for key in ("images", "computed", "seconds"):
        if key in out:
            out[key] = sum(m.get(key) or 0 for m in manifests)
    computed = sum(m.get("computed") or 0 for m in manifests)
    for key in weighted:
        parts = [(m.get(key), m.get("computed") or 0) for m in manifests if m.get(key) is not None]
        out[key] = sum(v * c for v, c in parts) / computed if computed and parts else None
    if "images_per_s" in out:
        out["images_per_s"] = computed / out["seconds"] if out.get("seconds") else None
    out["shards"] = len(manifests)
    return out

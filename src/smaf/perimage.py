"""The per-image stage runner: resumable, sharded, per-image outputs in a staging folder.

Every per-image stage (seeds, the teacher's maps, both CRFs, DeepLab's predictions) calls
:func:`run_per_image` with its own per-image function; the runner does the rest: it opens the
staging folder (below), skips the images an earlier run finished, hands each other image to the
stage's function, writes its outputs atomically (optionally in a writer thread), counts, writes
the manifest and publishes the folder (one shard: leaves it for :func:`gather_shards`).

An image counts as finished only when its outputs exist *and* the journal (:data:`JOURNAL`,
one JSON line ``{"id", "identity"}`` appended after the image's outputs are written) records
the identity the image has now (for an index: :meth:`~smaf.data.index.DatasetIndex.row_identity`,
its row of paths, sizes, labels and digests). A replaced image is therefore recomputed, never
served stale, and adding an image does not discard the others' work.

Staging folders, fingerprints, shards and the gather live in :mod:`smaf.staging`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from smaf.io import atomic_write
from smaf.progress import Progress
from smaf.staging import BOOKKEEPING, JOURNAL, gather_shards, open_staging, publish

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------ the journal
def text_identity(value: Any) -> str:
    """sha256 of ``value`` (a string, or anything JSON-able): a compact per-image identity."""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class Journal:
    """The append-only record of finished images in a staging folder (:data:`JOURNAL`).

    One JSON line ``{"id": ..., "identity": ...}`` per finished image, appended and flushed
    after its outputs are written; the last line of an id wins. A torn last line (a killed
    run) is ignored: that image is redone.
    """

    def __init__(self, root: Path) -> None:
        self.path = root / JOURNAL
        self.done: dict[str, str] = {}
        if self.path.is_file():
            raw = self.path.read_bytes()
            for line in raw.splitlines():
                try:
                    entry = json.loads(line)
                    self.done[str(entry["id"])] = str(entry["identity"])
                except (ValueError, KeyError, TypeError):
                    continue  # torn by a kill
            torn = bool(raw) and not raw.endswith(b"\n")
        else:
            torn = False
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed by close())
        if torn:
            self._file.write("\n")  # the next entry starts a line of its own

    def finished(self, image_id: str, identity: str) -> bool:
        return self.done.get(image_id) == identity

    def record(self, image_id: str, identity: str) -> None:
        self._file.write(json.dumps({"id": image_id, "identity": identity}) + "\n")
        self._file.flush()
        self.done[image_id] = identity

    def close(self) -> None:
        self._file.close()


# ------------------------------------------------------------------------- the runner
@dataclass
class PerImageRun:
    """What :func:`run_per_image` did: ``root`` (the folder written into), ``images`` (of this
    shard), ``computed`` (not skipped), ``seconds``, and each computed image's result (the
    write function's, else the per-image function's), in id order."""

    root: Path
    images: int
    computed: int
    seconds: float
    results: list[Any] = field(default_factory=list)

    def counts(self) -> dict[str, Any]:
        """``images``, ``computed``, ``seconds``, ``images_per_s`` (of the computed ones)."""
        rate = self.computed / self.seconds if self.seconds > 0 and self.computed else None
        return {
            "images": self.images,
            "computed": self.computed,
            "seconds": round(self.seconds, 3),
            "images_per_s": rate,
        }


@dataclass(frozen=True)
class _Bound:
    """``fn(image_id, root)`` as a one-argument callable, picklable for a process pool."""

    fn: Callable[[str, Path], Any]
    root: Path

    def __call__(self, image_id: str) -> Any:
        return self.fn(image_id, self.root)


def _prune(root: Path, patterns: Sequence[str], keep: set[str], manifest: str | None) -> None:
    """Remove files named like an output of an image outside ``keep`` (an image gone from
    the shard, a temporary file of a killed write), so they are not published. The runner's
    own files and the stage's manifest are never outputs of an image, whatever their names
    look like (``{id}.json`` outputs beside ``.staging.json`` and ``sam.json``)."""
    own = {*BOOKKEEPING, manifest}
    for pattern in patterns:
        folder, name = os.path.split(pattern)
        prefix, suffix = name.split("{id}")
        for path in (root / folder).glob(f"{prefix}*{suffix}"):
            if not folder and path.name in own:
                continue
            image_id = path.name[len(prefix) : len(path.name) - len(suffix)]
            if path.is_file() and image_id not in keep:
                path.unlink()


#: The per-image function of this worker process (installed once by :func:`_install`).
_WORKER_FN: Callable[[str], Any] | None = None


def _install(fn: Callable[[str], Any]) -> None:
    global _WORKER_FN
    _WORKER_FN = fn


def _call_installed(image_id: str) -> Any:
    assert _WORKER_FN is not None
    return _WORKER_FN(image_id)


def _imap(fn: Callable[[str], Any], items: list[str], processes: int) -> Iterator[Any]:
    """``fn`` over ``items`` in order: here, or in a pool of spawned processes (``fn`` is
    sent to each worker once, the items one chunk at a time)."""
    workers = min(processes, len(items))
    if workers <= 1:
        yield from (fn(item) for item in items)
        return
    chunksize = int(np.clip(len(items) // (4 * workers), 1, 16))
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers, initializer=_install, initargs=(fn,)) as pool:
        yield from pool.imap(_call_installed, items, chunksize=chunksize)
        pool.close()
        pool.join()


def run_per_image(
    ids: Sequence[str],
    fn: Callable[[str, Path], Any],
    *,
    out: str | os.PathLike[str] | Mapping[str, str | os.PathLike[str]],
    work_dir: str | os.PathLike[str] | None,
    fingerprint: dict[str, Any],
    identity: Callable[[str], str],
    outputs: Sequence[str],
    shard: str | tuple[int, int] | None = None,
    write: Callable[[str, Path, Any], Any] | None = None,
    write_ahead: int = 0,
    processes: int = 1,
    manifest: str | None = None,
    report: Callable[[PerImageRun], dict[str, Any]] | None = None,
    name: str = "images",
    log_every: int = 50,
) -> PerImageRun:
    """Run a per-image stage over ``ids`` (already the shard's, :func:`select_shard`).

    Args:
        fn: the stage's per-image function ``fn(image_id, root)``; it writes the image's
            outputs under ``root`` itself (atomically), or returns what ``write`` writes.
            With ``processes > 1`` it runs in spawned workers: a picklable module-level
            function (or a partial of one).
        out: the output folder, or sub-folder of the staging folder → output folder
            (``{"pred": pred_dir, "logits": logits_dir}``).
        work_dir: the staging folder (:func:`open_staging`); None writes into ``out`` (one
            folder only; several get a hidden staging folder beside the first).
        fingerprint: what every image's outputs depend on (settings, model); another
            fingerprint discards the staging folder's results.
        identity: image id → its identity now; an image is finished when its ``outputs``
            exist and the journal records this identity.
        outputs: the image's files relative to ``root``, with ``{id}``: ``["{id}.png"]``.
        shard: the shard this run is (its folder is left for :func:`gather_shards`).
        write: ``write(image_id, root, fn's result)`` writes the outputs; its result is kept.
        write_ahead: run ``write`` in a writer thread, at most this many images waiting.
        processes: worker processes for ``fn`` (not with ``write``).
        manifest / report: the manifest's file name and its contents from the run; written
            last (in the first output when published).
        name / log_every: the progress lines' name and interval.
    """
    outs = {"": out} if isinstance(out, str | os.PathLike) else dict(out)
    if work_dir is None and list(outs) != [""]:
        first = Path(next(iter(outs.values())))
        work_dir = first.with_name(f".{first.name}.staging")
    root = open_staging(outs.get("", ""), work_dir, fingerprint)
    ids = list(ids)
    if work_dir is not None:
        _prune(root, outputs, set(ids), manifest)
    for pattern in outputs:
        (root / pattern).parent.mkdir(parents=True, exist_ok=True)
    journal = Journal(root)
    paths = {i: [root / p.format(id=i) for p in outputs] for i in ids}
    idents = {i: identity(i) for i in ids}
    todo = [
        i
        for i in ids
        if not (journal.finished(i, idents[i]) and all(p.is_file() for p in paths[i]))
    ]
    progress = Progress(name, len(ids), every=log_every, log=log)
    for _ in range(len(ids) - len(todo)):
        progress.update(counted=False)  # finished by an earlier, interrupted run
    run = PerImageRun(root, len(ids), 0, 0.0)
    t0 = time.perf_counter()

    def finish(image_id: str, result: Any) -> Any:
        if write is not None:
            result = write(image_id, root, result)
        journal.record(image_id, idents[image_id])  # after the outputs: they are complete
        return result

    if write is not None and processes > 1:
        raise ValueError("run_per_image: a write function runs in this process (processes=1)")
    writer = ThreadPoolExecutor(1, thread_name_prefix=f"{name}-writer") if write_ahead else None
    pending: deque[Future] = deque()
    try:
        for image_id, result in zip(todo, _imap(_Bound(fn, root), todo, processes), strict=True):
            if writer is None:
                run.results.append(finish(image_id, result))
            else:
                pending.append(writer.submit(finish, image_id, result))
                while len(pending) > write_ahead:
                    run.results.append(pending.popleft().result())  # re-raises a write error
            progress.update()
        while pending:
            run.results.append(pending.popleft().result())
    finally:
        if writer is not None:
            writer.shutdown(wait=True, cancel_futures=True)
        journal.close()
    progress.close()
    run.computed, run.seconds = len(todo), time.perf_counter() - t0
    if manifest is not None:
        content = report(run) if report is not None else run.counts()
        with atomic_write(root / manifest) as tmp:
            tmp.write_text(json.dumps(content, indent=2, default=str))
    if shard is None and work_dir is not None:
        if list(outs) == [""]:
            publish(root, outs[""])
        else:
            gather_shards([root], outs, manifest)
    return run

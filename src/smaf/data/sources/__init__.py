"""Dataset sources: each turns one kind of dataset into the :class:`~smaf.data.index.DatasetIndex`.

An adapter is a function ``build(settings, *, name, roles) -> DatasetIndex``:

* ``settings``: the dataset's ``datasets.<name>`` config entry (plus the folders the workflow
  resolved for it);
* ``roles``: :data:`TRAINVAL_ROLES` for the training/evaluation index, or ``("test",)`` for the
  index of the test images (predicted, never trained on or scored);
* it returns the images with their paths, split roles and image-level labels, unvalidated:
  :func:`smaf.data.prepare.prepare_dataset` checks and writes what every source returns.

A source whose files the user provides also has ``watched(settings) -> [paths]``: the files and
folders whose listing the index depends on, fingerprinted by :func:`fingerprint` so that an
edited split list or a replaced image reruns the dataset stage (and what follows), and an
unchanged folder reruns nothing.

A new source is one module here with a ``build`` (and ``watched``) function, an entry in
:data:`ADAPTERS`, and its settings in ``workflow/schemas/config.schema.yaml``; no stage changes.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from smaf.data.index import DatasetIndex
from smaf.data.sources import coco, folder, synthetic, voc
from smaf.errors import ConfigError

TRAINVAL_ROLES = voc.TRAINVAL_ROLES

Adapter = Callable[..., DatasetIndex]

#: Source name (config ``datasets.<name>.source``) → adapter.
ADAPTERS: dict[str, Adapter] = {
    "synthetic": synthetic.build,
    "voc": voc.build,
    "folder": folder.build,
    "coco": coco.build,
}
#: Source name → the files and folders its index depends on (user-provided data only; the
#: synthetic dataset is a rule's output and Snakemake tracks it).
WATCHED: dict[str, Callable[[Mapping[str, Any]], list[Path]]] = {
    "voc": voc.watched,
    "folder": folder.watched,
    "coco": coco.watched,
}


def _root_problems(settings: Mapping[str, Any], **_: Any) -> list[str]:
    """A VOC / COCO dataset the user provides (download: false): its root must exist."""
    if settings.get("download", False) or Path(settings["root"]).is_dir():
        return []
    return [
        f"root: folder not found: {settings['root']} (download: false: the dataset must be "
        "there; or set download: true)."
    ]


#: Source name → the problems of its settings found without reading the data (paths that do
#: not exist, keys that do not go together): :func:`settings_problems`.
PROBLEMS: dict[str, Callable[..., list[str]]] = {
    "voc": _root_problems,
    "folder": folder.problems,
    "coco": _root_problems,
}


def settings_problems(
    source: str, settings: Mapping[str, Any], *, name: str, needs_saliency: bool = False
) -> list[str]:
    """Every problem of dataset ``name``'s settings found before reading any image, one line
    each (``datasets.<name>.<key>: ...``). The one check ``smaf check-config`` and the dataset
    stage share.

    Args:
        needs_saliency: EPS is trained, so every training image needs a saliency map.
    """
    check = PROBLEMS.get(source)
    if check is None:
        return []
    return [f"datasets.{name}.{p}" for p in check(settings, needs_saliency=needs_saliency)]


def _walk(folder: Path, recursive: bool) -> Iterable[str]:
    """``name size mtime`` of every entry (files of sub-folders too when ``recursive``)."""
    with os.scandir(folder) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            if entry.is_dir() and recursive:
                for line in _walk(Path(entry.path), recursive):
                    yield f"{entry.name}/{line}"
            else:
                st = entry.stat()
                yield f"{entry.name} {st.st_size} {st.st_mtime_ns}"


def fingerprint(paths: Iterable[str | os.PathLike[str]], *, recursive: bool = False) -> str:
    """A cheap fingerprint of files and folders: names, sizes and mtimes, no content read.

    Changes when a file is added, removed, replaced or edited (its mtime), so the dataset
    stage reruns; a missing path counts as such (it may appear later).
    """
    digest = hashlib.sha256()
    for path in map(Path, paths):
        digest.update(f"{path}\n".encode())
        if path.is_dir():
            for line in _walk(path, recursive):
                digest.update(f"{line}\n".encode())
        elif path.exists():
            st = path.stat()
            digest.update(f"{st.st_size} {st.st_mtime_ns}\n".encode())
        else:
            digest.update(b"missing\n")
    return digest.hexdigest()


def source_fingerprint(source: str, settings: Mapping[str, Any]) -> str | None:
    """The fingerprint of a user-provided dataset (None for sources the workflow makes)."""
    watched = WATCHED.get(source)
    return fingerprint(watched(settings), recursive=True) if watched is not None else None


def build_index(
    source: str,
    settings: Mapping[str, Any],
    *,
    name: str,
    roles: Sequence[str] = TRAINVAL_ROLES,
) -> DatasetIndex:
    """Run the adapter of ``source``; its index is not validated yet."""
    try:
        adapter = ADAPTERS[source]
    except KeyError:
        raise ConfigError(
            f"datasets.{name}.source: unknown source {source!r}; "
            f"expected one of {', '.join(sorted(ADAPTERS))}."
        ) from None
    index = adapter(settings, name=name, roles=roles)
    index.info.setdefault("source", source)
    return index

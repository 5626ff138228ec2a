"""Which library code a workflow script runs, and a hash of it (Snakemake rerun trigger).

Snakemake's ``code`` rerun trigger sees only the ``script:`` file, not the ``smaf`` modules it
imports. :func:`code_hash` follows the script's imports of ``smaf`` modules transitively —
statically, by parsing the source with :mod:`ast`, so nothing (no torch) is imported — and
hashes the content of every module reached. The rules pass it as a ``params`` entry: editing
``smaf/crf.py`` then reruns the CRF stage and what follows, and not EPS pretraining, whose
script never reaches that module.

Every ``import`` statement counts, including those inside functions (lazy imports), so the
set is a safe over-approximation of what a run can execute. Modules outside ``smaf`` (torch,
numpy, ...) are not followed: upgrading them is the environment's business. What is hashed is
the code, not the text: comments, docstrings and formatting do not count, so fixing a typo in
a docstring does not retrain a model.

Parsing every module reached takes about a second, and Snakemake computes the hashes each
time it starts (every ``snakemake`` command, and every cluster job's own start). With a
``cache`` file a script's hash is reused while every file it covers has the size and
modification time it had when hashed (as ``make`` decides); an edit changes the time, so the
hash is computed again.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

from smaf.errors import ConfigError
from smaf.io import atomic_write

#: The top-level package whose modules are followed.
PACKAGE = "smaf"


def _module_file(src_root: Path, dotted: str) -> Path | None:
    """File of module ``dotted`` (``smaf.x.y``) under ``src_root``: ``x/y.py`` or ``x/y/__init__.py``."""
    base = src_root.joinpath(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _module_name(src_root: Path, path: Path) -> str:
    """Dotted name of the module at ``path`` (``.../smaf/x/__init__.py`` → ``smaf.x``)."""
    parts = list(path.relative_to(src_root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imported_names(tree: ast.AST, current: str, is_package: bool) -> Iterable[str]:
    """Dotted names an AST imports (absolute ones, and relative ones resolved against ``current``).

    ``from a.b import c`` yields both ``a.b`` and ``a.b.c`` (``c`` may be a submodule); the
    caller keeps the names that are files.
    """
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                # Relative: strip `level` trailing parts (a package counts as its own parent).
                parts = current.split(".")
                keep = len(parts) - node.level + (1 if is_package else 0)
                base = ".".join(parts[:keep] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            yield base
            for alias in node.names:
                yield f"{base}.{alias.name}"


def module_files(script: str | os.PathLike[str], src_root: str | os.PathLike[str]) -> list[Path]:
    """Every ``smaf`` module file ``script`` imports, directly or through other modules.

    Args:
        script: a Python file (a workflow script or a module).
        src_root: the folder holding the ``smaf`` package (``<repo>/src``).

    Returns:
        Sorted, unique paths, including the ``__init__.py`` of every package on the way.

    Raises:
        ConfigError: ``script`` does not exist or is not valid Python.
    """
    src_root = Path(src_root).resolve()
    script = Path(script)
    if not script.is_file():
        raise ConfigError(f"code hash: {script} not found (a rule's script: path is wrong).")
    seen: set[Path] = set()
    todo: list[tuple[Path, str]] = [(script, "")]
    while todo:
        path, name = todo.pop()
        for dotted in _analyse(path, name).imports:
            if dotted != PACKAGE and not dotted.startswith(PACKAGE + "."):
                continue
            # The module and every package above it run on import.
            parts = dotted.split(".")
            for i in range(1, len(parts) + 1):
                prefix = ".".join(parts[:i])
                found = _module_file(src_root, prefix)
                if found is not None and found not in seen:
                    seen.add(found)
                    todo.append((found, _module_name(src_root, found)))
    return sorted(seen)


class _Analysis(NamedTuple):
    imports: tuple[str, ...]  # dotted names the file imports (see _imported_names)
    fingerprint: str  # its code without comments, docstrings and formatting


def _analyse(path: Path, name: str) -> _Analysis:
    """Imports and fingerprint of the module ``name`` at ``path`` (parsed once per content)."""
    try:
        return _analyse_source(path.read_text(encoding="utf-8"), str(path), name)
    except SyntaxError as exc:
        raise ConfigError(
            f"code hash: {path} is not valid Python ({exc.msg}, line {exc.lineno})."
        ) from None


@functools.cache
def _analyse_source(source: str, filename: str, name: str) -> _Analysis:
    """:func:`_analyse` of a file's text. Cached on the text itself: every rule's hash walks
    the same modules, and Snakemake computes them all at start-up (an edited file misses)."""
    tree = ast.parse(source, filename=filename)
    imports = tuple(_imported_names(tree, name, Path(filename).name == "__init__.py"))
    return _Analysis(imports, _fingerprint(tree))


def code_fingerprint(path: str | os.PathLike[str]) -> str:
    """The code of a Python file without comments, docstrings and formatting (an AST dump)."""
    return _analyse(Path(path), "").fingerprint


def _fingerprint(tree: ast.Module) -> str:
    """:func:`code_fingerprint` of a parsed file (its docstrings are removed from ``tree``)."""
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree, annotate_fields=False)


def code_hash(
    script: str | os.PathLike[str],
    src_root: str | os.PathLike[str],
    cache: str | os.PathLike[str] | None = None,
) -> str:
    """SHA-256 (hex, 16 digits) of the code of ``script`` and of every ``smaf`` module it reaches.

    Module paths enter the hash relative to ``src_root``, so two checkouts of the same code
    in different folders hash alike; see :func:`code_fingerprint` for what counts as code.
    ``cache``: a JSON file of earlier hashes (created if missing, rewritten when a hash is
    computed); an entry serves while its files' sizes and modification times are unchanged.
    """
    src_root = Path(src_root).resolve()
    key = f"{Path(script).resolve()}|{src_root}|{sys.version_info[:2]}"
    entries = _read_cache(cache) if cache is not None else {}
    entry = entries.get(key)
    if isinstance(entry, dict) and _unchanged(entry.get("files")):
        return str(entry["hash"])
    digest = hashlib.sha256()
    digest.update(code_fingerprint(script).encode())
    files = module_files(script, src_root)
    for path in files:
        digest.update(str(path.relative_to(src_root)).encode() + b"\0")
        digest.update(_analyse(path, _module_name(src_root, path)).fingerprint.encode() + b"\0")
    result = digest.hexdigest()[:16]
    if cache is not None:
        stamps = [_stamp(p) for p in [Path(script), *files]]
        entries[key] = {"hash": result, "files": stamps}
        _write_cache(cache, entries)
    return result


def _stamp(path: Path) -> list[Any]:
    """``[path, size, mtime_ns]`` of a file, as the cache records it."""
    st = path.stat()
    return [str(path), st.st_size, st.st_mtime_ns]


def _unchanged(stamps: Any) -> bool:
    """Whether every ``[path, size, mtime_ns]`` still describes its file."""
    if not isinstance(stamps, list) or not stamps:
        return False
    try:
        return all(_stamp(Path(p)) == [p, size, mtime] for p, size, mtime in stamps)
    except (OSError, TypeError, ValueError):
        return False  # a file gone, or an entry of another shape: compute again


#: The cache files read by this process (path → entries), so that the rules' hashes read it once.
_CACHES: dict[str, dict[str, Any]] = {}


def _read_cache(cache: str | os.PathLike[str]) -> dict[str, Any]:
    name = str(Path(cache).resolve())
    if name not in _CACHES:
        try:
            entries = json.loads(Path(name).read_text())
        except (OSError, ValueError):
            entries = {}  # missing, or half-written by a killed process: start again
        _CACHES[name] = entries if isinstance(entries, dict) else {}
    return _CACHES[name]


def _write_cache(cache: str | os.PathLike[str], entries: dict[str, Any]) -> None:
    """Replace the cache file atomically (several Snakemake processes may share it); a cache
    that cannot be written is skipped: it only saves time."""
    try:
        with atomic_write(cache) as tmp:
            tmp.write_text(json.dumps(entries))
    except OSError:
        pass


__all__ = ["PACKAGE", "code_fingerprint", "code_hash", "module_files"]

"""The code rerun trigger: which smaf modules a script reaches, and the hash over them."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from workflow_utils import REPO_ROOT

from smaf import codehash
from smaf.codehash import code_hash, module_files
from smaf.errors import ConfigError

SCRIPTS = REPO_ROOT / "workflow" / "scripts"
SRC = REPO_ROOT / "src"


def _names(paths: list[Path]) -> set[str]:
    return {str(p.relative_to(SRC)) for p in paths}


def test_pretraining_does_not_reach_the_crf_module():
    pretrain = _names(module_files(SCRIPTS / "pretrain.py", SRC))
    assert {"smaf/stages/pretrain.py", "smaf/train.py", "smaf/__init__.py"} <= pretrain
    assert "smaf/crf.py" not in pretrain
    assert "smaf/crf.py" in _names(module_files(SCRIPTS / "crf.py", SRC))


def _package(tmp_path: Path) -> Path:
    """A tiny smaf package: a → b (relative import), c unused, d imported inside a function."""
    pkg = tmp_path / "src" / "smaf"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "a.py").write_text("from . import b\nimport numpy\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from smaf.d import g\n")
    (pkg / "c.py").write_text("X = 1\n")
    (pkg / "d.py").write_text("def g():\n    pass\n")
    script = tmp_path / "script.py"
    script.write_text("from smaf.sub.a import something\n")
    return script


def test_imports_are_followed_transitively_incl_relative_and_lazy_ones(tmp_path):
    script = _package(tmp_path)
    found = {str(p.relative_to(tmp_path / "src")) for p in module_files(script, tmp_path / "src")}
    assert found == {
        "smaf/__init__.py",
        "smaf/sub/__init__.py",
        "smaf/sub/a.py",
        "smaf/sub/b.py",
        "smaf/d.py",
    }


def test_hash_changes_with_a_reached_module_only(tmp_path):
    script = _package(tmp_path)
    src = tmp_path / "src"
    before = code_hash(script, src)
    (src / "smaf" / "c.py").write_text("X = 2\n")  # not imported by the script
    assert code_hash(script, src) == before
    (src / "smaf" / "d.py").write_text("def g():\n    return 1\n")  # reached lazily
    assert code_hash(script, src) != before


def test_comments_docstrings_and_formatting_do_not_count(tmp_path):
    script = _package(tmp_path)
    src = tmp_path / "src"
    before = code_hash(script, src)
    (src / "smaf" / "d.py").write_text('"""Docs."""\n\n\ndef g():  # note\n    """More docs."""\n')
    assert code_hash(script, src) == before
    (src / "smaf" / "d.py").write_text("def g():\n    return None\n")
    assert code_hash(script, src) != before


def test_hash_does_not_depend_on_the_checkout_folder(tmp_path):
    script = _package(tmp_path / "one")
    shutil.copytree(tmp_path / "one", tmp_path / "two")
    assert code_hash(script, tmp_path / "one" / "src") == code_hash(
        tmp_path / "two" / "script.py", tmp_path / "two" / "src"
    )


def test_bad_input_missing_or_broken_script_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        module_files(tmp_path / "nope.py", tmp_path)
    broken = tmp_path / "broken.py"
    broken.write_text("def (:\n")
    with pytest.raises(ConfigError, match="not valid Python"):
        module_files(broken, tmp_path)


def test_a_cached_hash_serves_while_its_files_are_unchanged(tmp_path, monkeypatch):
    """The cache (what each `snakemake` start reads) gives the computed hash without parsing;
    an edit of a reached module (a new modification time) computes it again."""
    monkeypatch.setattr(codehash, "_CACHES", {})
    script = _package(tmp_path)
    src, cache = tmp_path / "src", tmp_path / ".snakemake" / "hashes.json"
    first = code_hash(script, src, cache=cache)
    assert first == code_hash(script, src) and cache.is_file()

    def no_parsing(*args):
        raise AssertionError("parsed although cached")

    monkeypatch.setattr(codehash, "_CACHES", {})  # a new process: reads the file
    monkeypatch.setattr(codehash, "_analyse", no_parsing)
    assert code_hash(script, src, cache=cache) == first
    monkeypatch.undo()

    monkeypatch.setattr(codehash, "_CACHES", {})
    d = src / "smaf" / "d.py"
    d.write_text("def g():\n    return 1\n")
    os.utime(d, ns=(d.stat().st_atime_ns, d.stat().st_mtime_ns + 10**9))
    edited = code_hash(script, src, cache=cache)
    assert edited != first and edited == code_hash(script, src)


def test_a_damaged_cache_is_computed_again(tmp_path, monkeypatch):
    monkeypatch.setattr(codehash, "_CACHES", {})
    script = _package(tmp_path)
    src, cache = tmp_path / "src", tmp_path / "hashes.json"
    key = next(iter(json.loads((code_hash(script, src, cache=cache), cache.read_text())[1])))
    for text in ("{half-written", json.dumps({key: {"hash": "stale", "files": [["x", 1, 2]]}})):
        cache.write_text(text)
        monkeypatch.setattr(codehash, "_CACHES", {})
        assert code_hash(script, src, cache=cache) == code_hash(script, src)

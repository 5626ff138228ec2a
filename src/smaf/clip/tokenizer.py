"""CLIP's BPE tokenizer, from the installed open-clip-torch (it ships the vocabulary file).

Nothing is fetched at run time. ``open_clip``'s package ``__init__`` imports timm and the
Hugging Face hub (seconds on a small machine), so its ``tokenizer`` module, which imports only
ftfy/regex/numpy/torch, is loaded by itself when it can be; otherwise the package is imported.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from types import ModuleType

import torch

from smaf.errors import SmafError

INSTALL_HINT = "pip install 'smaf[clip]'"


def _tokenizer_module() -> ModuleType:
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise SmafError(f"the CLIP base needs open-clip-torch (its tokenizer): {INSTALL_HINT}")
    if "open_clip.tokenizer" in sys.modules:
        return sys.modules["open_clip.tokenizer"]
    path = Path(next(iter(spec.submodule_search_locations))) / "tokenizer.py"
    try:
        alone = importlib.util.spec_from_file_location("_smaf_open_clip_tokenizer", path)
        module = importlib.util.module_from_spec(alone)
        alone.loader.exec_module(module)
        return module
    except ImportError as exc:
        if exc.name in ("ftfy", "regex"):
            raise SmafError(f"the CLIP tokenizer needs {exc.name}: {INSTALL_HINT}") from None
        return importlib.import_module("open_clip.tokenizer")  # relative imports in a new version


@lru_cache(maxsize=4)
def _tokenizer(context_length: int):
    return _tokenizer_module().SimpleTokenizer(context_length=context_length)


def tokenize(texts: Sequence[str], context_length: int = 77) -> torch.Tensor:
    """Token ids ``[N, context_length]`` (int64) of ``texts``: start token, BPE, end token, zeros.

    Raises:
        SmafError: open-clip-torch is not installed (one line with the pip command), or a text
            is longer than ``context_length`` tokens.
    """
    tok = _tokenizer(int(context_length))
    for text in texts:
        n = len(tok.encode(text)) + 2
        if n > context_length:
            raise SmafError(
                f"CLIP prompt {text!r} has {n} tokens, more than the model's {context_length}; "
                "shorten it."
            )
    return tok(list(texts)).long()

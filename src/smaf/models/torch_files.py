"""Reading a torch file of tensors (``torch.load(weights_only=True)``) with one clear message
for a missing file and one for a file torch cannot read, whatever torch raises."""

from __future__ import annotations

import os
from typing import Any

import torch

from smaf.errors import SmafError


def load_torch_file(
    path: str | os.PathLike[str],
    *,
    missing: str,
    unreadable: str,
    error: type[SmafError] = SmafError,
) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU: only tensors and plain values.

    Args:
        missing: the message when ``path`` does not exist.
        unreadable: what follows ``cannot read <path> (<error>)`` when torch cannot read it
            (corrupt, truncated, or pickled objects other than tensors).
        error: the exception raised (a :class:`SmafError`, e.g. ``DataError``).
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise error(missing) from None
    except Exception as exc:  # torch raises many types (UnpicklingError, RuntimeError, ...)
        raise error(f"cannot read {path} ({type(exc).__name__}: {exc}). {unreadable}") from None


__all__ = ["load_torch_file"]

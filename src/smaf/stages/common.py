"""Pieces shared by the training stages: writing the loss history."""

from __future__ import annotations

import csv
import os

from smaf.io import atomic_write


def write_history(path: str | os.PathLike[str], history: list[dict[str, float]]) -> None:
    """Loss history as CSV (one row per step), atomically."""
    keys = list(dict.fromkeys(k for row in history for k in row))
    with atomic_write(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)

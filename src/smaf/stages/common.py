"""Pieces shared by the training stages: splitting a config section, writing the loss history."""

from __future__ import annotations

import csv
import os
from typing import Any

from smaf.config import dataclass_from
from smaf.io import atomic_write
from smaf.train import LoopConfig, OptimConfig
from smaf.transforms import AugmentConfig

#: Keys of a training section that configure the optimizer (the rest: loop, augment, method).
OPTIM_KEYS = ("lr", "weight_decay", "momentum", "poly_power", "lr_update_every")


def split_stage_config(params: dict[str, Any], section: str):
    """Split a stage's flat config dict into (loop, optim, augment, rest) dataclasses/dicts."""
    p = dict(params)
    augment = dataclass_from(AugmentConfig, p.pop("augment", {}), f"{section}.augment")
    optim = dataclass_from(OptimConfig, {k: p.pop(k) for k in list(p) if k in OPTIM_KEYS}, section)
    loop_keys = set(LoopConfig.__dataclass_fields__)
    loop = dataclass_from(LoopConfig, {k: p.pop(k) for k in list(p) if k in loop_keys}, section)
    return loop, optim, augment, p


def write_history(path: str | os.PathLike[str], history: list[dict[str, float]]) -> None:
    """Loss history as CSV (one row per step), atomically."""
    keys = list(dict.fromkeys(k for row in history for k in row))
    with atomic_write(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)

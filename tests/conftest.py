"""Shared fixtures: the real VOC 2012 subset (skips cleanly when absent) and repo paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

#: The genuine VOC 2012 subset lent to this project (676 image/mask pairs). Never committed;
#: override with SMAF_VOC_MINI=/path/to/voc2012-mini.
VOC_MINI = Path(
    os.environ.get("SMAF_VOC_MINI", REPO_ROOT.parent / "shared" / "data" / "voc2012-mini")
)


@pytest.fixture(scope="session")
def voc_mini() -> Path:
    """Root of the real VOC subset (holds ``VOCdevkit/VOC2012`` and ``extras/``)."""
    if not (VOC_MINI / "VOCdevkit" / "VOC2012" / "JPEGImages").is_dir():
        pytest.skip(f"real VOC 2012 subset not found at {VOC_MINI} (set SMAF_VOC_MINI)")
    return VOC_MINI


@pytest.fixture(scope="session")
def voc_mini_root(voc_mini: Path) -> Path:
    """``VOCdevkit/VOC2012`` inside the real subset."""
    return voc_mini / "VOCdevkit" / "VOC2012"

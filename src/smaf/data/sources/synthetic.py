"""The synthetic demo source: the generated VOC-layout folder → the dataset index.

The ``synthetic_dataset`` rule generates the images
(:func:`smaf.data.synthetic_generator.write_dataset`) in the VOC 2012 layout with a
``cls_labels.csv`` and a ``SALImages/`` folder; this adapter reads that folder with the VOC
adapter, labels from the CSV and saliency from ``SALImages``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from smaf.data.index import DatasetIndex
from smaf.data.sources import voc


def build(
    settings: Mapping[str, Any], *, name: str, roles: Sequence[str] = voc.TRAINVAL_ROLES
) -> DatasetIndex:
    """``settings``: the ``datasets:`` entry plus ``root``, the generated folder."""
    root = Path(settings["root"])
    as_voc = {
        **settings,
        "label_source": "csv",
        "saliency_dir": str(root / "SALImages"),
        "test_root": None,
    }
    index = voc.build(as_voc, name=name, roles=roles)
    index.info["source"] = "synthetic"
    index.info["generator"] = str(root / "synthetic.json")
    return index

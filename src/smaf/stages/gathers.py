"""Gathers of the sharded per-image stages that run a network: publish the shards' folders as
the stage's output folder with one manifest (:func:`smaf.staging.gather_shards`).

They live apart from those stages, which import torch, so that a gather job (a file move and
a manifest) starts in a fraction of a second and its code hash covers only the code it runs.
The CRF and SAM stages import no network and keep their gathers beside them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from typing import Any

from smaf.staging import gather_shards, merge_counts

#: Written into every finished seeds (and teacher maps) folder by
#: :func:`smaf.stages.seeds.make_seeds`; the CRF stage fingerprints its staging with it.
SEEDS_MANIFEST = "seeds.json"
#: Written by a shard of :func:`smaf.stages.deeplab.predict_split` (its end), merged by
#: :func:`gather_predictions`.
PREDICT_MANIFEST = "predict.json"


def gather_seeds(work_dirs: Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str]):
    """Publish the shards of a seeds run (:func:`smaf.stages.seeds.make_seeds` with ``shard``)
    as one folder, with one manifest (counts summed, a new run id)."""

    def merge(manifests: list[dict[str, Any]]) -> dict[str, Any]:
        merged = merge_counts(manifests, weighted=("foreground_fraction",))
        merged["run_id"] = uuid.uuid4().hex
        return merged

    return gather_shards(work_dirs, {"": out_dir}, SEEDS_MANIFEST, merge)


def gather_predictions(
    work_dirs: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    logits_dir: str | os.PathLike[str] | None = None,
):
    """Publish the shards of :func:`smaf.stages.deeplab.predict_split` (``shard``) as the
    prediction folder (and the logits folder)."""
    outputs = {"pred": out_dir, **({"logits": logits_dir} if logits_dir is not None else {})}
    return gather_shards(work_dirs, outputs, PREDICT_MANIFEST, merge_counts)

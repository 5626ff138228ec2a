"""Segment Anything stages: SAM's automatic masks of every image (rule sam_masks, once per
dataset: the masks depend on the image alone) and the SEPL refinement of one seeds folder with
them (rule sam_refine). Both run through :func:`smaf.perimage.run_per_image`: resumable,
sharded, gathered by :func:`gather_sam`.

- ``sam_masks``: ``<out>/<id>.sam.json`` (:func:`smaf.sam.save_masks`: RLEs + scores) and
  ``sam_masks.json`` (settings, checkpoint identity, architecture, counts). The staging
  fingerprint holds the generator settings and the checkpoint's content digest: another
  checkpoint or setting recomputes every image, an interrupted run resumes; each image is
  journaled with its index row's identity (``DatasetIndex.row_identity``), so a changed image
  is redone and a finished one never.
- ``sam_refine``: ``<out>/<id>.png`` labels (0 background, 1..C, 255 ignored) and
  ``sam_refine.json``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from smaf.errors import DataError, SmafError
from smaf.io import load_image, load_mask, save_mask
from smaf.perimage import PerImageRun, run_per_image
from smaf.sam import (
    generate_masks,
    load_masks,
    load_sam,
    require_segment_anything,
    sam_refine,
    save_masks,
)
from smaf.sam.model import architecture_dict
from smaf.sam_settings import SamRefineSettings, SamStageSettings
from smaf.stages.gathers import SEEDS_MANIFEST
from smaf.staging import (
    content_identity,
    folder_identity,
    gather_shards,
    merge_counts,
    select_shard,
)

log = logging.getLogger(__name__)

MASKS_MANIFEST = "sam_masks.json"
REFINE_MANIFEST = "sam_refine.json"
#: One image's masks: ``<id>.sam.json`` (not ``<id>.json``: the staging folder's bookkeeping
#: and the manifest are JSON files too).
MASKS_SUFFIX = ".sam.json"


def check_sam_checkpoint(checkpoint: str | os.PathLike[str], model: str | None = None) -> Any:
    """Load the checkpoint on the CPU (one line if the extra is missing, the file absent or not
    a SAM): ``(sam, architecture)``."""
    require_segment_anything()
    path = Path(checkpoint)
    if not path.is_file():
        raise SmafError(
            f"sam.checkpoint {path} not found: give a SAM checkpoint's path or a downloads: "
            "item's name (sam_vit_b_01ec64.pth)"
        )
    return load_sam(path, model)


def make_sam_masks(
    index: Any,
    role: str | Sequence[str],
    checkpoint: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    settings: SamStageSettings | None = None,
    *,
    device: str = "auto",
    work_dir: str | os.PathLike[str] | None = None,
    shard: str | tuple[int, int] | None = None,
    log_every: int = 10,
) -> dict[str, Any]:
    """SAM's automatic masks of every image of split(s) ``role``: ``out_dir/<id>.sam.json``.

    ``settings``: the ``sam:`` section (its ``model`` and ``generator`` are used; the
    checkpoint is ``checkpoint``); ``device``: ``'auto'`` (CUDA when available) or a torch
    device.
    """
    from smaf.data.index import read_index
    from smaf.train import resolve_device

    index = read_index(index)
    settings = settings or SamStageSettings()
    gen = settings.generator
    sam, arch = check_sam_checkpoint(checkpoint, settings.model)
    dev = resolve_device(device)
    sam = sam.to(dev)
    ids = select_shard(index.ids(role, allow_empty=shard is not None), shard, work_dir)
    described = {
        "settings": asdict(gen),
        "checkpoint": Path(checkpoint).name,
        "checkpoint_digest": content_identity(checkpoint),
        "architecture": architecture_dict(arch),
    }
    log.info("sam_masks: %d images, %s SAM on %s, %s", len(ids), arch.name, dev, asdict(gen))

    def one(image_id: str, root: Path) -> int:
        masks = generate_masks(sam, load_image(index.image_path(image_id)), gen)
        save_masks(root / f"{image_id}{MASKS_SUFFIX}", masks)
        return len(masks)

    def report(run: PerImageRun) -> dict[str, Any]:
        stats.update(run.counts(), masks=sum(run.results))
        return {**described, "device": str(dev), **stats}

    stats: dict[str, Any] = {}
    run_per_image(
        ids,
        one,
        out=out_dir,
        work_dir=work_dir,
        fingerprint={**described, "shard": str(shard)},
        identity=index.row_identity,
        outputs=["{id}" + MASKS_SUFFIX],
        shard=shard,
        manifest=MASKS_MANIFEST,
        report=report,
        name="sam_masks",
        log_every=log_every,
    )
    return stats


def refine_seeds_with_sam(
    index: Any,
    role: str | Sequence[str],
    seeds_dir: str | os.PathLike[str],
    masks_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    settings: SamRefineSettings | None = None,
    work_dir: str | os.PathLike[str] | None = None,
    shard: str | tuple[int, int] | None = None,
    log_every: int = 50,
) -> dict[str, Any]:
    """SEPL-refine the seeds of split(s) ``role`` with their SAM masks: ``out_dir/<id>.png``.

    ``settings``: how the seeds name the masks (``sam.unclaimed``, ``sam.seed_cover``).
    """
    from smaf.data.index import read_index

    index = read_index(index)
    refine = settings or SamRefineSettings()
    seeds_dir, masks_dir = Path(seeds_dir), Path(masks_dir)
    for folder, rule in ((seeds_dir, "seeds"), (masks_dir, "sam_masks")):
        if not folder.is_dir():
            raise DataError(f"{folder} not found. Run the {rule} rule first.")
    ids = select_shard(index.ids(role, allow_empty=shard is not None), shard, work_dir)
    fingerprint = {
        "settings": asdict(refine),
        "seeds": folder_identity(seeds_dir, SEEDS_MANIFEST),
        "masks": folder_identity(masks_dir, MASKS_MANIFEST),
        "shard": str(shard),
    }

    def one(image_id: str, root: Path) -> tuple[int, int]:
        seeds = load_mask(seeds_dir / f"{image_id}.png")
        out = sam_refine(
            image_id, seeds, load_masks(masks_dir / f"{image_id}{MASKS_SUFFIX}"), refine
        )
        save_mask(root / f"{image_id}.png", out)
        return int((out != seeds).sum()), int(out.size)

    def report(run: PerImageRun) -> dict[str, Any]:
        changed = sum(r[0] for r in run.results)
        pixels = sum(r[1] for r in run.results)
        stats.update(run.counts(), changed=changed, pixels=pixels)
        return {"settings": asdict(refine), "seeds_dir": str(seeds_dir), **stats}

    stats: dict[str, Any] = {}
    run_per_image(
        ids,
        one,
        out=out_dir,
        work_dir=work_dir,
        fingerprint=fingerprint,
        identity=index.row_identity,
        outputs=["{id}.png"],
        shard=shard,
        manifest=REFINE_MANIFEST,
        report=report,
        name="sam_refine",
        log_every=log_every,
    )
    return stats


def gather_sam(
    work_dirs: Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str], kind: str
) -> dict[str, Any]:
    """Publish the shards of a sam_masks (``kind`` 'masks') or sam_refine ('refine') run."""
    manifest = MASKS_MANIFEST if kind == "masks" else REFINE_MANIFEST
    return gather_shards(work_dirs, {"": out_dir}, manifest, merge_counts)

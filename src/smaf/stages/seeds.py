"""Stage 4: CAM seeds of a trained classifier (EPS or SMAF) for one split.

For every image: the fused, denoised multi-scale attention (:func:`smaf.cam.class_maps`,
Eq. 5–6 + denoising), stored as ``maps/<id>.npz`` (:func:`smaf.cam.save_maps`: present classes,
float16), and the seed label map ``argmax([thr, maps])`` as the palette PNG ``<id>.png`` with
values 0 (background) .. C and no 255. The CRF stage reads both.

Output folder::

    <out_dir>/<id>.png          uint8 [H, W] seeds, 0..C
    <out_dir>/maps/<id>.npz     fused maps of the present classes (float16)
    <out_dir>/seeds.json        settings, model, counts and timing of the run

Images whose PNG and npz both exist (and whose index row is unchanged) are skipped, so an
interrupted run continues where it stopped (:func:`smaf.perimage.run_per_image`). Under
Snakemake give ``work_dir``: Snakemake deletes
a directory output before and after a failed job, so only a staging folder survives to the rerun.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from smaf.cam import class_maps, seed_labels
from smaf.data.index import DatasetIndex, read_index
from smaf.errors import ConfigError
from smaf.io import load_image, save_maps, save_mask
from smaf.models.checkpoint import load_model
from smaf.perimage import PerImageRun, run_per_image
from smaf.settings import SeedsSettings
from smaf.stages.gathers import SEEDS_MANIFEST
from smaf.staging import file_identity, select_shard
from smaf.train import resolve_device, use_threads

log = logging.getLogger(__name__)


#: Images whose outputs may wait for the writer thread (bounds the memory they hold).
WRITE_AHEAD = 4


def _write_outputs(
    image_id: str, root: Path, result: tuple[torch.Tensor, np.ndarray, np.ndarray]
) -> float:
    """Write one image's maps and seeds; return its foreground fraction."""
    maps, labels, seeds = result
    save_maps(root / "maps" / f"{image_id}.npz", maps, labels)
    save_mask(root / f"{image_id}.png", seeds)
    return float(np.count_nonzero(seeds)) / seeds.size


def make_seeds(
    model_path: str | os.PathLike[str],
    index: DatasetIndex | str | os.PathLike[str],
    role: str | Sequence[str],
    out_dir: str | os.PathLike[str],
    settings: SeedsSettings | Mapping[str, Any] | None = None,
    device: str = "auto",
    log_every: int = 20,
    *,
    work_dir: str | os.PathLike[str] | None = None,
    num_threads: int | None = None,
    shard: str | tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Write seeds and fused maps of every image of split(s) ``role`` into ``out_dir``.

    Args:
        model_path: a classifier saved by :func:`smaf.models.checkpoint.save_model`; it must
            be for the index's number of classes.
        index: the dataset index (or its path): images and image-level labels (absent
            classes are zeroed in the maps (denoising) and can never be seeds).
        role: the split whose images get seeds, or several (each image once).
        out_dir: output folder (layout in the module docstring).
        settings: the run's ``seeds`` settings (:class:`~smaf.settings.SeedsSettings`, or
            their dict): the multi-scale inference (``cam``: scales, flip, resize_mode, eps),
            ``thr``, the constant background score prepended before the argmax (paper: 0.2),
            and ``amp``, bfloat16 autocast on CUDA (faster; seeds may differ from the float32
            ones at a few pixels whose scores tie within bf16 precision). ``None``: defaults.
        device: ``'auto'`` (CUDA when available), ``'cpu'``, ``'cuda'``, ``'cuda:1'``, ...
        log_every: progress line every this many images.
        work_dir: staging folder to write into and publish onto ``out_dir`` at the end
            (resumable under Snakemake); ``None`` writes into ``out_dir`` directly.
        num_threads: torch CPU threads (the rule's ``threads``); ``None`` leaves torch's default.
        shard: only shard ``k`` of ``n`` of the images (``"3of8"``, :func:`~smaf.staging.
            shard_ids`), written into ``work_dir`` and left there for
            :func:`smaf.stages.gathers.gather_seeds`; the results do not depend on the sharding.

    Returns:
        Run statistics: ``images``, ``computed`` (not skipped), ``seconds``, ``images_per_s``
        (of the computed ones), ``foreground_fraction`` (mean share of seed pixels > 0).

    Raises:
        ConfigError: ``thr`` outside (0, 1) or unknown keys (settings given as a dict).
        DataError / SmafError: missing images, labels or model file, class-count mismatch.
    """
    seeds = SeedsSettings() if settings is None else SeedsSettings.of(settings)
    cfg, thr, amp = seeds.cam, float(seeds.thr), seeds.amp
    if log_every < 1:
        raise ConfigError(f"log_every must be >= 1, got {log_every}")
    index = read_index(index)
    ids = select_shard(index.ids(role, allow_empty=shard is not None), shard, work_dir)
    num_classes = index.num_classes

    dev = resolve_device(device)
    use_threads(num_threads)
    model, meta = load_model(model_path, num_classes=num_classes)
    model.eval().to(dev)
    recorded = {"cam": asdict(cfg), "thr": float(thr), "num_classes": num_classes, "amp": amp}
    fingerprint = {**recorded, "model": file_identity(model_path), "shard": str(shard)}
    log.info(
        "seeds: %d images of %s%s, model %s (stage %s) on %s, scales %s, flip %s, thr %.3g",
        len(ids),
        role if isinstance(role, str) else "+".join(role),
        f" (shard {shard})" if shard else "",
        model_path,
        meta.get("stage", "?"),
        dev,
        cfg.scales,
        cfg.flip,
        thr,
    )
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp and dev.type == "cuda")

    def compute(image_id: str, root: Path) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        image = load_image(index.image_path(image_id))  # [H, W, 3] uint8
        lab = index.labels(image_id)  # [C] 0/1
        with torch.inference_mode(), autocast:
            maps = class_maps(model, image, lab, cfg).cpu()  # [C, H, W] in [0, 1]
        return maps, lab, seed_labels(maps, thr)  # seeds [H, W] uint8 0..C

    def report(run: PerImageRun) -> dict[str, Any]:
        stats.update(run.counts())
        stats["foreground_fraction"] = sum(run.results) / run.computed if run.computed else None
        return {
            **recorded,
            "model_path": str(model_path),
            "model_meta": meta,
            "split": role if isinstance(role, str) else list(role),
            "device": str(dev),
            "run_id": uuid.uuid4().hex,  # changes with every finished run (the CRF fingerprint)
            **stats,
        }

    stats: dict[str, Any] = {}
    # Compressing and writing an image's outputs (zlib, PNG: they release the GIL) overlaps
    # the network's next image in a writer thread; at most WRITE_AHEAD images wait for it.
    run_per_image(
        ids,
        compute,
        out=out_dir,
        work_dir=work_dir,
        fingerprint=fingerprint,
        identity=index.row_identity,
        outputs=["{id}.png", "maps/{id}.npz"],
        shard=shard,
        write=_write_outputs,
        write_ahead=WRITE_AHEAD,
        manifest=SEEDS_MANIFEST,
        report=report,
        name="seeds",
        log_every=log_every,
    )
    log.info(
        "seeds: done, %d images (%d computed in %.1f s) -> %s",
        len(ids),
        stats["computed"],
        stats["seconds"],
        out_dir,
    )
    return stats

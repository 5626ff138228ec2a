"""The CLIP base's seeds: CLIP-ES CAMs (:mod:`smaf.clip`) of every image of a split, written in
the layout of :func:`smaf.stages.seeds.make_seeds`, so the CRF stage and the SMAF teacher read
them as they read a classifier's seeds.

For every image: the refined CLIP maps of its present classes (CLIP-ES's pseudo-mask maps,
``attn_highres``) in ``maps/<id>.npz`` (:func:`smaf.io.save_maps`: present classes, float16),
and ``argmax([thr, maps])`` as the palette PNG ``<id>.png`` (0 background .. C). An image with
no class gets zero maps and an all-background PNG without running the network (CLIP-ES skips
it). Everything a person can get wrong (weights, prompts, image sizes) is checked before the
first image is computed.

Output folder::

    <out_dir>/<id>.png          uint8 [H, W] seeds, 0..C
    <out_dir>/maps/<id>.npz     refined CLIP maps of the present classes (float16)
    <out_dir>/seeds.json        settings, weights, counts and timing of the run
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from smaf.cam import seed_labels
from smaf.clip import ClipCAMConfig, background_words, class_prompts, image_cams, load_clip
from smaf.clip.cams import check_image_size, text_features
from smaf.config import dataclass_from
from smaf.data.index import DatasetIndex, read_index
from smaf.errors import ConfigError
from smaf.io import load_image, save_maps, save_mask
from smaf.perimage import PerImageRun, run_per_image
from smaf.settings import PREVIEW_THR  # the teacher previews' background score
from smaf.stages.gathers import SEEDS_MANIFEST
from smaf.staging import file_identity, select_shard
from smaf.train import resolve_device, use_threads

log = logging.getLogger(__name__)


def clip_config(settings: dict[str, Any] | ClipCAMConfig | None) -> ClipCAMConfig:
    """:class:`ClipCAMConfig` from the ``pretrain.clip`` settings (a ConfigError names bad keys)."""
    if isinstance(settings, ClipCAMConfig):
        return settings
    return dataclass_from(ClipCAMConfig, settings, "pretrain.clip")


def image_maps(
    model: torch.nn.Module,
    image: np.ndarray,
    labels: np.ndarray,
    class_text: torch.Tensor,
    background_text: torch.Tensor,
    cfg: ClipCAMConfig,
) -> torch.Tensor:
    """Refined CLIP maps ``[C, H, W]`` in [0, 1] of one image; zeros for absent classes.

    The per-image function of the stage (a runner may call it directly).
    """
    present = np.flatnonzero(np.asarray(labels) > 0)
    maps = torch.zeros(len(labels), *image.shape[:2])
    if len(present):
        out = image_cams(model, image, present, class_text, background_text, cfg)
        maps[torch.from_numpy(present)] = out.refined
    return maps


def clip_maps(
    weights: str | os.PathLike[str],
    index: DatasetIndex | str | os.PathLike[str],
    role: str | Sequence[str],
    out_dir: str | os.PathLike[str],
    settings: dict[str, Any] | ClipCAMConfig | None,
    thr: float,
    device: str = "auto",
    log_every: int = 20,
    *,
    work_dir: str | os.PathLike[str] | None = None,
    num_threads: int | None = None,
    shard: str | tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Write CLIP seeds and maps of every image of split(s) ``role`` into ``out_dir``.

    Args:
        weights: an OpenAI-format ViT CLIP (TorchScript archive or state dict), e.g. the
            ``ViT-B-16.pt`` download item.
        index: the dataset index (or its path): images, image-level labels, class names and
            the source (VOC and COCO get CLIP-ES's prompts, other sources their class names).
        role, out_dir, device, log_every, work_dir, num_threads, shard: as
            :func:`smaf.stages.seeds.make_seeds`.
        settings: :class:`~smaf.clip.ClipCAMConfig` or its fields as a dict; None = CLIP-ES's.
        thr: constant background score prepended before the argmax, in (0, 1).

    Returns:
        Run statistics: ``images``, ``computed``, ``seconds``, ``images_per_s``,
        ``foreground_fraction``.

    Raises:
        ConfigError: bad settings, ``thr`` outside (0, 1), a class without a prompt.
        SmafError / DataError: weights missing or not CLIP, an image smaller than one patch,
            missing images.
    """
    cfg = clip_config(settings)
    if not 0.0 < float(thr) < 1.0:
        raise ConfigError(f"seeds.thr must be in (0, 1) (a background score), got {thr}")
    index = read_index(index)
    ids = select_shard(index.ids(role, allow_empty=shard is not None), shard, work_dir)
    source = index.info.get("source")
    prompts = class_prompts(index.class_names[1:], source, cfg.class_prompts)
    background = background_words(cfg, source, prompts)
    model = load_clip(weights)
    patch = model.visual.patch_size
    for image_id in ids:  # before any work: every image must hold a patch at the smallest scale
        h, w = index.size(image_id)
        scale = min(cfg.scales)
        check_image_size((int(scale * h), int(scale * w)), patch, str(index.image_path(image_id)))

    dev = resolve_device(device)
    use_threads(num_threads)
    model.to(dev)
    class_text = text_features(model, prompts, cfg.template)
    background_text = text_features(model, background, cfg.template)
    run = {"clip": asdict(cfg), "thr": float(thr), "prompts": prompts, "background": background}
    fingerprint = {**run, "weights": file_identity(weights), "shard": str(shard)}
    log.info("clip seeds: %d images, weights %s on %s, thr %.3g", len(ids), weights, dev, thr)

    def compute(image_id: str, root: Path) -> float:
        labels = index.labels(image_id)
        image = load_image(index.image_path(image_id))
        maps = image_maps(model, image, labels, class_text, background_text, cfg)
        seeds = seed_labels(maps, thr)
        # maps first: a PNG without its npz is redone on resume
        save_maps(root / "maps" / f"{image_id}.npz", maps, labels)
        save_mask(root / f"{image_id}.png", seeds)
        return float(np.count_nonzero(seeds)) / seeds.size

    def report(done: PerImageRun) -> dict[str, Any]:
        stats.update(done.counts())
        stats["foreground_fraction"] = sum(done.results) / done.computed if done.computed else None
        return {
            **run,
            "weights": str(weights),
            "split": role if isinstance(role, str) else list(role),
            "device": str(dev),
            "run_id": uuid.uuid4().hex,
            **stats,
        }

    stats: dict[str, Any] = {}
    run_per_image(
        ids,
        compute,
        out=out_dir,
        work_dir=work_dir,
        fingerprint=fingerprint,
        identity=index.row_identity,
        outputs=["{id}.png", "maps/{id}.npz"],
        shard=shard,
        manifest=SEEDS_MANIFEST,  # as the classifier seeds' (the CRF stage reads it)
        report=report,
        name="clip seeds",
        log_every=log_every,
    )
    return stats


def clip_teacher_maps(
    weights: str | os.PathLike[str],
    index: DatasetIndex | str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    settings: dict[str, Any] | ClipCAMConfig | None,
    *,
    work_dir: str | os.PathLike[str] | None = None,
    shard: str | tuple[int, int] | None = None,
    device: str = "auto",
    threads: int | None = None,
    role: str = "train_aug",
) -> dict[str, Any]:
    """SMAF's offline teacher on the CLIP base: the CLIP maps of split ``role`` at the teacher's
    ``settings`` (``pretrain.clip`` with ``self_train.teacher_cam``'s scales and flip), in the
    layout of :func:`smaf.stages.teacher.teacher_maps` (PNG previews at :data:`PREVIEW_THR`).
    Only where those settings differ from the seeds' (else the seeds pass is the teacher's)."""
    return clip_maps(
        weights,
        index,
        role,
        out_dir,
        settings,
        PREVIEW_THR,
        device,
        work_dir=work_dir,
        num_threads=threads,
        shard=shard,
    )

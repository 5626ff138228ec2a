"""Stage 3: SMAF self-training (paper Sec. 3, Eq. 1–9).

The student starts from the pretrained (EPS) model and learns, at a single scale, the fused
multi-scale attention of the frozen teacher (the same initial model). On the CLIP base
(``pretrain.method: clip``) there is no pretrained classifier: the student is built fresh from
``model:`` (its ``pretrained`` backbone weights, or random) and the teacher is CLIP's maps:

* ``teacher: offline`` (the released code): the teacher's fused maps were computed once over
  train_aug (:mod:`smaf.stages.teacher`) and arrive with the batch, cropped like the image.
* ``teacher: online`` (the paper's Fig. 2): the frozen teacher runs the multi-scale + flip
  inference on the student's own (augmented) batch at every step.

Target: fused maps resized to ``crop / target_stride`` (released: a quarter of the crop),
denoised with the image label, then reactivated with background ``thr`` (Eq. 8) — or not
(``reactivation: false``, Table 5). Student: CAM logits upsampled to the target size; with a
background channel, softmax over C+1 (released code), else ReLU + per-class max normalisation
(Eq. 2). Loss ``w_cls · L_cls + α · L_mac`` (Eq. 1; released: w_cls = 0, α = 100).

The bilinear resizes of the teacher maps (offline: with the random resize and to the target
size) and of the student's logits use ``align_corners`` (the released code: True). The online
teacher's fused maps are normalised over the crop's valid pixels only (Eq. 5 on the image, not
on its padding), then the padding is zeroed.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from smaf import distributed
from smaf.cam import attention, attention_maps
from smaf.config import dataclass_from
from smaf.data.datasets import WeakTrainSet
from smaf.data.index import DatasetIndex, read_index
from smaf.errors import ConfigError
from smaf.fusion import denoise, fuse_scales, multiscale_maps, reactivate
from smaf.losses import smaf_loss
from smaf.models.build import Classifier, ModelConfig, build_classifier
from smaf.models.checkpoint import load_model, save_model
from smaf.settings import CAMConfig, SelfTrainSettings
from smaf.stages.common import write_history
from smaf.stages.gathers import SEEDS_MANIFEST
from smaf.staging import content_identity, file_identity
from smaf.train import build_optimizer, fit, resolve_device, use_threads

log = logging.getLogger(__name__)


def student_maps(
    model: Classifier, cam: torch.Tensor, size: tuple[int, int], align_corners: bool = False
) -> torch.Tensor:
    """Student attention M_o at the target size (Eq. 2): ``[B, C+1, h, w]`` softmax with a
    background channel, else ``[B, C, h, w]`` max-normalised ReLU CAM. The logits are resized
    bilinearly with ``align_corners`` (released: True) before the softmax."""
    return attention_maps(
        cam,
        model.has_background,
        size=size,
        keep_background=True,
        normalize=True,
        align_corners=align_corners,
    )


def teacher_at(fused: torch.Tensor, size: tuple[int, int], align_corners: bool) -> torch.Tensor:
    """Offline teacher maps of the crop ``[B, C, S, S]`` → the target size ``[B, C, h, w]``
    (bilinear; the released code: ``scale_factor=0.25, align_corners=True``)."""
    return F.interpolate(fused, size=size, mode="bilinear", align_corners=align_corners)


def online_teacher(
    teacher: Classifier,
    x: torch.Tensor,
    valid: torch.Tensor,
    size: tuple[int, int],
    cam_cfg: CAMConfig,
) -> torch.Tensor:
    """The online teacher's fused maps of a crop batch at the target size ``[B, C, h, w]``.

    Multi-scale (+ flip) attention of ``x`` ``[B, 3, S, S]`` fused by Eq. 5–6, the max taken
    over the valid pixels only (``valid`` bool ``[B, S, S]``, nearest to the target size):
    a peak in the padding would otherwise scale down the whole image's maps. The padding is 0.
    """
    maps = multiscale_maps(
        lambda t: attention(teacher, t),
        x,
        cam_cfg.scales,
        cam_cfg.flip,
        mode=cam_cfg.resize_mode,
        antialias=cam_cfg.resize_mode == "bicubic",
    )
    mask = F.interpolate(valid[:, None].float(), size=size, mode="nearest")  # [B, 1, h, w]
    return fuse_scales(maps, size, eps=cam_cfg.eps, valid=mask)


def make_target(
    fused: torch.Tensor, labels: torch.Tensor, cfg: SelfTrainSettings, with_background: bool
):
    """Denoised (and reactivated) teacher target matching :func:`student_maps`'s channels."""
    fused = denoise(fused, labels)  # [B, C, h, w]
    if cfg.reactivation:
        target = reactivate(fused, cfg.thr)  # [B, C+1, h, w], background at index 0
        return target if with_background else target[:, 1:]
    return fused


def smaf_step(cfg: SelfTrainSettings, teacher: Classifier | None, cam_cfg: CAMConfig):
    """The per-micro-batch SMAF loss (offline when ``teacher`` is None)."""

    def step(model, batch, device) -> dict[str, torch.Tensor]:
        x = batch["image"].to(device, non_blocking=True)  # [B, 3, S, S]
        y = batch["labels"].to(device, non_blocking=True)  # [B, C]
        size = (x.shape[-2] // cfg.target_stride, x.shape[-1] // cfg.target_stride)
        if teacher is None:
            fused = batch["teacher"].to(device, non_blocking=True)  # [B, C, S, S]
            fused = teacher_at(fused, size, cfg.align_corners)
        else:
            with torch.no_grad():
                valid = batch["valid"].to(device)  # [B, S, S]: the padding is background
                fused = online_teacher(teacher, x, valid, size, cam_cfg)
        out = model(x)
        pred = student_maps(model, out["cam"], size, cfg.align_corners)
        target = make_target(fused.float(), y, cfg, model.has_background)
        if model.has_background and not cfg.reactivation:
            pred = pred[:, 1:]  # compare the K class channels only (Eq. 7)
        return smaf_loss(pred, target, out["logits"].float(), y, alpha=cfg.alpha, w_cls=cfg.w_cls)

    return step


def _teacher_identity(teacher_dir: str | os.PathLike[str]) -> Any:
    """The offline teacher's maps: their folder's manifest (a new ``run_id`` per finished run)
    when it has one, else its path, size and time."""
    manifest = Path(teacher_dir) / SEEDS_MANIFEST
    return content_identity(manifest) if manifest.is_file() else file_identity(teacher_dir)


def initial_student(
    init_model: str | os.PathLike[str] | None,
    model: dict[str, Any] | None,
    index: DatasetIndex,
    seed: int,
) -> tuple[Classifier, dict[str, Any]]:
    """The student before self-training and its model file's meta: the pretrained classifier
    ``init_model``, or (None) a fresh one from the ``model`` settings, seeded by ``seed``."""
    if init_model is not None:
        return load_model(init_model, num_classes=index.num_classes)
    if model is None:
        raise ConfigError("self_train: no init_model and no model settings to build the student")
    cfg = dataclass_from(ModelConfig, {**model, "num_classes": index.num_classes}, "model")
    torch.manual_seed(seed)  # the head's initialisation
    meta = {"method": "clip", "class_names": index.class_names}
    return build_classifier(cfg), meta


def self_train(
    *,
    index: DatasetIndex | str | os.PathLike[str],
    init_model: str | os.PathLike[str] | None,
    teacher_dir: str | os.PathLike[str] | None,
    settings: SelfTrainSettings | Mapping[str, Any],
    out_model: str | os.PathLike[str],
    out_history: str | os.PathLike[str],
    state_dir: str | os.PathLike[str],
    threads: int | None = None,
    role: str = "train_aug",
    model: dict[str, Any] | None = None,
) -> None:
    """Self-train the student initialised from ``init_model``; write it to ``out_model``.

    Args:
        index: the dataset index or its path; the student trains on split ``role``.
        init_model: the pretrained classifier (model.pt); None = a fresh student built from
            ``model`` (the CLIP base: its teacher is no classifier, so there is none to copy).
        model: ``ModelConfig`` fields of the fresh student (``num_classes`` from the dataset).
        teacher_dir: the teacher_maps stage's folder (required for ``teacher: offline``).
        settings: the run's ``self_train`` settings, runtime keys included (or their dict:
            :meth:`~smaf.config.Settings.to_dict`, how they reach a DDP worker).
    """
    index = read_index(index)
    cfg = SelfTrainSettings.of(settings)
    loop, optim, augment, cam_cfg = cfg.loop, cfg.optim, cfg.augment, cfg.teacher_cam
    loop.num_workers = use_threads(threads)
    if cfg.teacher == "offline" and teacher_dir is None:
        raise ConfigError(
            "self_train.teacher 'offline' needs the teacher maps (rule teacher_maps)."
        )
    student, meta = initial_student(init_model, model, index, loop.seed)
    teacher = None
    if cfg.teacher == "online":
        if init_model is None:
            raise ConfigError(
                "self_train.teacher 'online' runs the pretrained classifier as the teacher; the "
                "CLIP base (pretrain.method: clip) has none: use self_train.teacher: offline."
            )
        teacher = copy.deepcopy(student).eval().to(resolve_device(loop.device))
        for p in teacher.parameters():
            p.requires_grad_(False)
    dataset = WeakTrainSet(
        index,
        role,
        augment,
        teacher_dir=Path(teacher_dir) / "maps" if cfg.teacher == "offline" else None,
        teacher_align_corners=cfg.align_corners,
    )
    optimizer = build_optimizer(student.param_groups(), optim)
    log.info(
        "self-training (%s teacher, scales %s, flip %s, thr %g, reactivation %s, α %g, w_cls %g): "
        "%d images, %d iterations of batch %d",
        cfg.teacher,
        cam_cfg.scales,
        cam_cfg.flip,
        cfg.thr,
        cfg.reactivation,
        cfg.alpha,
        cfg.w_cls,
        len(dataset),
        loop.iterations,
        loop.batch_size,
    )
    # What the checkpoints must agree with (the runtime settings may change on a resume), and
    # what the result depends on besides the settings: the rows it reads (file digests and
    # labels), the content of the weights it starts from and of the offline teacher's maps.
    full_config = {
        "self_train": cfg.params(),
        "init_model": str(init_model) if init_model else {"fresh": asdict(student.config)},
        "data": index.fingerprint(index.ids(role)),
        "init_weights": content_identity(init_model) if init_model else None,
        "teacher": _teacher_identity(teacher_dir) if cfg.teacher == "offline" else None,
    }
    history = fit(
        student,
        optimizer,
        dataset,
        smaf_step(cfg, teacher, cam_cfg),
        loop,
        optim,
        state_dir,
        full_config,
        desc="self_train",
    )
    if not distributed.is_main():
        return  # DDP: rank 0 writes the outputs
    write_history(out_history, history)
    save_model(
        out_model, student.cpu(), {**meta, "stage": "self_train", "iterations": loop.iterations}
    )
    log.info("wrote %s", out_model)

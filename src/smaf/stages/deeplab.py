"""Stage 6: DeepLab-v2 (ASPP, MSC) trained on the CRF-refined SMAF pseudo labels, and inference.

Training (:func:`train_deeplab`), as deeplab-pytorch's VOC recipe: random scale from
``{0.5, 0.75, 1, 1.25, 1.5}``, random ``321×321`` crop (the image padded with the mean,
i.e. 0 after normalisation, the label with 255), horizontal flip
(:func:`smaf.transforms.augment_pair`); cross-entropy ignoring 255 on the logits of every MSC
scale and on their max, each against the label map resized (nearest) to that output's size,
summed (:func:`smaf.losses.msc_loss`); SGD batch 10 as 5 × 2 accumulated, lr 2.5e-4 (ASPP
weights ×10, biases ×20 without weight decay), momentum 0.9, wd 5e-4, poly 0.9, 20k
iterations; BN frozen. The loop is :func:`smaf.train.fit` (resumable, deterministic).

Inference (:func:`predict_split`): the full image, MSC (eval: the max over scales), optional
flip (logits averaged), bilinear upsampling to the image size, softmax, argmax → palette PNG.
The low-resolution logits can be kept for :func:`smaf.stages.crf_stage.crf_split` (DeepLab's
dense CRF). Scores come from :mod:`smaf.stages.evaluate`; :mod:`smaf.stages.submission` packs
test predictions in the layout of the VOC evaluation server.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from smaf import distributed
from smaf.data.datasets import PseudoLabelSet
from smaf.data.index import DatasetIndex, read_index
from smaf.inference import infer_logits, upsampled_probs
from smaf.io import atomic_write, load_image, save_mask
from smaf.losses import msc_loss
from smaf.models.deeplab import (
    MSC,
    build_deeplab,
    load_classifier_backbone,
    load_deeplab,
    save_deeplab,
)
from smaf.perimage import PerImageRun, run_per_image
from smaf.settings import DeepLabSettings
from smaf.stages.common import write_history
from smaf.stages.gathers import PREDICT_MANIFEST
from smaf.staging import content_identity, file_identity, select_shard
from smaf.train import (
    build_optimizer,
    fit,
    resolve_device,
    use_threads,
)

log = logging.getLogger(__name__)


def deeplab_step(
    model: MSC, batch: dict[str, Any], device: torch.device
) -> dict[str, torch.Tensor]:
    """Loss of one micro-batch: the sum of the MSC cross-entropies (plus each, for the log)."""
    x = batch["image"].to(device, non_blocking=True)  # [B, 3, S, S]
    y = batch["label"].to(device, non_blocking=True)  # [B, S, S]
    losses = msc_loss(model(x), y)
    out = {"loss": torch.stack(losses).sum()}
    names = [f"ce_{s:g}" for s in model.scales] + ["ce_max"]
    out.update({n: v.detach() for n, v in zip(names, losses, strict=True)})
    return out


def train_deeplab(
    *,
    index: DatasetIndex | str | os.PathLike[str],
    label_dir: str | os.PathLike[str],
    settings: DeepLabSettings | Mapping[str, Any],
    out_model: str | os.PathLike[str],
    out_history: str | os.PathLike[str],
    state_dir: str | os.PathLike[str] | None,
    threads: int | None = None,
    init_backbone: str | os.PathLike[str] | None = None,
    role: str = "train_aug",
) -> list[dict[str, float]]:
    """Train DeepLab-v2 on the pseudo labels ``label_dir/<id>.png`` of split ``role``.

    Args:
        index: the dataset index (C, class names, images) or its path.
        label_dir: palette PNGs with values 0..C (255 = ignore), one per id.
        settings: the run's ``deeplab`` settings, runtime keys included (or their dict:
            :meth:`~smaf.config.Settings.to_dict`, how they reach a DDP worker); ``test`` is
            not training's.
        out_model: written last (its presence means done) by
            :func:`~smaf.models.deeplab.save_deeplab`.
        out_history: per-step losses as CSV.
        state_dir: checkpoint folder outside the rule's outputs (resume after a kill).
        threads: CPU threads of the job (torch threads; threads − 1 loader workers).
        role: the training split (train_aug).
        init_backbone: a classifier model file (``deeplab.init_from``: the EPS or SMAF model)
            whose backbone initialises DeepLab's instead of ImageNet weights; see
            :func:`~smaf.models.deeplab.load_classifier_backbone`.

    Returns:
        The per-step history.
    """
    index = read_index(index)
    num_classes = index.num_classes
    cfg = DeepLabSettings.of(settings)
    loop, optim, augment = cfg.loop, cfg.optim, cfg.augment
    model_cfg = replace(cfg.model, num_classes=num_classes)
    loop.num_workers = use_threads(threads)
    dataset = PseudoLabelSet(index, role, label_dir, augment)
    torch.manual_seed(loop.seed)  # the ASPP initialisation
    net = build_deeplab(model_cfg)
    if init_backbone is not None:
        load_classifier_backbone(net, init_backbone)
    optimizer = build_optimizer(net.param_groups(), optim)
    log.info(
        "deeplab: %d images, %d classes, %s (pretrained: %s), %d iterations of batch %d (%d x %d)",
        len(dataset),
        num_classes,
        model_cfg.backbone,
        init_backbone or model_cfg.pretrained or "no",
        loop.iterations,
        loop.batch_size,
        loop.batch_size // loop.grad_accum,
        loop.grad_accum,
    )
    # What the checkpoints must agree with (the runtime settings may change on a resume).
    full_config = {
        "model": asdict(model_cfg),
        "deeplab": cfg.params(),
        "split": role,
        "init_from": content_identity(init_backbone),
        "data": index.fingerprint(index.ids(role)),
        # Regenerated pseudo labels replace the folder (new mtime): old checkpoints don't resume.
        "labels": file_identity(label_dir),
    }
    history = fit(
        net, optimizer, dataset, deeplab_step, loop, optim, state_dir, full_config, desc="deeplab"
    )
    if not distributed.is_main():
        return history  # DDP: rank 0 writes the outputs
    write_history(out_history, history)
    meta = {
        "stage": "deeplab",
        "class_names": index.class_names,
        "iterations": loop.iterations,
        "labels": str(label_dir),
        # Where the backbone started (Table 1 names it from the config: deeplab_init in smaf.provenance).
        "init": str(init_backbone) if init_backbone is not None else model_cfg.pretrained,
    }
    save_deeplab(out_model, net.cpu(), meta)  # written last: its presence means done
    log.info("wrote %s", out_model)
    return history


# ------------------------------------------------------------------------------ inference


def predict_split(
    model_path: str | os.PathLike[str],
    index: DatasetIndex | str | os.PathLike[str],
    role: str,
    out_dir: str | os.PathLike[str],
    *,
    logits_dir: str | os.PathLike[str] | None = None,
    flip: bool = False,
    device: str = "auto",
    amp: bool = False,
    threads: int | None = None,
    work_dir: str | os.PathLike[str] | None = None,
    log_every: int = 50,
    shard: str | tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Predict every image of split ``role`` (no ground truth needed) with a DeepLab model.

    Args:
        model_path: written by :func:`train_deeplab`.
        index: the dataset (or test) index, or its path.
        role: the split to predict (val, test).
        out_dir: receives ``<id>.png``: uint8 ``[H, W]`` labels 0..C (palette PNG).
        logits_dir: if given, receives ``<id>.npy``: float32 ``[C+1, ⌈H/8⌉, ⌈W/8⌉]`` MSC
            logits, the input of :func:`crf_split`.
        flip: also run the mirrored image and average the logits (not in the paper).
        device: ``auto`` | ``cpu`` | ``cuda[:i]``.
        amp: bf16 autocast on CUDA.
        threads: torch CPU threads.
        work_dir: staging folder (see :mod:`smaf.staging`): images done by a killed
            run are kept there and skipped; published onto the outputs at the end.

    Returns:
        Counts and timing.
    """
    use_threads(threads)
    dev = resolve_device(device)
    index = read_index(index)
    ids = select_shard(
        index.ids(role, allow_empty=True), shard, work_dir
    )  # a user's data may have no test
    model, meta = load_deeplab(model_path)
    model.to(dev).eval()
    fingerprint = {
        "model": file_identity(model_path),
        "flip": flip,
        "amp": amp,
        "logits": logits_dir is not None,
        "shard": str(shard),
    }
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp and dev.type == "cuda")

    def predict_one(image_id: str, root: Path) -> None:
        image = load_image(index.image_path(image_id))  # [H, W, 3]
        with autocast:
            logits = infer_logits(model, image, dev, flip)  # [K, h, w]
        if logits_dir is not None:
            with atomic_write(root / "logits" / f"{image_id}.npy") as tmp:
                np.save(tmp, logits.numpy())
        probs = upsampled_probs(logits, image.shape[:2])  # [K, H, W]
        save_mask(root / "pred" / f"{image_id}.png", probs.argmax(0).numpy().astype(np.uint8))

    def report(run: PerImageRun) -> dict[str, Any]:
        extra = {"flip": flip, "model": str(model_path), "iterations": meta.get("iterations")}
        return {**run.counts(), **extra}

    outs = {"pred": out_dir, **({"logits": logits_dir} if logits_dir is not None else {})}
    run = run_per_image(
        ids,
        predict_one,
        out=outs,
        work_dir=work_dir,
        fingerprint=fingerprint,
        identity=index.row_identity,
        outputs=["pred/{id}.png", *(["logits/{id}.npy"] if logits_dir is not None else [])],
        shard=shard,
        manifest=PREDICT_MANIFEST,
        report=report,
        name="predict",
        log_every=log_every,
    )
    summary = report(run)
    log.info("predict: %s", json.dumps(summary))
    return summary

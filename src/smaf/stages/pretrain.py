"""Stage 2: pretraining the classifier with image-level labels (EPS, or plain CAM as baseline).

``method: eps`` — EPS (Lee et al., CVPR'21): a C+1-channel CAM whose extra channel is the
background, trained with ``L_cls + L_sal`` (saliency loss with τ and λ; see
:func:`smaf.losses.eps_saliency_loss`). ``method: cam`` — classification loss only (Eq. 3), the
"any WSSS model" baseline.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

import torch

from smaf import distributed
from smaf.config import dataclass_from
from smaf.data.datasets import WeakTrainSet
from smaf.data.index import DatasetIndex, read_index
from smaf.errors import ConfigError
from smaf.losses import classification_loss, eps_saliency_loss
from smaf.models.build import ModelConfig, build_classifier
from smaf.models.checkpoint import save_model
from smaf.settings import PretrainSettings
from smaf.stages.common import write_history
from smaf.staging import content_identity
from smaf.train import build_optimizer, fit, use_threads

log = logging.getLogger(__name__)


def eps_step(cfg: PretrainSettings):
    """The per-micro-batch loss of the pretraining method."""

    def step(model, batch, device) -> dict[str, torch.Tensor]:
        x = batch["image"].to(device, non_blocking=True)  # [B, 3, S, S]
        y = batch["labels"].to(device, non_blocking=True)  # [B, C]
        out = model(x)
        l_cls = classification_loss(out["logits"].float(), y)
        if cfg.method == "cam":
            return {"loss": l_cls, "cls": l_cls}
        sal = batch["saliency"].to(device, non_blocking=True)[:, None]  # [B, 1, S, S]
        l_sal, _ = eps_saliency_loss(
            out["cam"].float(),
            sal,
            y,
            tau=cfg.tau,
            lam=cfg.lam,
            saliency_resize=cfg.saliency_resize,
        )
        return {"loss": l_cls + l_sal, "cls": l_cls, "sal": l_sal}

    return step


def pretrain(
    *,
    index: DatasetIndex | str | os.PathLike[str],
    model: dict[str, Any],
    settings: PretrainSettings | Mapping[str, Any],
    out_model: str | os.PathLike[str],
    out_history: str | os.PathLike[str],
    state_dir: str | os.PathLike[str],
    threads: int | None = None,
    role: str = "train_aug",
) -> None:
    """Train the pretraining classifier on split ``role`` and write it to ``out_model``.

    Args:
        index: the dataset index (``results/<dataset>/data/index.csv``) or its path.
        model: ``ModelConfig`` fields (``num_classes`` is taken from the dataset).
        settings: the run's ``pretrain`` settings (method, loss, optimiser, loop, augment),
            runtime keys included; or their dict (:meth:`~smaf.config.Settings.to_dict`, how
            they reach a DDP worker).
        state_dir: checkpoint folder outside the rule's outputs (resume after a kill).
        role: the training split.
    """
    index = read_index(index)
    cfg = PretrainSettings.of(settings)
    loop, optim, augment = cfg.loop, cfg.optim, cfg.augment
    loop.num_workers = use_threads(threads)
    model_cfg = dataclass_from(ModelConfig, {**model, "num_classes": index.num_classes}, "model")
    if cfg.method == "eps" and model_cfg.head == "cam":
        raise ConfigError(
            "pretrain.method 'eps' needs a background channel: set model.head to 'eps' or 'smaf'."
        )
    dataset = WeakTrainSet(index, role, augment, saliency=cfg.method == "eps")
    torch.manual_seed(loop.seed)  # the head's initialisation
    net = build_classifier(model_cfg)
    optimizer = build_optimizer(net.param_groups(), optim)
    log.info(
        "pretrain (%s): %d images, %d classes, %s, %d iterations of batch %d",
        cfg.method,
        len(dataset),
        index.num_classes,
        model_cfg.backbone,
        loop.iterations,
        loop.batch_size,
    )
    # What the checkpoints must agree with (the runtime settings may change on a resume), and
    # what the result depends on besides the settings: the rows it reads (file digests and
    # labels) and the content of the weights it starts from.
    full_config = {
        "model": asdict(model_cfg),
        "pretrain": cfg.params(),
        "split": role,
        "data": index.fingerprint(index.ids(role)),
        "pretrained": content_identity(model_cfg.pretrained),
    }
    history = fit(
        net, optimizer, dataset, eps_step(cfg), loop, optim, state_dir, full_config, desc="pretrain"
    )
    if not distributed.is_main():
        return  # DDP: rank 0 writes the outputs
    write_history(out_history, history)
    meta = {
        "stage": "pretrain",
        "method": cfg.method,
        "class_names": index.class_names,
        "iterations": loop.iterations,
    }
    save_model(out_model, net.cpu(), meta)  # written last: its presence means done
    log.info("wrote %s", out_model)

"""Stage 2: pretraining the classifier with image-level labels (EPS, or plain CAM as baseline).

``method: eps`` — EPS (Lee et al., CVPR'21): a C+1-channel CAM whose extra channel is the
background, trained with ``L_cls + L_sal`` (saliency loss with τ and λ; see
:func:`smaf.losses.eps_saliency_loss`). ``method: cam`` — classification loss only (Eq. 3), the
"any WSSS model" baseline.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
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
from smaf.stages.common import split_stage_config, write_history
from smaf.staging import content_identity
from smaf.train import build_optimizer, fit, loop_identity, use_threads

log = logging.getLogger(__name__)


@dataclass
class PretrainConfig:
    """Method-specific settings of the pretraining stage (config ``pretrain.*``)."""

    method: str = "eps"  # 'eps' (classification + saliency loss) | 'cam' (classification only)
    tau: float = 0.4  # EPS overlap threshold (the released script's value; argparse default 0.5)
    lam: float = 0.5  # EPS λ: weight of the foreground term of the predicted saliency
    saliency_resize: str = "nearest"  # how EPS resizes the saliency to the CAM size

    def __post_init__(self) -> None:
        if self.method not in ("eps", "cam"):
            raise ConfigError(f"pretrain.method must be 'eps' or 'cam', got {self.method!r}")
        if not 0 <= self.tau <= 1 or not 0 <= self.lam <= 1:
            raise ConfigError(
                f"pretrain.tau and pretrain.lam must be in [0, 1], got {self.tau}, {self.lam}"
            )


def eps_step(cfg: PretrainConfig):
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
    params: dict[str, Any],
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
        params: the ``pretrain`` config section (method, loss, optimiser, loop, augment keys).
        state_dir: checkpoint folder outside the rule's outputs (resume after a kill).
        role: the training split.
    """
    index = read_index(index)
    loop, optim, augment, rest = split_stage_config(params, "pretrain")
    loop.num_workers = use_threads(threads)
    cfg = dataclass_from(PretrainConfig, rest, "pretrain")
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
    full_config = {
        "model": asdict(model_cfg),
        "pretrain": asdict(cfg),
        "loop": loop_identity(loop),
        "optim": asdict(optim),
        "augment": asdict(augment),
        "split": role,
        # What the result depends on besides the settings: the rows it reads (file digests
        # and labels) and the content of the weights it starts from.
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

"""SGD with the poly learning-rate schedule of PSA/EPS/SMAF (their ``PolyOptimizer``).

Group ``i`` has ``lr = base_lr · lr_mult_i · (1 − step/iterations)^power`` and
``weight_decay = wd · weight_decay_mult_i``; ``momentum`` is a config key because the
released code's effective momentum is 5e-4. ``lr_update_every`` N holds the lr for N steps:
deeplab-pytorch recomputes it only every 10th iteration.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from smaf.errors import SmafError
from smaf.settings import OptimConfig


def build_optimizer(param_groups: Sequence[dict[str, Any]], cfg: OptimConfig) -> torch.optim.SGD:
    """SGD over groups carrying ``lr_mult`` / ``weight_decay_mult`` (empty groups dropped)."""
    groups = []
    for g in param_groups:
        if not g["params"]:
            continue
        groups.append(
            {
                "params": list(g["params"]),
                "lr": cfg.lr * g.get("lr_mult", 1.0),
                "weight_decay": cfg.weight_decay * g.get("weight_decay_mult", 1.0),
                "lr_mult": g.get("lr_mult", 1.0),
                "name": g.get("name", ""),
            }
        )
    if not groups:
        raise SmafError("the model has no trainable parameters (everything is frozen).")
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def poly_lr(base_lr: float, step: int, iterations: int, power: float) -> float:
    """``base_lr · (1 − step/iterations)^power`` (step counted from 0)."""
    return base_lr * (1.0 - step / iterations) ** power


def scheduled_step(step: int, every: int) -> int:
    """The step whose poly lr step ``step`` (from 0) uses when the lr changes every ``every``
    steps: ``every · ⌊step / every⌋``.

    deeplab-pytorch's ``PolynomialLR`` (``step_size`` 10) is stepped after iteration ``i``
    (from 1) and only changes the lr when ``i % 10 == 0``, to ``base · (1 − i/max)^p``: its
    iterations 1..10 run at ``base``, 11..20 at ``base · (1 − 10/max)^p``, ... — steps 0..9,
    10..19 here.
    """
    return step - step % every


def set_lr(optimizer: torch.optim.Optimizer, cfg: OptimConfig, step: int, iterations: int) -> float:
    """Apply the poly schedule to every group; return the base lr of this step."""
    lr = poly_lr(cfg.lr, scheduled_step(step, cfg.lr_update_every), iterations, cfg.poly_power)
    for g in optimizer.param_groups:
        g["lr"] = lr * g["lr_mult"]
    return lr

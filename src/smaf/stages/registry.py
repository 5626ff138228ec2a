"""The training stages ``smaf.launch`` runs in each DDP process, by name.

:func:`smaf.distributed.run_training` writes the stage function's ``__name__`` into the spec
file; each ``torchrun`` process finds the function here. Only ``smaf.launch`` imports this
module: a workflow script imports its own stage function, so that its code hash
(:mod:`smaf.codehash`) covers that stage and not the others.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from smaf.stages.deeplab import train_deeplab
from smaf.stages.pretrain import pretrain
from smaf.stages.self_train import self_train

#: Stage name (the function's ``__name__``) → the function every DDP process calls.
TRAINING_STAGES: dict[str, Callable[..., Any]] = {
    "pretrain": pretrain,
    "self_train": self_train,
    "train_deeplab": train_deeplab,
}

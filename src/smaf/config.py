"""Turning config sections (plain dicts from config.yaml) into the stages' dataclasses.

Kept free of torch so that light modules (the CRF workers) can use it without paying for the
torch import.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

from smaf.errors import ConfigError

T = TypeVar("T")


def dataclass_from(cls: type[T], values: dict[str, Any] | None, section: str) -> T:
    """Build dataclass ``cls`` from a config dict; unknown keys are a ConfigError naming them."""
    values = dict(values or {})
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(
            f"config section {section!r}: unknown key(s) {', '.join(unknown)}; "
            f"expected some of {', '.join(sorted(names))}."
        )
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config section {section!r}: {exc}") from None


@dataclass
class RuntimeConfig:
    """Where, how fast and how verbosely a training job runs; never what it computes.

    The one list of the ``train:`` keys that may change between a run and its resume (another
    node, another GPU count) without changing the result. Everything derives from it: the rules
    pass only :func:`result_train_keys` as params (so a runtime change reruns nothing), scripts
    read :func:`runtime_settings`, and :func:`smaf.train.loop_identity` leaves these fields out
    of checkpoint fingerprints. Defaults are the config schema's.
    """

    device: str = "auto"  # 'auto' (CUDA if available) | 'cpu' | 'cuda' | 'cuda:1' ...
    checkpoint_every: int = 1000  # steps between checkpoints in the state folder
    log_every: int = 50  # steps between progress lines
    channels_last: bool = False  # NHWC memory format (speed only, float rounding aside)
    compile: bool = False  # torch.compile the training model (speed only, rounding aside)
    gpus: int = 1  # DDP processes per training job (the rules' `gpu` resource)
    # DataLoader worker processes. Not a `train:` key: the job's threads - 1, set by the stage
    # (smaf.train.use_threads); each sample's augmentation is seeded by its stream position,
    # so the worker count does not change the batches.
    num_workers: int = field(default=0, metadata={"config_key": False})

    def __post_init__(self) -> None:
        if self.checkpoint_every < 1 or self.log_every < 1:
            raise ConfigError("training: checkpoint_every and log_every must be >= 1")
        if self.gpus < 1 or self.num_workers < 0:
            raise ConfigError("training: gpus must be >= 1 and num_workers >= 0")


#: The :class:`RuntimeConfig` fields that are `train:` keys of the workflow config.
RUNTIME_KEYS = tuple(f.name for f in fields(RuntimeConfig) if f.metadata.get("config_key", True))
#: `train:` keys expanded per run rather than passed whole (each run trains with one seed).
PER_RUN_KEYS = ("seeds",)


def runtime_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The :data:`RUNTIME_KEYS` of the workflow config's ``train:`` section (defaults filled)."""
    train = config.get("train") or {}
    values = {k: train[k] for k in RUNTIME_KEYS if k in train}
    runtime = dataclass_from(RuntimeConfig, values, "train")
    return {k: getattr(runtime, k) for k in RUNTIME_KEYS}


def result_train_keys(train: dict[str, Any]) -> tuple[str, ...]:
    """The keys of a ``train:`` section that change what is trained (today: ``amp``).

    Everything that is neither a :data:`RUNTIME_KEYS` key nor per run (:data:`PER_RUN_KEYS`):
    a new `train:` key therefore counts as result-changing (it reruns training) until it is
    added to :class:`RuntimeConfig`.
    """
    return tuple(k for k in train if k not in RUNTIME_KEYS and k not in PER_RUN_KEYS)

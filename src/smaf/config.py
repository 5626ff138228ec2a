"""The config: checking it before any job runs, merging it, turning sections into dataclasses.

:func:`check_config` reports every unknown key (with the closest known one) and bad value of
the workflow config against its JSON schema, then values that are impossible together;
:func:`deep_merge` is the one merge (experiment overrides, presets); :func:`dataclass_from`
is the one constructor of the settings dataclasses (:mod:`smaf.settings`) from a section, nested
and ``FLAT`` parts included, and :class:`Settings` writes them back (a rule's params). Kept free of torch so that light modules
(the CRF workers) can use it without paying for the torch import.
"""

from __future__ import annotations

import difflib
import functools
import json
import os
import typing
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from smaf.errors import ConfigError, DataError

T = TypeVar("T")


#: Field metadata of a nested settings dataclass whose keys sit at its parent's level of the
#: config (``self_train.lr`` is the ``optim`` field's ``lr``): the config stays flat, the code
#: gets the parts (loop, optimizer) it passes on.
FLAT = {"flat": True}


def runtime_field(default: Any, **metadata: Any) -> Any:
    """A :class:`RuntimeConfig` field: how a job runs, never in a rule's params."""
    return field(default=default, metadata={"runtime": True, "source": "train", **metadata})


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _nested(cls: type, name: str) -> type | None:
    """The settings dataclass of field ``name`` of ``cls`` (None: a plain value)."""
    kind = _field_types(cls)[name]
    return kind if is_dataclass(kind) else None


def _default(f: Any) -> Any:
    return f.default_factory() if f.default_factory is not MISSING else f.default


def config_keys(cls: type) -> list[str]:
    """The keys a config section of ``cls`` may have (a ``FLAT`` field's keys inlined)."""
    keys: list[str] = []
    for f in fields(cls):
        sub = _nested(cls, f.name)
        keys += config_keys(sub) if sub is not None and f.metadata.get("flat") else [f.name]
    return keys


def dataclass_from(cls: type[T], values: Mapping[str, Any] | None, section: str) -> T:
    """Build settings dataclass ``cls`` from a config section (the one constructor).

    A field that is itself a dataclass is built from its sub-section (missing keys: the
    field's default), a ``FLAT`` one from the keys of its own fields at this level. Unknown
    keys are a ConfigError naming them and ``section``; a bad value one naming ``section``.
    """
    values = dict(values or {})
    kwargs: dict[str, Any] = {}
    for f in fields(cls):
        sub = _nested(cls, f.name)
        if sub is not None and f.metadata.get("flat"):
            own = {k: values.pop(k) for k in config_keys(sub) if k in values}
            kwargs[f.name] = dataclass_from(
                sub, deep_merge(settings_dict(_default(f)), own), section
            )
        elif f.name not in values:
            continue
        elif sub is not None and not isinstance(values[f.name], sub):
            given = values.pop(f.name) or {}
            if not isinstance(given, Mapping):
                raise ConfigError(
                    f"config section '{section}.{f.name}': expected a mapping, got {given!r}"
                )
            merged = deep_merge(settings_dict(_default(f)), dict(given))
            kwargs[f.name] = dataclass_from(sub, merged, f"{section}.{f.name}")
        else:
            kwargs[f.name] = values.pop(f.name)
    if values:
        raise ConfigError(
            f"config section {section!r}: unknown key(s) {', '.join(sorted(values))}; "
            f"expected some of {', '.join(sorted(config_keys(cls)))}."
        )
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config section {section!r}: {exc}") from None


def settings_dict(settings: Any, *, params: bool = False) -> dict[str, Any]:
    """A settings dataclass as its config section: plain values, ``FLAT`` fields inlined,
    keys sorted (the same settings give the same text). ``params``: leave out what does not
    change the result (runtime fields) or is not the stage's (fields marked ``params: False``)."""
    out: dict[str, Any] = {}
    for f in fields(settings):
        if params and (f.metadata.get("runtime") or f.metadata.get("params", True) is False):
            continue
        value = getattr(settings, f.name)
        if is_dataclass(value) and f.metadata.get("flat"):
            out.update(settings_dict(value, params=params))
        elif is_dataclass(value):
            out[f.name] = settings_dict(value, params=params)
        else:
            out[f.name] = _plain(value)
    return canonical(out)


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class Settings:
    """Base of the stages' settings dataclasses (:mod:`smaf.settings`): built once from a
    run's merged config section, passed to a rule as :meth:`params`, rebuilt by its script."""

    #: The config section (for error messages).
    SECTION = ""

    @classmethod
    def from_dict(cls: type[T], values: Mapping[str, Any] | None, section: str | None = None) -> T:
        """The settings of a config section (or of a rule's params plus runtime keys)."""
        return dataclass_from(cls, values, section or cls.SECTION)

    @classmethod
    def of(cls: type[T], value: Any) -> T:
        """``value`` if it is one, else built from its dict (how settings reach a DDP worker)."""
        return value if isinstance(value, cls) else cls.from_dict(value)  # type: ignore[attr-defined]

    def to_dict(self) -> dict[str, Any]:
        """Every setting, runtime ones included (what a DDP worker rebuilds them from)."""
        return settings_dict(self)

    def params(self) -> dict[str, Any]:
        """What the stage's rule passes as params: the settings that change its result."""
        return settings_dict(self, params=True)


@dataclass
class RuntimeConfig:
    """Where, how fast and how verbosely a training job runs; never what it computes.

    The one list of the ``train:`` keys that may change between a run and its resume (another
    node, another GPU count) without changing the result. Everything derives from it: its fields
    are ``runtime_field``s, which :meth:`Settings.params` (a rule's params) leaves out, so a
    runtime change reruns nothing; scripts add :func:`runtime_settings` to the rule's settings,
    and :func:`smaf.train.loop_identity` leaves them out of checkpoint fingerprints. Defaults
    are the config schema's.
    """

    device: str = runtime_field("auto")  # 'auto' (CUDA if available) | 'cpu' | 'cuda:1' ...
    checkpoint_every: int = runtime_field(1000)  # steps between checkpoints in the state folder
    log_every: int = runtime_field(50)  # steps between progress lines
    channels_last: bool = runtime_field(False)  # NHWC memory format (speed only, rounding aside)
    compile: bool = runtime_field(False)  # torch.compile the model (speed only, rounding aside)
    gpus: int = runtime_field(1)  # DDP processes per training job (the rules' `gpu` resource)
    # DataLoader worker processes. Not a `train:` key: the job's threads - 1, set by the stage
    # (smaf.train.use_threads); each sample's augmentation is seeded by its stream position,
    # so the worker count does not change the batches.
    num_workers: int = runtime_field(0, config_key=False)

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


def canonical(value: Any) -> Any:
    """``value`` with every dict's keys sorted (recursively): same settings, same text."""
    if isinstance(value, dict):
        return {k: canonical(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [canonical(v) for v in value]
    return value


def deep_merge(base: dict[str, Any], override: dict[str, Any] | None) -> dict[str, Any]:
    """``base`` with ``override`` merged in, key by key (dicts recursively, others replaced).

    The one merge of the project: experiment overrides, config presets in the benchmarks.
    """
    out = dict(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def did_you_mean(word: str, choices: Any) -> str:
    """``" (did you mean 'x'?)"`` for the closest of ``choices``, or ``""``."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def load_schema(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The workflow's JSON schema (YAML) as a dict."""
    return yaml.safe_load(Path(path).read_text())


def _where(path: Any) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def schema_problems(config: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    """Every place where ``config`` breaks ``schema``, one line each, unknown keys with a
    suggestion (``self_trian`` → ``self_train``)."""
    import jsonschema  # Snakemake's dependency; imported here to keep this module light

    validator = jsonschema.Draft202012Validator(schema)
    problems = []
    for error in sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.path))):
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            known = set(error.schema.get("properties", {}))
            for key in sorted(set(error.instance) - known):
                where = f"in {_where(error.path)}" if error.path else "at the top level"
                problems.append(
                    f"unknown key '{key}' {where}{did_you_mean(key, known)}; "
                    f"known keys there: {', '.join(sorted(known))}."
                )
        elif "propertyNames" in error.schema_path:
            rule = error.schema.get("description") or "see the schema"
            problems.append(
                f"{_where(error.path)}: name {error.instance!r} is not allowed ({rule})."
            )
        else:
            problems.append(f"{_where(error.path)}: {error.message}.")
    return problems


def combination_problems(config: dict[str, Any]) -> list[str]:
    """Values that are each valid but impossible together (checked before any job runs)."""
    problems = []
    st = config.get("self_train") or {}
    crop = (st.get("augment") or {}).get("crop_size")
    if crop is not None and st.get("target_stride", 1) > crop:
        problems.append(
            f"self_train.target_stride {st['target_stride']} is larger than "
            f"self_train.augment.crop_size {crop}: the target maps would have no pixel. "
            "Lower target_stride (released: 4) or raise the crop."
        )
    gpus = int((config.get("train") or {}).get("gpus", 1))
    for section in ("pretrain", "self_train", "deeplab"):
        values = config.get(section) or {}
        batch, accum = values.get("batch_size"), values.get("grad_accum", 1)
        if batch is not None and batch % (accum * gpus):
            problems.append(
                f"{section}.batch_size {batch} is not divisible by grad_accum {accum} x "
                f"train.gpus {gpus}: each process needs the same number of images per micro-batch."
            )
        augment = values.get("augment") or {}
        low, high = (augment.get("resize_long") or [0, 0])[:2]
        if low > high:
            problems.append(f"{section}.augment.resize_long [{low}, {high}]: min > max.")
    if (config.get("pretrain") or {}).get("method") == "eps" and (config.get("model") or {}).get(
        "head"
    ) == "cam":
        problems.append(
            "pretrain.method 'eps' needs a background channel: set model.head to 'eps' or "
            "'smaf' (or pretrain.method to 'cam')."
        )
    model, deeplab = config.get("model") or {}, config.get("deeplab") or {}
    timm = str(model.get("backbone", "")).startswith("timm/")
    if timm and model.get("width", 1.0) != 1.0:
        # As smaf.models.build.ModelConfig says it when built (here: before any job runs).
        problems.append(
            f"model.width is resnet38d's channel multiplier; {model['backbone']} has its own "
            f"widths: set model.width: 1.0 (got {model['width']!r})."
        )
    if timm and deeplab.get("init_from"):
        problems.append(
            f"deeplab.init_from {deeplab['init_from']!r} starts DeepLab's resnet38d from the "
            f"classifier's backbone, but model.backbone is {model['backbone']}: set "
            "deeplab.init_from: null (and deeplab.pretrained for DeepLab's own init)."
        )
    problems += checkpoint_problems(config)
    problems += base_problems(config)
    return problems


#: The model name of each pretraining method's base (as smaf.experiments.BASE_MODELS).
_BASE_OF_METHOD = {"eps": "eps", "cam": "eps", "clip": "clip"}


def base_problems(config: dict[str, Any]) -> list[str]:
    """Model names that do not exist under ``pretrain.method`` (the base is ``eps`` for eps/cam,
    ``clip`` for clip), and what the CLIP base (no classifier) cannot do."""
    pretrain = config.get("pretrain") or {}
    method = pretrain.get("method", "eps")
    base = _BASE_OF_METHOD.get(method, "eps")
    other = "clip" if base == "eps" else "eps"
    deeplab = config.get("deeplab") or {}
    named = {
        "evaluation.models": list((config.get("evaluation") or {}).get("models") or []),
        "deeplab.labels_from": [deeplab.get("labels_from")],
        "deeplab.init_from": [deeplab.get("init_from")],
        "thr_sweep.models": list((config.get("thr_sweep") or {}).get("models") or []),
    }
    problems = [
        f"{key} names '{other}', but pretrain.method '{method}' makes the base model "
        f"'{base}': write '{base}' (or 'smaf') there."
        for key, models in named.items()
        if other in models
    ]
    if method != "clip":
        return problems
    if deeplab.get("init_from") == "clip":
        problems.append(
            "deeplab.init_from 'clip': the CLIP base has no ResNet38d backbone to start DeepLab "
            "from; use 'smaf', deeplab.pretrained weights, or null."
        )
    if (config.get("self_train") or {}).get("teacher") == "online":
        problems.append(
            "self_train.teacher 'online' runs a pretrained classifier as the teacher; the CLIP "
            "base (pretrain.method clip) has none: set self_train.teacher: offline."
        )
    if str((config.get("seeds") or {}).get("thr")) == "auto":
        problems.append(
            "seeds.thr: auto is not wired for the CLIP base's seeds yet (pretrain.method clip): "
            "set a number (CLIP-ES's VOC background score before CRF: 1.0; SMAF's: 0.2)."
        )
    if pretrain.get("init_checkpoint"):
        problems.append(
            "pretrain.init_checkpoint replaces EPS pretraining; pretrain.method clip trains "
            "nothing: remove init_checkpoint (the CLIP weights are pretrain.clip.weights)."
        )
    return problems


#: File suffix of this project's model files (any other init_checkpoint is a published one).
PROJECT_MODEL_SUFFIX = ".pt"


def checkpoint_problems(config: dict[str, Any]) -> list[str]:
    """``pretrain.init_checkpoint`` against ``model.head``, before any job runs.

    A published classifier (any file but a ``.pt`` of this project) is EPS's (``eps`` head, or
    ``cam`` for its baseline) or SMAF's; SMAF publishes no trained model, so the released
    preset's ``smaf`` head cannot start from one. The converter checks the actual head later.
    """
    checkpoint = (config.get("pretrain") or {}).get("init_checkpoint")
    head = (config.get("model") or {}).get("head")
    if checkpoint and head == "smaf" and Path(checkpoint).suffix != PROJECT_MODEL_SUFFIX:
        return [
            f"pretrain.init_checkpoint {checkpoint} is a published classifier: the EPS authors' "
            "model has the 'eps' head (1x1 conv -> C+1) but model.head is 'smaf' (the released "
            "SMAF head, whose EPS-trained model is not published). Set model.head: eps (a "
            "documented deviation from the released preset), or pretrain with model.head: smaf."
        ]
    return []


def check_config(config: dict[str, Any], schema: dict[str, Any], where: str = "config") -> None:
    """Raise one ConfigError listing every problem of ``config`` (schema, then combinations)."""
    problems = schema_problems(config, schema) or combination_problems(config)
    if problems:
        shown = problems[:8] + ([f"... and {len(problems) - 8} more"] if len(problems) > 8 else [])
        raise ConfigError(f"{where}: " + " ".join(shown))


#: ``seeds.thr`` / ``self_train.thr`` value that uses the held-out sweep's choice
#: (:func:`smaf.stages.thr_sweep.auto_thr`) instead of a number.
THR_AUTO = "auto"


def is_auto(thr: Any) -> bool:
    """Whether a ``thr`` setting asks for the held-out sweep's choice (``"auto"``)."""
    return isinstance(thr, str) and thr == THR_AUTO


def chosen_thr(thr: float | str, record: str | os.PathLike[str] | None) -> float:
    """The background score to use: ``thr`` itself, or for ``auto`` the choice that
    :func:`smaf.stages.thr_sweep.auto_thr` wrote into ``record``.

    Here, not beside ``auto_thr``, so that reading a number back (the evaluations, the
    summaries) does not import the networks that chose it.

    Raises:
        DataError: ``auto`` without a readable record.
    """
    if not is_auto(thr):
        return float(thr)
    try:
        return float(json.loads(Path(record).read_text())["thr"])
    except (TypeError, OSError, ValueError, KeyError):
        raise DataError(
            f"thr: auto needs the held-out sweep's choice, but {record} is missing or not a "
            "thr_auto record; rerun the thr_auto rule."
        ) from None

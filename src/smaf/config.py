"""Turning config sections (plain dicts from config.yaml) into the stages' dataclasses.

Kept free of torch so that light modules (the CRF workers) can use it without paying for the
torch import.
"""

from __future__ import annotations

import difflib
from dataclasses import fields
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


#: `train:` keys that say where, how fast and how verbosely a job runs, not what it computes.
#: The rules do not pass them as params (a change must not rerun training); scripts read them
#: here. ``channels_last`` and ``compile`` change speed only (float rounding aside).
RUNTIME_KEYS = ("device", "checkpoint_every", "log_every", "channels_last", "compile")
#: Defaults of the runtime keys a config may leave out (older configs).
RUNTIME_DEFAULTS = {"channels_last": False, "compile": False}


def runtime_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The :data:`RUNTIME_KEYS` of the workflow config's ``train:`` section."""
    train = {**RUNTIME_DEFAULTS, **(config.get("train") or {})}
    missing = [k for k in RUNTIME_KEYS if k not in train]
    if missing:
        raise ConfigError(f"config section 'train': missing key(s) {', '.join(missing)}.")
    return {k: train[k] for k in RUNTIME_KEYS}


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

"""Turning config sections (plain dicts from config.yaml) into the stages' dataclasses.

Kept free of torch so that light modules (the CRF workers) can use it without paying for the
torch import.
"""

from __future__ import annotations

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

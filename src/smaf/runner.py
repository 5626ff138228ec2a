"""How a workflow script runs one library function: logging to the rule's log, clean errors.

Library modules never import snakemake; the glue in ``workflow/scripts`` unpacks
``snakemake.*`` and hands the call to :func:`run_logged`, which

* sends ``logging`` output (and Python warnings) to the rule's log file and to stderr,
* turns a :class:`~smaf.errors.SmafError` into one clear line (no traceback) and exit code 1,
  so Snakemake reports the job as failed and deletes its declared outputs.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from smaf.errors import SmafError

T = TypeVar("T")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(log_path: str | Path | None, level: int = logging.INFO) -> None:
    """Log to ``log_path`` (appending; parents created) and to stderr, replacing old handlers."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="a"))
    formatter = logging.Formatter(LOG_FORMAT, datefmt="%H:%M:%S")
    for handler in handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)


def run_logged(
    log_path: str | Path | None, func: Callable[..., T], /, *args: Any, **kwargs: Any
) -> T:
    """Call ``func(*args, **kwargs)`` with logging set up; exit(1) with one line on SmafError."""
    configure_logging(log_path)
    log = logging.getLogger(getattr(func, "__module__", "smaf"))
    try:
        return func(*args, **kwargs)
    except SmafError as exc:
        log.error("%s", exc)
        raise SystemExit(1) from None
    except Exception:
        log.exception("unexpected error (a bug in SMAF, please report it with this log)")
        raise

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


def user_message(exc: BaseException) -> str:
    """The one-line message of a SmafError, also when a DataLoader worker raised it.

    torch re-raises a worker's exception with the worker's whole traceback as its message
    (``Caught DataError in DataLoader worker process 0. Original Traceback ...``); the
    person needs its last line, the original message, without the ``smaf.errors.X:`` prefix.
    """
    text = str(exc)
    if not text.startswith("Caught ") or "Original Traceback" not in text:
        return text
    last = text.rstrip().splitlines()[-1]
    prefix = f"{type(exc).__module__}.{type(exc).__qualname__}: "
    return last[len(prefix) :] if last.startswith(prefix) else last


def run_logged(
    log_path: str | Path | None, func: Callable[..., T], /, *args: Any, **kwargs: Any
) -> T:
    """Call ``func(*args, **kwargs)`` with logging set up; exit(1) with one line on SmafError."""
    configure_logging(log_path)
    log = logging.getLogger(getattr(func, "__module__", "smaf"))
    try:
        return func(*args, **kwargs)
    except SmafError as exc:
        log.error("%s", user_message(exc))
        raise SystemExit(1) from None
    except Exception:
        log.exception("unexpected error (a bug in SMAF, please report it with this log)")
        raise

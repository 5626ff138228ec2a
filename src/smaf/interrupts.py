"""Stopping a long loop cleanly on SIGTERM (SLURM preemption, ``scancel``) or SIGINT (Ctrl-C).

Inside ``with StopSignals() as stop:`` these signals only set ``stop.signum``; the loop checks
it at a safe point (a training step boundary), saves its state and calls
:func:`exit_on_signal`: one log line and the shell's exit status ``128 + signal`` (130 for
Ctrl-C, 143 for SIGTERM), no traceback. Under DDP the processes agree on the step
(:func:`smaf.distributed.max_over_ranks` of ``stop.signum`` at common check points).
"""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Callable
from types import FrameType
from typing import Any, NoReturn

log = logging.getLogger(__name__)

#: The signals that ask a loop to stop at its next safe point.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
    """Catch :data:`STOP_SIGNALS` while active; the previous handlers come back on exit.

    Repeated signals change nothing (a process may hear from several senders: SLURM signals
    every process of a job, torchrun passes its own on); Ctrl-\\ (SIGQUIT) or SIGKILL stop at
    once. ``on_signal(signum)`` is also called for each (e.g. to pass it to a child process).
    Outside the main thread (some test runners) signals cannot be handled: nothing changes.
    """

    def __init__(self, on_signal: Callable[[int], object] | None = None) -> None:
        self.signum = 0  # the first stop signal received (0: none)
        self._on_signal_hook = on_signal
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        with contextlib.suppress(ValueError):  # ValueError: not the main thread
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._on_signal)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            if handler is not None:  # None: a handler not installed from Python
                signal.signal(signum, handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signum = self.signum or signum
        if self._on_signal_hook is not None:
            self._on_signal_hook(signum)


def ignore_stop_signals() -> None:
    """In a helper process (DataLoader worker): leave stopping to the main process.

    Ctrl-C reaches the whole process group; a worker that died of it would turn the trainer's
    orderly stop into a "worker exited unexpectedly" traceback. Workers end with the trainer.
    """
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def exit_on_signal(signum: int, step: int, *, saved: bool, announce: bool = True) -> NoReturn:
    """Say whether a checkpoint was ``saved`` at ``step`` (if ``announce``: one process of a
    DDP run speaks), then exit with the shell's status ``128 + signum``."""
    name = signal.Signals(signum).name
    if announce and saved:
        log.warning("interrupted (%s): checkpoint written at step %d; rerun to resume", name, step)
    elif announce:
        log.warning("interrupted (%s) at step %d; no state folder, nothing saved", name, step)
    raise SystemExit(128 + signum)

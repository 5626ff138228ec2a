"""One progress reporter for every long loop: log lines that read well in a Snakemake log file.

Training steps, seeds, the teacher pass, the CRF pools, DeepLab inference and downloads all
report through :class:`Progress`, which writes one plain line per report (no carriage
returns, no bars: a rule's log is a file) to a logger::

    seeds: 40/240 images (38 computed), 8.71 images/s, 0:00:04 elapsed, ETA 0:00:23
    pretrain: 50/600 steps, 3.1 images/s, 0:02:09 elapsed, ETA 0:23:40, loss=0.4211 cls=0.3 lr=4.9e-02

A line is written every ``every`` items and/or at most every ``interval_s`` seconds, and once
at the end. The rate counts only the items done in this run (``update(counted=False)`` moves
the position without counting, e.g. for images an interrupted run already finished), so the
ETA of a resumed run is honest.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

__all__ = ["Progress", "format_duration"]


def format_duration(seconds: float) -> str:
    """``h:mm:ss`` (``?`` for an unknown / infinite duration)."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h:d}:{m:02d}:{s:02d}"


class Progress:
    """Progress lines for a loop over ``total`` items.

    Args:
        desc: what runs (``"seeds"``, ``"crf"``, ``"pretrain"``): the start of every line.
        total: number of items (None when unknown, e.g. a download without a length).
        unit: what the items are (``"images"``, ``"steps"``, ``"MB"``).
        every: write a line when the position is a multiple of ``every``.
        interval_s: write a line when ``interval_s`` seconds passed since the last one.
            With neither ``every`` nor ``interval_s``, only the final line is written.
        log: a logger (its ``info``) or any callable taking one line; default: this module's.
        start: the position at which this run starts (a resumed training's step).
        rate_unit / rate_scale: the rate is shown as ``rate_scale`` × counted items per second
            in ``rate_unit`` (training: ``"images"`` and the batch size); default ``unit`` and 1.
        fmt: how positions are written (``"{:.1f}"`` for megabytes).
    """

    def __init__(
        self,
        desc: str,
        total: int | float | None,
        *,
        unit: str = "images",
        every: int | None = None,
        interval_s: float | None = None,
        log: logging.Logger | Callable[[str], object] | None = None,
        start: int | float = 0,
        rate_unit: str | None = None,
        rate_scale: float = 1.0,
        fmt: str = "{}",
    ) -> None:
        if every is not None and every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.desc, self.total, self.unit = desc, total, unit
        self.every, self.interval_s = every, interval_s
        logger = log if log is not None else logging.getLogger(__name__)
        self._emit = logger.info if isinstance(logger, logging.Logger) else logger
        self.pos = start
        self.counted = 0
        self.skipped = 0
        self.rate_unit = rate_unit or unit
        self.rate_scale = rate_scale
        self.fmt = fmt
        self.t0 = self._last = time.perf_counter()
        self._logged_at: int | float | None = None

    def restart_clock(self) -> None:
        """Time from now (e.g. a download attempt that resumes after a failed one)."""
        self.t0 = self._last = time.perf_counter()
        self.counted = 0

    def update(self, n: int | float = 1, *, counted: bool = True, extra: str = "") -> bool:
        """Advance by ``n`` items; write a line when one is due. Returns whether it wrote one.

        ``counted=False``: the items were not processed here (skipped, resumed), so they do
        not enter the rate. ``extra`` is appended to the line (losses, learning rate).
        """
        before = self.pos
        self.pos += n
        if counted:
            self.counted += n
        else:
            self.skipped += n
        now = time.perf_counter()
        due = False
        if self.every is not None and int(self.pos // self.every) > int(before // self.every):
            due = True
        if self.interval_s is not None and now - self._last >= self.interval_s:
            due = True
        if self.total is not None and self.pos >= self.total:
            due = True
        if due:
            self.write(extra)
        return due

    def rate(self) -> float:
        """Counted items per second since the start (× ``rate_scale``)."""
        elapsed = time.perf_counter() - self.t0
        return self.counted * self.rate_scale / elapsed if elapsed > 0 else float("inf")

    def line(self, extra: str = "") -> str:
        """The current progress line."""
        elapsed = time.perf_counter() - self.t0
        pos = self.fmt.format(self.pos)
        head = f"{self.desc}: {pos}"
        if self.total is not None:
            head += f"/{self.fmt.format(self.total)}"
        head += f" {self.unit}"
        if self.skipped:
            head += f" ({self.fmt.format(self.counted)} computed)"
        parts = [
            head,
            f"{self.rate():.2f} {self.rate_unit}/s",
            f"{format_duration(elapsed)} elapsed",
        ]
        if self.total is not None:
            per_item = elapsed / self.counted if self.counted else float("nan")
            parts.append(f"ETA {format_duration((self.total - self.pos) * per_item)}")
        if extra:
            parts.append(extra)
        return ", ".join(parts)

    def write(self, extra: str = "") -> None:
        """Write the current line now."""
        self._last = time.perf_counter()
        self._logged_at = self.pos
        self._emit(self.line(extra))

    def close(self, extra: str = "") -> None:
        """Write the final line unless the last one already showed this position."""
        if self._logged_at != self.pos:
            self.write(extra)

"""Timing, FLOP and memory helpers shared by bench/gpu.py and bench/gpu_bases.py.

Every function here works on the CPU too (``--smoke``): synchronisation and peak memory are
CUDA-only and do nothing (or return ``None``) elsewhere.
"""

from __future__ import annotations

import csv
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

Row = tuple[str, str, float, str]  # benchmark, metric, value, unit


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_time(fn: Callable[[], Any], warmup: int, steps: int, device: torch.device) -> float:
    """Median wall time (s) of ``steps`` calls of ``fn`` after ``warmup`` calls, each synced."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def count_flops(fn: Callable[[], Any]) -> float:
    """TFLOP of the matmuls / convolutions (forward and backward) that ``fn`` runs."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / 1e12


def reset_peak(device: torch.device) -> None:
    """Start a new peak-memory window (CUDA only)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_mb(device: torch.device) -> float | None:
    """Peak allocated device memory (MB) since :func:`reset_peak`; ``None`` off CUDA."""
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20


def matmul_peak(device: torch.device, n: int, reps: int = 10, repeats: int = 5) -> float:
    """Measured bf16 matmul rate (TFLOP/s): median of ``repeats`` runs of ``reps`` n³ matmuls."""
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16, generator=gen)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16, generator=gen)

    def run() -> None:
        for _ in range(reps):
            torch.mm(a, b)

    return 2 * n**3 * reps / median_time(run, 1, repeats, device) / 1e12


def fmt(value: float | None, digits: int = 3) -> str:
    """A table cell: ``—`` for missing values, else ``digits`` significant digits."""
    import math

    return "—" if value is None or math.isnan(value) else f"{value:.{digits}g}"


def write_csv(path: Path, rows: Sequence[Row]) -> None:
    """``benchmark,metric,value,unit`` rows, values to 6 significant digits."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["benchmark", "metric", "value", "unit"])
        writer.writerows((b, m, f"{v:.6g}", u) for b, m, v, u in rows)


def device_name(device: torch.device) -> str:
    """The accelerator's name, or the CPU's."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()})"

"""The training loop shared by every training stage (EPS pretraining, SMAF self-training, DeepLab).

:func:`fit` reads top to bottom: lock and resume the state folder, build the loader, then
per step set the lr, train, and at check points read the losses, log, checkpoint or stop.
What it guarantees:

* **Resumable and deterministic.** Samples come from the endless stream of
  :class:`~smaf.sampling.SampleStream` (image and augmentation seed fixed by the stream
  position), so a run resumed at step ``s`` sees exactly the batches an uninterrupted run
  would, and the checkpoint restores model, optimizer and every RNG state (dropout), so the
  next loss is the same.
* **Checkpoints outside the rule's outputs** (:mod:`smaf.checkpointing`). Every
  ``checkpoint_every`` steps, and on SIGTERM (SLURM preemption) or SIGINT (Ctrl-C), a
  self-describing checkpoint is written atomically to a state folder Snakemake does not own,
  so a failed or killed job's rerun picks it up; a signal then ends the job with one line
  and status 128 + signal (:mod:`smaf.interrupts`). A checkpoint made with a different
  configuration is ignored (and said so in the log). One trainer per state folder: it is
  locked for the run.
* **PolyOptimizer semantics** of PSA/EPS/SMAF (:mod:`smaf.optim`).
* bf16 autocast on CUDA, progress lines (:class:`~smaf.progress.Progress`: steps, images/s,
  ETA, losses, lr), a clear error on a NaN/inf loss naming the step and the last good
  checkpoint. Losses are read from the device (a GPU synchronisation) every ``log_every`` /
  ``checkpoint_every`` steps, not every step, and always before a checkpoint is written.
* **Data parallel** under torchrun (:mod:`smaf.distributed`): each process trains on its
  slice of every global batch, DDP averages the gradients, so the loss trajectory follows the
  one-process run with the same ``batch_size`` (exactly with frozen BN and no dropout;
  otherwise BN statistics and dropout masks are per process).
* Optional ``channels_last`` memory format and ``torch.compile`` (speed only).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from smaf import distributed
from smaf.checkpointing import (
    CHECKPOINT_NAME,
    HISTORY_NAME,
    StateLock,
    append_history,
    config_fingerprint,
    load_checkpoint,
    read_history,
    release_in_child,
    restore_rng,
    save_checkpoint,
)
from smaf.config import RuntimeConfig
from smaf.errors import ConfigError, SmafError
from smaf.interrupts import StopSignals, exit_on_signal, ignore_stop_signals
from smaf.optim import OptimConfig, build_optimizer, poly_lr, set_lr
from smaf.progress import Progress
from smaf.sampling import SampleStream
from smaf.settings import LoopConfig

# Re-exported: the stages, tests and benchmarks import the loop's parts from here.
__all__ = [
    "LoopConfig",
    "OptimConfig",
    "SampleStream",
    "StepFn",
    "build_optimizer",
    "fit",
    "load_checkpoint",
    "loop_identity",
    "poly_lr",
    "resolve_device",
    "save_checkpoint",
    "seed_everything",
    "set_lr",
    "use_threads",
]

log = logging.getLogger(__name__)


def loop_identity(loop: LoopConfig) -> dict[str, Any]:
    """The loop settings that define *what* is trained (for checkpoint fingerprints).

    Everything but the :class:`~smaf.config.RuntimeConfig` fields, which may change between a
    run and its resume (e.g. resumed on another node) without changing the result.
    """
    runtime = {f.name for f in fields(RuntimeConfig)}
    return {k: v for k, v in asdict(loop).items() if k not in runtime}


def resolve_device(name: str) -> torch.device:
    """``'auto'`` → CUDA when available, else CPU; anything else as given (checked).

    Under DDP with GPUs every process takes the GPU of its local rank.
    """
    if name == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device {name!r} requested but CUDA is not available; use 'auto' or 'cpu'."
        )
    ctx = distributed.context()
    if device.type == "cuda" and ctx.enabled:
        device = torch.device("cuda", ctx.local_rank)
    return device


def use_threads(threads: int | None) -> int:
    """Use ``threads`` CPU threads for torch ops; return the DataLoader workers to start.

    Snakemake gives a job ``threads`` cores; torch would otherwise start one thread per core of
    the machine, and oversubscribed OpenMP threads spin and slow everything down. ``None``
    leaves torch as it is and loads data in the main process.
    """
    if threads is None:
        return 0
    threads = max(1, int(threads))
    torch.set_num_threads(threads)
    return threads - 1


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - for third-party code using the global RNG
    torch.manual_seed(seed)


def _process_seed(seed: int, rank: int) -> int:
    """Torch seed of DDP process ``rank``: rank 0 keeps ``seed``, others get their own stream."""
    if rank == 0:
        return seed
    return int(np.random.SeedSequence([seed, rank]).generate_state(1, np.uint32)[0])


StepFn = Callable[[nn.Module, dict[str, Any], torch.device], dict[str, torch.Tensor]]


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    dataset: torch.utils.data.Dataset,
    step_fn: StepFn,
    loop: LoopConfig,
    optim: OptimConfig,
    state_dir: str | Path | None,
    config: dict[str, Any],
    *,
    collate_fn: Callable | None = None,
    stop_after: int | None = None,
    desc: str = "train",
) -> list[dict[str, float]]:
    """Train ``model`` for ``loop.iterations`` steps; return the per-step loss history.

    Args:
        dataset: indexed by ``(index, aug_seed)`` tuples (see :class:`SampleStream`).
        step_fn: ``(model, batch, device) -> {'loss': scalar, other named scalars}``; called
            once per micro-batch under autocast; the loop does backward/step.
        state_dir: where checkpoints live (``None``: no checkpoints, e.g. in tests). Locked
            for the whole run: a second trainer on it stops with a SmafError naming the first.
        config: the stage's full configuration; stored in checkpoints, which are only resumed
            when it is identical.
        stop_after: stop (without the final step count) after this step, as if killed.
            Used by the resume tests.
        desc: the start of the progress lines (the stage's name).

    Returns:
        One dict per step (``step``, ``lr``, each loss), including steps before a resume when
        they were recorded in the state folder.

    SIGTERM or SIGINT: checkpoint at the next step boundary, one line, exit ``128 + signal``.
    """
    ctx = distributed.context()
    if loop.batch_size % (loop.grad_accum * ctx.world_size):
        raise ConfigError(
            f"training: batch_size {loop.batch_size} is not divisible by grad_accum "
            f"{loop.grad_accum} × {ctx.world_size} processes"
        )
    device = resolve_device(loop.device)
    model.to(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed crop sizes: pick the fastest conv kernels
    seed_everything(_process_seed(loop.seed, ctx.rank))
    state = Path(state_dir) if state_dir is not None else None

    with _locked(state, ctx) as lock, StopSignals() as stop:
        start, history = _resume(model, optimizer, state, config, ctx, loop.iterations)
        loader = _make_loader(dataset, loop, start, device, ctx, collate_fn, lock)
        train_model = _wrap(model, device, loop, ctx)
        amp = loop.amp and device.type == "cuda"
        losses = _LossLog(history, state, ctx.is_main, start)
        progress = Progress(
            desc,
            loop.iterations,
            unit="steps",
            every=loop.log_every,
            start=start,
            rate_unit="images",
            rate_scale=loop.batch_size,
            log=log,
        )
        model.train()
        batches = iter(loader)
        try:
            for step in range(start, loop.iterations):
                lr = set_lr(optimizer, optim, step, loop.iterations)
                totals = _train_step(train_model, optimizer, step_fn, batches, device, loop, amp)
                done = step + 1
                losses.add(done, lr, totals)

                # Losses are read (a GPU sync) and NaN-checked at log lines, checkpoints, the
                # last step and a signal only; a checkpoint is only written after that check.
                log_now = done % loop.log_every == 0 or done == loop.iterations or done == start + 1
                ckpt_now = state is not None and done % loop.checkpoint_every == 0
                last = done == loop.iterations or (stop_after is not None and done >= stop_after)
                # Without DDP a signal is acted on at once; DDP processes agree at check points.
                check_now = log_now or ckpt_now or last or (bool(stop.signum) and not ctx.enabled)
                extra = _progress_extra(losses.flush(), lr) if check_now else ""
                # Progress writes every log_every steps and at the end; this run's first step
                # is written too, so the log shows at once that training (re)started.
                if not progress.update(extra=extra) and log_now:
                    progress.write(extra)
                if not check_now:
                    continue

                signum = int(distributed.max_over_ranks(stop.signum))  # DDP: a collective
                if state is not None and ((ckpt_now and done < loop.iterations) or signum):
                    save_checkpoint(state / CHECKPOINT_NAME, model, optimizer, done, config)
                    losses.last_checkpoint = f"{state / CHECKPOINT_NAME} (step {done})"
                if signum:
                    exit_on_signal(signum, done, saved=state is not None, announce=ctx.is_main)
                if last:
                    break
        finally:
            _stop_workers(batches)
        finished = bool(history) and history[-1]["step"] >= loop.iterations
        if state is not None and ctx.is_main and finished:
            # Finished: its state must never seed another run (other data, other settings).
            (state / CHECKPOINT_NAME).unlink(missing_ok=True)
    return history


def _stop_workers(batches: Iterator[dict[str, Any]]) -> None:
    """Stop a DataLoader iterator's worker processes now.

    Dropping the iterator is not enough while an exception propagates: its traceback holds
    frames that reference it, the workers ignore SIGTERM (:func:`_init_worker`), and
    multiprocessing joins them when the process exits, so a failed job would hang instead of
    ending. ``_shutdown_workers`` is the iterator's own clean-up (what its ``__del__`` calls).
    """
    shutdown = getattr(batches, "_shutdown_workers", None)  # absent with num_workers 0
    if shutdown is not None:
        shutdown()


def _train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    step_fn: StepFn,
    batches: Iterator[dict[str, Any]],
    device: torch.device,
    loop: LoopConfig,
    amp: bool,
) -> dict[str, torch.Tensor]:
    """One optimizer step over ``grad_accum`` micro-batches; the step's losses (on device)."""
    ddp = distributed.context().enabled
    optimizer.zero_grad(set_to_none=True)
    totals: dict[str, torch.Tensor] = {}
    for micro in range(loop.grad_accum):
        batch = next(batches)
        # DDP all-reduces gradients on the last micro-batch's backward only.
        sync = micro == loop.grad_accum - 1 or not ddp
        with distributed.no_sync(model, sync):
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
                losses = step_fn(model, batch, device)
            (losses["loss"] / loop.grad_accum).backward()
        for k, v in losses.items():
            part = v.detach().float() / loop.grad_accum
            totals[k] = totals[k] + part if k in totals else part
    optimizer.step()
    return totals


def _progress_extra(losses: dict[str, float], lr: float) -> str:
    """``loss=0.4211 cls=0.3000 lr=4.90e-02``: the end of a progress line."""
    return " ".join([*(f"{k}={v:.4f}" for k, v in losses.items()), f"lr={lr:.2e}"])


@contextlib.contextmanager
def _locked(state: Path | None, ctx: distributed.DistContext) -> Iterator[StateLock | None]:
    """Rank 0 creates the state folder and holds its lock for the run; all ranks stop if taken."""
    if state is None:
        yield None
        return
    lock, error = None, None
    if ctx.is_main:
        state.mkdir(parents=True, exist_ok=True)
        lock = StateLock(state)
        try:
            lock.acquire()
        except SmafError as exc:
            lock, error = None, exc
    if distributed.any_rank(error is not None):
        raise error or SmafError(f"rank 0 could not lock the state folder {state} (see its line)")
    try:
        yield lock
    finally:
        if lock is not None:
            lock.release()


def _resume(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: Path | None,
    config: dict[str, Any],
    ctx: distributed.DistContext,
    iterations: int,
) -> tuple[int, list[dict[str, float]]]:
    """Load the state folder's checkpoint if it was made with ``config``: (start step, history).

    Starting from step 0, rank 0 removes a stale history file.
    """
    if state is None:
        distributed.barrier()
        return 0, []
    ckpt_path, history_path = state / CHECKPOINT_NAME, state / HISTORY_NAME
    start, history = 0, []
    if ckpt_path.is_file():
        ckpt = load_checkpoint(ckpt_path)
        if ckpt.get("config") != config_fingerprint(config):
            log.warning("ignoring %s: it was made with a different configuration", ckpt_path)
        else:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            if not restore_rng(ckpt, ctx):
                log.info("checkpoint from another process count: dropout RNG streams restart")
            start = int(ckpt["step"])
            history = read_history(history_path, start, write=ctx.is_main)
            log.info("resuming from %s at step %d of %d", ckpt_path, start, iterations)
    if start == 0 and ctx.is_main and history_path.exists():
        history_path.unlink()
    distributed.barrier()  # nobody reads the state folder while rank 0 tidies it
    return start, history


def _make_loader(
    dataset: torch.utils.data.Dataset,
    loop: LoopConfig,
    start: int,
    device: torch.device,
    ctx: distributed.DistContext,
    collate_fn: Callable | None,
    lock: StateLock | None,
) -> torch.utils.data.DataLoader:
    """This process's micro-batches of the sample stream from step ``start`` on."""
    chunk = loop.batch_size // loop.grad_accum  # images of one micro-batch, all processes
    sampler = SampleStream(
        len(dataset),
        loop.seed,
        start * loop.batch_size,
        rank=ctx.rank,
        world=ctx.world_size,
        chunk=chunk,
    )
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=chunk // ctx.world_size,
        sampler=sampler,
        num_workers=loop.num_workers,
        collate_fn=collate_fn,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
        # Its own generator, so creating the iterator does not consume the global torch RNG.
        generator=torch.Generator().manual_seed(loop.seed),
        worker_init_fn=functools.partial(
            _init_worker, lock.fileno() if lock else None, lock.identity() if lock else None
        ),
    )


def _init_worker(lock_fd: int | None, lock_id: tuple[int, int] | None, worker_id: int) -> None:
    """A DataLoader worker leaves SIGINT/SIGTERM to the trainer and drops its share of the lock."""
    ignore_stop_signals()
    release_in_child(lock_fd, lock_id)


class _LossLog:
    """Per-step losses, kept on the device until :meth:`flush` reads and checks them."""

    def __init__(self, history: list[dict[str, float]], state: Path | None, main: bool, start: int):
        self.history = history  # fit's return value, extended in place
        self.path = state / HISTORY_NAME if state is not None and main else None
        self.pending: list[tuple[int, float, dict[str, torch.Tensor]]] = []
        self.last_checkpoint = "none" if start == 0 else f"{state / CHECKPOINT_NAME} (step {start})"

    def add(self, step: int, lr: float, losses: dict[str, torch.Tensor]) -> None:
        self.pending.append((step, lr, losses))

    def flush(self) -> dict[str, float]:
        """Read the pending steps (averaged over DDP ranks), check, record; the last's losses."""
        keys = [(n, k) for n, (_, _, losses) in enumerate(self.pending) for k in losses]
        local = torch.stack([self.pending[n][2][k] for n, k in keys]).double().cpu().tolist()
        values = distributed.mean_over_ranks(
            {f"{n}/{k}": v for (n, k), v in zip(keys, local, strict=True)}
        )
        records = []
        for n, (step, lr, losses) in enumerate(self.pending):
            record = {"step": step, "lr": lr, **{k: values[f"{n}/{k}"] for k in losses}}
            if not math.isfinite(record["loss"]):
                raise SmafError(
                    f"the loss became {record['loss']} at step {step}; last good checkpoint: "
                    f"{self.last_checkpoint}. Lower the learning rate or check the inputs, then "
                    "rerun (it resumes from that checkpoint)."
                )
            records.append(record)
        self.pending.clear()
        self.history.extend(records)
        if self.path is not None:
            append_history(self.path, records)
        return {k: v for k, v in records[-1].items() if k not in ("step", "lr")}


def _wrap(
    model: nn.Module, device: torch.device, loop: LoopConfig, ctx: distributed.DistContext
) -> nn.Module:
    """The module the steps call: channels_last / DDP / torch.compile as configured.

    ``model`` itself (whose state dict the checkpoints hold) is changed in place only by
    channels_last and the SyncBatchNorm conversion, neither of which renames its parameters.
    """
    if loop.channels_last:
        model.to(memory_format=torch.channels_last)
    wrapped = distributed.wrap_model(model, device) if ctx.enabled else model
    if loop.compile:
        wrapped = torch.compile(wrapped)
    return wrapped

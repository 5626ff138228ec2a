"""The training loop shared by every training stage (EPS pretraining, SMAF self-training, DeepLab).

What it guarantees:

* **Resumable and deterministic.** Samples come from an endless stream: position ``p`` of the
  stream is image ``perm_e[p mod N]`` of epoch ``e = p // N`` (``perm_e`` seeded by
  ``(seed, e)``), augmented with a generator seeded by ``(seed, p)``. A run resumed at step
  ``s`` therefore sees exactly the batches an uninterrupted run would, and the checkpoint
  restores model, optimizer and every RNG state (dropout), so the next loss is the same.
* **Checkpoints outside the rule's outputs.** Every ``checkpoint_every`` steps (and on
  SIGTERM, e.g. SLURM preemption) a self-describing checkpoint is written atomically to a
  state folder Snakemake does not own, so a failed or killed job's rerun picks it up. A
  checkpoint made with a different configuration is ignored (and said so in the log).
* **PolyOptimizer semantics** of PSA/EPS/SMAF: SGD whose group ``i`` has
  ``lr = base_lr · lr_mult_i · (1 − step/iterations)^power`` and
  ``weight_decay = wd · weight_decay_mult_i``; ``momentum`` is a config key because the
  released code's effective momentum is 5e-4.
* bf16 autocast on CUDA, progress lines (step, losses, lr, images/s, ETA), a clear error on
  a NaN/inf loss naming the step and the last good checkpoint. Losses are read from the device
  (a GPU synchronisation) every ``log_every`` / ``checkpoint_every`` steps, not every step,
  and always before a checkpoint is written.
* **Data parallel** under torchrun (:mod:`smaf.distributed`): each process trains on its
  slice of every global batch, DDP averages the gradients, so the loss trajectory follows the
  one-process run with the same ``batch_size`` (exactly with frozen BN and no dropout;
  otherwise BN statistics and dropout masks are per process).
* Optional ``channels_last`` memory format and ``torch.compile`` (speed only).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from smaf import distributed
from smaf.config import RuntimeConfig
from smaf.errors import ConfigError, SmafError
from smaf.io import atomic_write

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"


@dataclass
class OptimConfig:
    """SGD with poly learning-rate decay (PSA/EPS/SMAF's PolyOptimizer)."""

    lr: float = 0.01  # base learning rate (group multipliers ×1/×2/×10/×20 on top)
    weight_decay: float = 5e-4  # applied to groups with weight_decay_mult 1
    momentum: float = 0.9  # the released EPS/SMAF code effectively uses 5e-4 (a quirk)
    poly_power: float = 0.9  # lr · (1 − step/iterations)^poly_power, updated every step

    def __post_init__(self) -> None:
        if not self.lr > 0 or self.weight_decay < 0 or not 0 <= self.momentum < 1:
            raise ConfigError(
                f"optimizer: need lr > 0, weight_decay >= 0, 0 <= momentum < 1; got {asdict(self)}"
            )


@dataclass
class LoopConfig(RuntimeConfig):
    """How long and how to train (shared keys of every training stage).

    The fields inherited from :class:`~smaf.config.RuntimeConfig` (device, cadences, speed
    options, gpus, num_workers) say how the loop runs; the ones below what it computes.
    """

    iterations: int = 20000  # optimizer steps
    batch_size: int = 8  # images per optimizer step (split over grad_accum micro-batches)
    grad_accum: int = 1  # micro-batches per step (DeepLab: batch 10 as 5 × 2)
    seed: int = 0  # seeds torch / numpy / python and the sample stream
    amp: bool = True  # bf16 autocast on CUDA (ignored on CPU)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.iterations < 1 or self.batch_size < 1 or self.grad_accum < 1:
            raise ConfigError("training: iterations, batch_size and grad_accum must be >= 1")
        if self.batch_size % self.grad_accum:
            raise ConfigError(
                f"training: batch_size {self.batch_size} is not divisible by grad_accum {self.grad_accum}"
            )


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


def build_optimizer(param_groups: Sequence[dict[str, Any]], cfg: OptimConfig) -> torch.optim.SGD:
    """SGD over groups carrying ``lr_mult`` / ``weight_decay_mult`` (empty groups dropped)."""
    groups = []
    for g in param_groups:
        if not g["params"]:
            continue
        groups.append(
            {
                "params": list(g["params"]),
                "lr": cfg.lr * g.get("lr_mult", 1.0),
                "weight_decay": cfg.weight_decay * g.get("weight_decay_mult", 1.0),
                "lr_mult": g.get("lr_mult", 1.0),
                "name": g.get("name", ""),
            }
        )
    if not groups:
        raise SmafError("the model has no trainable parameters (everything is frozen).")
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def poly_lr(base_lr: float, step: int, iterations: int, power: float) -> float:
    """``base_lr · (1 − step/iterations)^power`` (step counted from 0)."""
    return base_lr * (1.0 - step / iterations) ** power


def set_lr(optimizer: torch.optim.Optimizer, cfg: OptimConfig, step: int, iterations: int) -> float:
    """Apply the poly schedule to every group; return the base lr of this step."""
    lr = poly_lr(cfg.lr, step, iterations, cfg.poly_power)
    for g in optimizer.param_groups:
        g["lr"] = lr * g["lr_mult"]
    return lr


class SampleStream(torch.utils.data.Sampler):
    """Endless stream of ``(dataset index, augmentation seed)`` from stream position ``start``.

    Position ``p``: epoch ``p // n``, index ``perm(seed, epoch)[p % n]``, seed ``(seed, p)``
    folded to 63 bits. Stateless, so resuming only needs the position.

    Data parallel: the stream is cut into global micro-batches of ``chunk`` positions (from
    ``start``, a multiple of ``chunk``); process ``rank`` of ``world`` yields the ``rank``-th
    ``chunk // world`` positions of each, so the processes together see the one-process stream.
    """

    def __init__(
        self, n: int, seed: int, start: int = 0, *, rank: int = 0, world: int = 1, chunk: int = 1
    ) -> None:
        if n < 1:
            raise SmafError("the training split is empty.")
        if world < 1 or not 0 <= rank < world or chunk % world:
            raise ValueError(f"bad shard: rank {rank} of {world}, chunk {chunk}")
        self.n, self.seed, self.start = n, seed, start
        self.rank, self.world, self.chunk = rank, world, chunk

    def _mine(self, p: int) -> bool:
        local = self.chunk // self.world
        return ((p - self.start) % self.chunk) // local == self.rank

    def __iter__(self) -> Iterator[tuple[int, int]]:
        p = self.start
        epoch, perm = -1, None
        while True:
            if self.world > 1 and not self._mine(p):
                p += 1
                continue
            if p // self.n != epoch:
                epoch = p // self.n
                perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
            aug_seed = int(
                np.random.SeedSequence([self.seed, p]).generate_state(2, np.uint64)[0] >> 1
            )
            yield int(perm[p % self.n]), aug_seed
            p += 1


def _rng_state() -> dict[str, Any]:
    # Only torch's generators carry state between steps (dropout): augmentation draws from
    # per-sample generators seeded by the stream position, never from global numpy/python RNGs.
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _process_seed(seed: int, rank: int) -> int:
    """Torch seed of DDP process ``rank``: rank 0 keeps ``seed``, others get their own stream."""
    if rank == 0:
        return seed
    return int(np.random.SeedSequence([seed, rank]).generate_state(1, np.uint32)[0])


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def config_fingerprint(config: dict[str, Any]) -> str:
    """Canonical JSON of a config, stored in checkpoints to refuse resuming a different run."""
    return json.dumps(config, sort_keys=True, default=str)


def save_checkpoint(
    path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer, step: int, config: dict
) -> None:
    """Write a self-describing checkpoint atomically (loadable with ``weights_only=True``).

    Under DDP every process must call it (their RNG states are gathered); rank 0 writes.
    """
    rng = distributed.gather(_rng_state())
    if not distributed.is_main():
        return
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "step": step,
        "rng": rng[0],
        "config": config_fingerprint(config),
        "torch_version": str(torch.__version__),
    }
    if len(rng) > 1:
        state["rng_ranks"] = rng
    with atomic_write(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True`` (no arbitrary pickles); clear error if bad."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise SmafError(
            f"cannot read checkpoint {path} ({type(exc).__name__}: {exc}). It is corrupt or not a "
            "SMAF checkpoint (only tensors and plain values are accepted); delete it to start over."
        ) from None


class _Preempted(Exception):
    pass


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
) -> list[dict[str, float]]:
    """Train ``model`` for ``loop.iterations`` steps; return the per-step loss history.

    Args:
        dataset: indexed by ``(index, aug_seed)`` tuples (see :class:`SampleStream`).
        step_fn: ``(model, batch, device) -> {'loss': scalar, other named scalars}``; called
            once per micro-batch under autocast; the loop does backward/step.
        state_dir: where checkpoints live (``None``: no checkpoints, e.g. in tests).
        config: the stage's full configuration; stored in checkpoints, which are only resumed
            when it is identical.
        stop_after: stop (without the final step count) after this step, as if killed.
            Used by the resume tests.

    Returns:
        One dict per step (``step``, ``lr``, each loss), including steps before a resume when
        they were recorded in the state folder.
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
    main = ctx.is_main
    if state_dir is not None and main:
        Path(state_dir).mkdir(parents=True, exist_ok=True)
    ckpt_path = Path(state_dir) / CHECKPOINT_NAME if state_dir is not None else None
    history_path = Path(state_dir) / "history.jsonl" if state_dir is not None else None
    start, history = 0, []
    if ckpt_path is not None and ckpt_path.is_file():
        ckpt = load_checkpoint(ckpt_path)
        if ckpt.get("config") != config_fingerprint(config):
            log.warning("ignoring %s: it was made with a different configuration", ckpt_path)
        else:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            _resume_rng(ckpt, ctx)
            start = int(ckpt["step"])
            history = _read_history(history_path, start, write=main)
            log.info("resuming from %s at step %d of %d", ckpt_path, start, loop.iterations)
    if start == 0 and main and history_path is not None and history_path.exists():
        history_path.unlink()
    distributed.barrier()  # nobody reads the state folder while rank 0 tidies it

    chunk = loop.batch_size // loop.grad_accum  # images of one micro-batch, all processes
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=chunk // ctx.world_size,
        sampler=SampleStream(
            len(dataset),
            loop.seed,
            start * loop.batch_size,
            rank=ctx.rank,
            world=ctx.world_size,
            chunk=chunk,
        ),
        num_workers=loop.num_workers,
        collate_fn=collate_fn,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
        # Its own generator, so creating the iterator does not consume the global torch RNG.
        generator=torch.Generator().manual_seed(loop.seed),
    )
    train_model = _wrap(model, device, loop, ctx)
    amp = loop.amp and device.type == "cuda"
    stop = {"flag": False}
    previous_handler = signal.getsignal(signal.SIGTERM)

    def _on_sigterm(signum, frame):  # SLURM preemption / scancel: checkpoint, then exit
        stop["flag"] = True

    try:
        signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread (e.g. some test runners): no preemption handling
        previous_handler = None
    last_ckpt = "none" if start == 0 else f"{ckpt_path} (step {start})"

    model.train()
    batches = iter(loader)
    t0, images_done = time.perf_counter(), 0
    # Losses stay on the device between flushes: reading them (and checking them for NaN)
    # waits for the GPU, so that happens every log_every / checkpoint_every steps, not every
    # step. A checkpoint is only written after its steps were checked.
    pending: list[tuple[int, float, dict[str, torch.Tensor]]] = []

    def flush() -> dict[str, float]:
        """Check and record the pending steps; return the last one's losses."""
        keys = [(n, k) for n, (_, _, losses) in enumerate(pending) for k in losses]
        local = torch.stack([pending[n][2][k] for n, k in keys]).double().cpu().tolist()
        values = distributed.mean_over_ranks(
            {f"{n}/{k}": v for (n, k), v in zip(keys, local, strict=True)}
        )
        records = []
        for n, (step_no, lr, losses) in enumerate(pending):
            record = {"step": step_no, "lr": lr, **{k: values[f"{n}/{k}"] for k in losses}}
            if not math.isfinite(record["loss"]):
                raise SmafError(
                    f"the loss became {record['loss']} at step {step_no}; last good checkpoint: "
                    f"{last_ckpt}. Lower the learning rate or check the inputs, then rerun (it "
                    "resumes from that checkpoint)."
                )
            records.append(record)
        pending.clear()
        history.extend(records)
        if history_path is not None and main:
            with open(history_path, "a") as f:
                f.writelines(json.dumps(r) + "\n" for r in records)
        return {k: v for k, v in records[-1].items() if k not in ("step", "lr")}

    try:
        for step in range(start, loop.iterations):
            lr = set_lr(optimizer, optim, step, loop.iterations)
            optimizer.zero_grad(set_to_none=True)
            totals: dict[str, torch.Tensor] = {}
            for micro in range(loop.grad_accum):
                batch = next(batches)
                # DDP all-reduces gradients on the last micro-batch's backward only.
                sync = micro == loop.grad_accum - 1 or not ctx.enabled
                with _maybe_no_sync(train_model, sync):
                    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
                        losses = step_fn(train_model, batch, device)
                    (losses["loss"] / loop.grad_accum).backward()
                for k, v in losses.items():
                    part = v.detach().float() / loop.grad_accum
                    totals[k] = totals[k] + part if k in totals else part
            optimizer.step()
            images_done += loop.batch_size
            done = step + 1
            pending.append((done, lr, totals))
            log_now = done % loop.log_every == 0 or done == loop.iterations or done == start + 1
            ckpt_now = ckpt_path is not None and done % loop.checkpoint_every == 0
            last_step = done == loop.iterations or (stop_after is not None and done >= stop_after)
            # The stop flag is agreed on by all processes at flush points only (a collective);
            # one process reads its own flag at every step.
            preempted = stop["flag"] and not ctx.enabled
            if not (log_now or ckpt_now or last_step or preempted):
                continue
            latest = flush()
            if log_now:
                elapsed = time.perf_counter() - t0
                rate = images_done / max(elapsed, 1e-9)
                eta = (loop.iterations - done) * loop.batch_size / max(rate, 1e-9)
                parts = " ".join(f"{k}={v:.4f}" for k, v in latest.items())
                log.info(
                    "step %d/%d %s lr=%.2e %.1f img/s ETA %s",
                    done,
                    loop.iterations,
                    parts,
                    lr,
                    rate,
                    _fmt_time(eta),
                )
            stopping = distributed.any_rank(stop["flag"])  # every process stops at one step
            if ckpt_path is not None and (ckpt_now or stopping) and done < loop.iterations:
                save_checkpoint(ckpt_path, model, optimizer, done, config)
                last_ckpt = f"{ckpt_path} (step {done})"
            if stopping:
                log.warning("SIGTERM received: checkpoint written at step %d; exiting", done)
                raise _Preempted
            if last_step:
                break
    except _Preempted:
        raise SystemExit(143) from None
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)
        del batches
    return history


class _DDP(nn.parallel.DistributedDataParallel):
    """DDP that also answers the wrapped model's attributes (``has_background``, ``scales``)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.module, name)


def _trains_batchnorm(model: nn.Module) -> bool:
    return any(
        isinstance(m, nn.modules.batchnorm._BatchNorm)
        and any(p.requires_grad for p in m.parameters(recurse=False))
        for m in model.modules()
    )


def _wrap(
    model: nn.Module, device: torch.device, loop: LoopConfig, ctx: distributed.DistContext
) -> nn.Module:
    """The module the steps call: channels_last / DDP / torch.compile as configured.

    ``model`` itself (whose state dict the checkpoints hold) is changed in place only by
    channels_last and the SyncBatchNorm conversion, neither of which renames its parameters.
    """
    if loop.channels_last:
        model.to(memory_format=torch.channels_last)
    wrapped: nn.Module = model
    if ctx.enabled:
        if _trains_batchnorm(model):
            if device.type == "cuda":
                nn.SyncBatchNorm.convert_sync_batchnorm(model)
                log.info("DDP: BatchNorm layers synchronised across %d GPUs", ctx.world_size)
            else:
                log.warning(
                    "DDP on CPU: BatchNorm statistics are per process (SyncBatchNorm needs GPUs)"
                )
        wrapped = _DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
        log.info("DDP: rank %d of %d on %s", ctx.rank, ctx.world_size, device)
    if loop.compile:
        wrapped = torch.compile(wrapped)
    return wrapped


def _maybe_no_sync(model: nn.Module, sync: bool):
    """``model.no_sync()`` for a DDP micro-batch that must not all-reduce yet."""
    if sync:
        return contextlib.nullcontext()
    inner = getattr(model, "_orig_mod", model)  # a compiled DDP module
    return inner.no_sync()


def _resume_rng(ckpt: dict[str, Any], ctx: distributed.DistContext) -> None:
    """Restore this process's RNG state (each DDP rank its own when the world size matches)."""
    ranks = ckpt.get("rng_ranks")
    if ctx.enabled:
        if ranks is not None and len(ranks) == ctx.world_size:
            _set_rng_state(ranks[ctx.rank])
        else:  # another process count: same batches, new dropout streams
            log.info("checkpoint from another process count: dropout RNG streams restart")
        return
    _set_rng_state(ckpt["rng"])


def _read_history(path: Path | None, upto: int, *, write: bool = True) -> list[dict[str, float]]:
    """History lines up to step ``upto`` (lines after a checkpoint are redone on resume).

    ``write``: also cut the file to those lines (rank 0 of a DDP run only).
    """
    if path is None or not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r["step"] <= upto]
    if write:
        with atomic_write(path) as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def _fmt_time(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h:d}:{m:02d}:{s:02d}"

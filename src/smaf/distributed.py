"""Data-parallel training: one process per GPU under ``torchrun`` (DistributedDataParallel).

A training rule's ``gpu`` resource is the number of processes (config ``train.gpus``). With
one, the stage function runs in the job's own process. With more, :func:`run_training`
starts ``torchrun --standalone --nproc_per_node=N -m smaf.launch <spec.json>``; every process
calls the same stage function (named in the spec, found in
:data:`smaf.stages.registry.TRAINING_STAGES`), :func:`smaf.train.fit` finds the process group and

* wraps the model in DDP (gradients averaged over processes; SyncBatchNorm on GPUs when BN
  is trained, the paper freezes it),
* gives process ``r`` of ``W`` its slice of each global batch of the sample stream, so the
  images of step ``s`` are the same as in a one-process run with the same ``batch_size``
  (``batch_size`` stays the *global* batch: bs 8 on 2 GPUs is 4 per GPU),
* averages the logged losses over processes, checkpoints from rank 0 only (every rank's RNG
  state included) and stops all processes together on SIGTERM.

Only rank 0 writes the stage's outputs. On CPU (no CUDA) the processes use the gloo backend:
that is how the tests check that 2 processes follow the 1-process loss trajectory.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from smaf.config import Settings
from smaf.errors import ConfigError, SmafError
from smaf.interrupts import StopSignals

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in the process group (``world_size`` 1: no DDP)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that logs, checkpoints and writes outputs."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """Whether more than one process trains together."""
        return self.world_size > 1


def context() -> DistContext:
    """This process's rank / world size (``DistContext()`` without a process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistContext()
    return DistContext(
        dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0"))
    )


def init_from_env() -> DistContext:
    """Join the process group torchrun describes (``WORLD_SIZE`` > 1); else do nothing.

    NCCL when every process has a GPU of its own, else gloo (CPU processes, e.g. tests).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        use_nccl = torch.cuda.is_available() and torch.cuda.device_count() > local_rank
        if use_nccl:
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend="nccl" if use_nccl else "gloo")
    return context()


def shutdown() -> None:
    """Leave the process group (if any)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_main() -> bool:
    """True in a one-process run and on rank 0 of a DDP run."""
    return context().is_main


def _reduce_device() -> torch.device:
    # NCCL reduces CUDA tensors only; gloo CPU tensors.
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def mean_over_ranks(values: Mapping[str, float]) -> dict[str, float]:
    """Average each value over the processes (identity without a process group)."""
    if not context().enabled or not values:
        return dict(values)
    keys = list(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=_reduce_device())
    dist.all_reduce(t)
    t /= dist.get_world_size()
    return {k: float(v) for k, v in zip(keys, t.tolist(), strict=True)}


def max_over_ranks(value: float) -> float:
    """The largest ``value`` of all processes (identity without a process group)."""
    if not context().enabled:
        return value
    t = torch.tensor([float(value)], dtype=torch.float64, device=_reduce_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def any_rank(flag: bool) -> bool:
    """True when ``flag`` is true on any process (identity without a process group)."""
    if not context().enabled:
        return flag
    return max_over_ranks(1.0 if flag else 0.0) > 0


def gather(obj: Any) -> list[Any]:
    """Every process's ``obj`` (in rank order) on every process; ``[obj]`` without DDP."""
    if not context().enabled:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    """Wait for every process (no-op without a process group)."""
    if context().enabled:
        dist.barrier()


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


def wrap_model(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` in DDP (SyncBatchNorm on GPUs when BN is trained), in this process group.

    ``model`` itself is changed in place only by the SyncBatchNorm conversion, which keeps its
    parameter names (checkpoints hold ``model``'s state dict, not the wrapper's).
    """
    ctx = context()
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
    return wrapped


def no_sync(model: nn.Module, sync: bool) -> contextlib.AbstractContextManager:
    """``model.no_sync()`` for a DDP micro-batch that must not all-reduce yet (else nothing)."""
    if sync:
        return contextlib.nullcontext()
    inner = getattr(model, "_orig_mod", model)  # a compiled DDP module
    return inner.no_sync()


def torchrun_command(processes: int, spec: str | os.PathLike[str]) -> list[str]:
    """The command that runs ``smaf.launch spec`` in ``processes`` processes on this node."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",  # a private rendezvous on a free local port: parallel jobs don't clash
        f"--nproc_per_node={processes}",
        "-m",
        "smaf.launch",
        str(spec),
    ]


def run_training(
    log_path: str | os.PathLike[str] | None,
    func: Callable[..., Any],
    /,
    *,
    processes: int,
    requested: int | None = None,
    threads: int | None = None,
    **kwargs: Any,
) -> None:
    """Run the training stage ``func(**kwargs)`` in ``processes`` DDP processes (1: here).

    ``processes`` is the job's ``gpu`` resource; ``requested`` the config's ``train.gpus``
    (Snakemake lowers a job's resource to the ``--resources gpu=N`` it was given: that is
    logged as a warning, and the job trains with fewer processes). ``threads`` (the job's
    cores) are shared out: each process gets ``threads // processes``. Keyword arguments must
    be JSON values (paths as strings) or settings (as their dict); they travel in a spec file. Exits with status 1 and one
    line when a process fails (its message is in the log).
    """
    from smaf.runner import configure_logging, run_logged  # noqa: PLC0415 - no import cycle

    processes = int(processes)
    if processes < 1:
        raise ConfigError(f"train.gpus must be >= 1, got {processes}")
    if requested is not None and processes < int(requested):
        configure_logging(log_path)
        log.warning(
            "train.gpus is %d but this job got gpu=%d: training with %d process(es). Give "
            "Snakemake the GPUs with `--resources gpu=%d`.",
            requested,
            processes,
            processes,
            requested,
        )
    if processes == 1:
        run_logged(log_path, func, threads=threads, **kwargs)
        return
    per_process = None if threads is None else max(1, int(threads) // processes)
    spec = {
        "stage": func.__name__,  # smaf.launch finds it in smaf.stages.registry.TRAINING_STAGES
        "log": None if log_path is None else str(log_path),
        "kwargs": {**_jsonable(kwargs), "threads": per_process},
    }
    with tempfile.TemporaryDirectory(prefix="smaf-ddp-") as tmp:
        spec_path = Path(tmp) / "spec.json"
        spec_path.write_text(json.dumps(spec))
        cmd = torchrun_command(processes, spec_path)
        run_logged(log_path, _run_torchrun, cmd, processes)


def _run_torchrun(cmd: list[str], processes: int) -> None:
    log.info("DDP: %d processes: %s", processes, " ".join(cmd))
    # Ctrl-C / SIGTERM: torchrun passes the signal to its processes, which checkpoint at their
    # next step and exit (smaf.train.fit says so in the log). Wait for that instead of the
    # KeyboardInterrupt that would kill torchrun mid-checkpoint, then exit as they did.
    with subprocess.Popen(cmd) as proc, StopSignals(on_signal=proc.send_signal) as stop:
        returncode = proc.wait()
    if returncode != 0 and stop.signum:
        raise SystemExit(128 + stop.signum)
    if returncode != 0:
        raise SmafError(
            f"DDP training with {processes} processes failed (exit status {returncode}); "
            "the first error of each process is in this log above."
        )


def _jsonable(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``kwargs`` as plain JSON values (Snakemake's path strings become ``str``)."""
    try:
        return json.loads(json.dumps(kwargs, default=_plain))
    except TypeError as exc:
        raise SmafError(f"cannot pass the stage's arguments to torchrun: {exc}") from None


def _plain(obj: Any) -> Any:
    if isinstance(obj, Settings):
        return obj.to_dict()  # the stage rebuilds them (Settings.of)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, Mapping):
        return dict(obj)
    raise TypeError(f"{type(obj).__name__} is not a JSON value")

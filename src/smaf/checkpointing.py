"""A training state folder: checkpoint, loss history, and the lock of the one trainer using it.

``<state_dir>/checkpoint.pt``
    model, optimizer, step, RNG states and the configuration's fingerprint (written
    atomically; read with ``weights_only=True``).
``<state_dir>/history.jsonl``
    one JSON line per step whose losses were checked (``step``, ``lr``, each loss).
``<state_dir>/lock``
    ``flock``-ed by the trainer using the folder, with its PID and host inside. The OS drops
    the lock when that process exits, however it exits (``kill -9`` included), so a stale
    lock never needs deleting by hand.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from pathlib import Path
from typing import Any

import torch
from torch import nn

from smaf import distributed
from smaf.errors import SmafError
from smaf.io import atomic_write

CHECKPOINT_NAME = "checkpoint.pt"
HISTORY_NAME = "history.jsonl"
LOCK_NAME = "lock"


def rng_state() -> dict[str, Any]:
    """This process's torch RNG states (CPU, and every CUDA device when there is one)."""
    # Only torch's generators carry state between steps (dropout): augmentation draws from
    # per-sample generators seeded by the stream position, never from global numpy/python RNGs.
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def restore_rng(ckpt: dict[str, Any], ctx: distributed.DistContext) -> bool:
    """Restore this process's RNG state from a checkpoint (each DDP rank its own).

    Returns False when the checkpoint was made by another number of DDP processes: then the
    batches are the same but dropout streams restart.
    """
    ranks = ckpt.get("rng_ranks")
    if not ctx.enabled:
        set_rng_state(ckpt["rng"])
        return True
    if ranks is not None and len(ranks) == ctx.world_size:
        set_rng_state(ranks[ctx.rank])
        return True
    return False


def config_fingerprint(config: dict[str, Any]) -> str:
    """Canonical JSON of a config, stored in checkpoints to refuse resuming a different run."""
    return json.dumps(config, sort_keys=True, default=str)


def save_checkpoint(
    path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer, step: int, config: dict
) -> None:
    """Write a self-describing checkpoint atomically (loadable with ``weights_only=True``).

    Under DDP every process must call it (their RNG states are gathered); rank 0 writes.
    """
    rng = distributed.gather(rng_state())
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


def read_history(path: Path, upto: int, *, write: bool = True) -> list[dict[str, float]]:
    """History lines up to step ``upto`` (lines after a checkpoint are redone on resume).

    ``write``: also cut the file to those lines (rank 0 of a DDP run only).
    """
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r["step"] <= upto]
    if write:
        with atomic_write(path) as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def append_history(path: Path, records: list[dict[str, float]]) -> None:
    """Append checked steps to the history file."""
    with open(path, "a") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)


class StateLock:
    """An exclusive ``flock`` on ``<folder>/lock`` naming the holder (use with ``with``).

    ``flock`` belongs to the open file, so a second trainer fails whether it is another
    process, on this host or (over NFSv4, where Linux maps it to a POSIX lock) another one,
    or a second ``fit`` in the same process. Processes forked while it is held share it;
    :func:`release_in_child` lets them drop their share (DataLoader workers).
    """

    def __init__(self, folder: str | Path) -> None:
        self.path = Path(folder) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock and write ``{"pid", "host"}`` into it; SmafError naming the holder."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)  # the umask decides, as open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise SmafError(
                f"another trainer ({holder}) is using the state folder {self.path.parent}: wait "
                "for it or kill it; the lock goes when that process exits."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode(), 0)
        self._fd = fd

    def identity(self) -> tuple[int, int] | None:
        """``(st_dev, st_ino)`` of the held lock file (None when not held)."""
        if self._fd is None:
            return None
        st = os.fstat(self._fd)
        return st.st_dev, st.st_ino

    def fileno(self) -> int | None:
        """The descriptor holding the lock (None when not held)."""
        return self._fd

    def release(self) -> None:
        """Drop the lock (closing the file releases it; the file stays, unlocked)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> StateLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def release_in_child(fd: int | None, identity: tuple[int, int] | None) -> None:
    """In a forked child: close its copy of the lock descriptor ``fd``, if it is that file.

    A forked child shares the parent's lock; without this, a DataLoader worker orphaned by a
    ``kill -9`` of the trainer would keep the state folder locked until it notices. The file
    identity is checked because a child that was not forked (spawn) may use ``fd`` for
    something else.
    """
    if fd is None or identity is None:
        return
    with contextlib.suppress(OSError):
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) == identity:
            os.close(fd)


def _read_holder(fd: int) -> str:
    """``PID n on host h`` from a held lock file (``PID unknown`` while it is being written)."""
    try:
        holder = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        return f"PID {int(holder['pid'])} on {holder['host']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "PID unknown"

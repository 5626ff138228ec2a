"""Training in a process of its own: Ctrl-C keeps a checkpoint and exits cleanly (issue 15
item 8); one trainer per state folder (item 9). The trainer is tests/ddp_worker.py with one
DataLoader worker process, as in a real job."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time

import pytest
from test_train import CONFIG, LOOP, ToySet, make, step_fn
from worker_utils import assert_same_trajectory, run_worker, worker_command

from smaf.checkpointing import StateLock
from smaf.errors import SmafError
from smaf.train import fit, load_checkpoint


@pytest.mark.slow
def test_ctrl_c_checkpoints_exits_130_without_traceback_and_the_rerun_finishes_exactly(tmp_path):
    """SIGINT to the trainer's process group (a terminal's Ctrl-C, DataLoader worker included)
    during step 3: a checkpoint at step 3 (between the every-2-steps checkpoints), one line,
    exit status 130, no traceback; the rerun resumes there and ends like an unbroken run."""
    full = run_worker(tmp_path, "full", 1, "--workers", "1")
    state = tmp_path / "state"
    args = ("--state-dir", str(state), "--workers", "1")
    stopped = run_worker(
        tmp_path, "stopped", 1, *args, "--signal-at", "3", "--signal-name", "INT", expect_ok=False
    )
    assert stopped.returncode == 130, stopped.stderr
    assert "Traceback" not in stopped.stderr
    line = "interrupted (SIGINT): checkpoint written at step 3; rerun to resume"
    assert stopped.stderr.count("interrupted") == 1 and line in stopped.stderr
    assert load_checkpoint(state / "checkpoint.pt")["step"] == 3

    resumed = run_worker(tmp_path, "resumed", 1, *args)
    assert "at step 3 of 6" in resumed["stderr"]
    assert_same_trajectory(full, resumed, rel=1e-6)
    assert resumed["history"] == full["history"]  # one process on a CPU: bit for bit


@pytest.mark.slow
def test_second_trainer_on_a_held_state_folder_stops_naming_the_holder_until_it_is_killed(
    tmp_path,
):
    """A trainer paused at step 4 (checkpoint at step 2 written) holds the state folder: a
    second trainer stops at once with the holder's PID, host and the fix, and leaves the
    checkpoint alone. After kill -9 of the holder alone (its orphaned DataLoader worker still
    alive), the folder is free and the next trainer resumes from the holder's checkpoint."""
    state, ready = tmp_path / "state", tmp_path / "ready"
    args = ("--state-dir", str(state), "--workers", "1")
    with open(tmp_path / "holder.err", "w") as err:
        holder = subprocess.Popen(
            worker_command(
                tmp_path / "holder.json", 1, *args, "--pause-at", "4", "--ready", str(ready)
            ),
            stderr=err,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert holder.poll() is None, (tmp_path / "holder.err").read_text()
            assert time.monotonic() < deadline, "the holder never reached step 4"
            time.sleep(0.05)
        files = [state / "checkpoint.pt", state / "history.jsonl"]
        before = [(f.read_bytes(), f.stat().st_mtime_ns) for f in files]

        model, opt, cfg = make()
        message = (
            rf"another trainer \(PID {holder.pid} on {socket.gethostname()}\) is using the "
            rf"state folder {state}: wait for it or kill it; the lock goes when that process exits"
        )
        with pytest.raises(SmafError, match=message):
            fit(model, opt, ToySet(), step_fn, LOOP, cfg, state, CONFIG)
        assert [(f.read_bytes(), f.stat().st_mtime_ns) for f in files] == before

        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
        os.killpg(holder.pid, 0)  # its DataLoader worker lives on for a while...
        with StateLock(state):  # ...without keeping the lock
            pass
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(holder.pid, signal.SIGKILL)
    assert load_checkpoint(state / "checkpoint.pt")["step"] == 2
    resumed = run_worker(tmp_path, "resumed", 1, *args)
    assert "resuming from" in resumed["stderr"] and "at step 2 of 6" in resumed["stderr"]
    assert [r["step"] for r in resumed["history"]] == [1, 2, 3, 4, 5, 6]

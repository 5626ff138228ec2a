"""Running tests/ddp_worker.py (a training run in processes of its own) from the tests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from workflow_utils import REPO_ROOT

WORKER = REPO_ROOT / "tests" / "ddp_worker.py"


def worker_command(out: Path, processes: int, *args: str) -> list[str]:
    """The command of one worker run writing ``out`` (under torchrun when ``processes`` > 1)."""
    cmd = [sys.executable, str(WORKER), str(out), *args]
    if processes > 1:
        torchrun = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
        cmd[1:1] = torchrun
    return cmd


def run_worker(
    tmp_path: Path, name: str, processes: int, *args: str, expect_ok: bool = True
) -> Any:
    """Run the worker; its JSON result, or (``expect_ok=False``) the failed process."""
    out = tmp_path / f"{name}.json"
    # A session of its own: --signal-at signals the worker's whole process group.
    result = subprocess.run(
        worker_command(out, processes, *args),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        start_new_session=True,
    )
    if not expect_ok:
        assert result.returncode != 0, result.stdout + result.stderr
        return result
    assert result.returncode == 0, result.stdout + result.stderr
    return {**json.loads(out.read_text()), "stderr": result.stderr}


def assert_same_trajectory(a: dict, b: dict, rel: float = 1e-5) -> None:
    """Two worker results took the same steps with the same losses, lr and final weights."""
    assert [r["step"] for r in a["history"]] == [r["step"] for r in b["history"]]
    for ra, rb in zip(a["history"], b["history"], strict=True):
        for key in ("loss", "cls", "sal", "lr"):
            assert ra[key] == pytest.approx(rb[key], rel=rel, abs=1e-6), (key, ra, rb)
    assert a["weights_abs_sum"] == pytest.approx(b["weights_abs_sum"], rel=rel)

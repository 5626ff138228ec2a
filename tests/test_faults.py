"""Faults through the real workflow: kill -9 a training job (and Snakemake) mid-run, rerun.

Each training stage (EPS pretraining, SMAF self-training, DeepLab) is killed with SIGKILL at
a random step, together with the Snakemake process that ran it, as a node crash would. The
rerun (after ``--unlock``, which a crashed Snakemake needs) must resume from the last
checkpoint — not step 0 — losing at most one checkpoint interval, and finish with complete
outputs. The random step is printed, so a failure can be replayed with ``SMAF_KILL_SEED``.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from workflow_utils import SNAKEFILE, TINY_CONFIG, planned_rules, snakemake

ITERATIONS = 30
CHECKPOINT_EVERY = 4
#: stage → (its rule's model output, its log, the section of config.yaml it trains).
STAGES = {
    "pretrain": ("results/synthetic/pretrain", "logs/synthetic/pretrain.log", "pretrain"),
    "self_train": (
        "results/synthetic/default/self_train",
        "logs/synthetic/default/self_train.log",
        "self_train",
    ),
    "deeplab_train": (
        "results/synthetic/default/deeplab",
        "logs/synthetic/default/deeplab/train.log",
        "deeplab",
    ),
}


def _config() -> dict:
    config = json.loads(json.dumps(TINY_CONFIG))
    config["train"] = {"checkpoint_every": CHECKPOINT_EVERY, "log_every": 1}
    for _, _, section in STAGES.values():
        config[section]["iterations"] = ITERATIONS
    return config


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A scratch workflow folder; the stages run in order as the tests go."""
    return tmp_path_factory.mktemp("faults")


def _start(workdir: Path, target: str) -> subprocess.Popen:
    """Start Snakemake on `target` in the background, in its own process group."""
    # JSON (YAML's subset) in the config's own key order; the rerun below writes sorted YAML.
    # The params must not see a difference (smaf's rules sort their dict params).
    cfg = workdir / "fault-config.yaml"
    cfg.write_text(json.dumps(_config()))
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(SNAKEFILE)]
    cmd += ["--directory", str(workdir), target, "--cores", "2", "--resources", "gpu=1"]
    cmd += ["--configfile", str(cfg)]
    return subprocess.Popen(
        cmd,
        stdout=open(workdir / "fault-run.out", "w"),  # noqa: SIM115 - closed with the process
        stderr=subprocess.STDOUT,
        start_new_session=True,  # the whole group (Snakemake + its job) gets the SIGKILL
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _last_step(log: Path) -> int:
    """Highest `k/N steps` progress line in a training log (0 if none yet)."""
    if not log.is_file():
        return 0
    steps = re.findall(r"(\d+)/\d+ steps", log.read_text(errors="replace"))
    return max(map(int, steps), default=0)


@pytest.mark.slow
@pytest.mark.parametrize("stage", list(STAGES))
def test_resume_after_kill_9_of_the_training_job_and_snakemake(workdir, stage):
    out_dir, log_name, _ = STAGES[stage]
    model = f"{out_dir}/model.pt"
    log = workdir / log_name
    seed = int(os.environ.get("SMAF_KILL_SEED", random.randrange(10**6)))
    kill_at = random.Random(seed).randrange(CHECKPOINT_EVERY + 1, ITERATIONS - 10)
    print(f"{stage}: SMAF_KILL_SEED={seed} -> kill after step {kill_at}")

    proc = _start(workdir, model)
    deadline = time.monotonic() + 900
    while _last_step(log) < kill_at:
        assert proc.poll() is None, f"{stage} ended before step {kill_at} (see {log})"
        assert time.monotonic() < deadline, f"{stage} never reached step {kill_at}"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = _last_step(log)
    assert not (workdir / model).exists()  # nothing that looks complete

    snakemake(workdir, "--unlock", config=_config())
    rerun = snakemake(workdir, model, "--cores", "2", "--resources", "gpu=1", config=_config())
    assert planned_rules(rerun) == {stage}  # only the killed job: its inputs are complete
    resumed = re.findall(r"resuming from \S+ at step (\d+)", log.read_text())
    assert resumed, f"{stage} restarted from step 0 instead of its checkpoint"
    start = int(resumed[-1])
    assert killed_at - CHECKPOINT_EVERY <= start <= killed_at
    history = pd.read_csv(workdir / out_dir / "history.csv")
    assert history["step"].tolist() == list(range(1, ITERATIONS + 1))
    assert (workdir / model).stat().st_size > 0

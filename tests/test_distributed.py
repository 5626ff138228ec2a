"""Data-parallel training (issue 8): sharded sample stream, DDP under torchrun with gloo.

The equivalence tests run tests/ddp_worker.py once in one process and once as 2 processes
under ``torchrun`` (gloo backend, CPU) with the same global batch, and compare the loss
trajectories and the final weights.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from itertools import islice

import pandas as pd
import pytest
from worker_utils import assert_same_trajectory, run_worker
from workflow_utils import TINY_CONFIG, snakemake

from smaf import distributed, launch
from smaf.models.checkpoint import load_model
from smaf.stages.pretrain import pretrain
from smaf.stages.registry import TRAINING_STAGES
from smaf.train import SampleStream, load_checkpoint


def test_sample_stream_shards_each_micro_batch_between_processes():
    """Rank r takes the r-th half of every global micro-batch of 4 positions; resumes too."""
    single = list(islice(iter(SampleStream(7, seed=1, start=8)), 12))
    rank0 = list(islice(iter(SampleStream(7, seed=1, start=8, rank=0, world=2, chunk=4)), 6))
    rank1 = list(islice(iter(SampleStream(7, seed=1, start=8, rank=1, world=2, chunk=4)), 6))
    # positions 8..19: micro-batches [8..11], [12..15], [16..19]
    assert rank0 == [single[i] for i in (0, 1, 4, 5, 8, 9)]
    assert rank1 == [single[i] for i in (2, 3, 6, 7, 10, 11)]
    with pytest.raises(ValueError, match="bad shard"):
        SampleStream(7, seed=1, rank=0, world=3, chunk=4)


@pytest.mark.slow
@pytest.mark.parametrize(("accum", "compiled"), [(1, False), (2, False), (2, True)])
def test_two_gloo_processes_follow_the_one_process_loss_trajectory(tmp_path, accum, compiled):
    """Same global batch (4; with accum 2 two micro-batches of 2 = 1 per process); also with
    the DDP model under torch.compile (train.compile) in the 2-process run."""
    args = ["--no-dropout", "--freeze-bn", "--batch", "4", "--accum", str(accum)]
    one = run_worker(tmp_path, "one", 1, *args)
    two = run_worker(tmp_path, "two", 2, *args, *(["--compile"] if compiled else []))
    assert (one["world_size"], two["world_size"]) == (1, 2)
    assert len(one["history"]) == 6
    assert_same_trajectory(one, two)


@pytest.mark.slow
def test_ddp_resume_after_kill_repeats_the_uninterrupted_run(tmp_path):
    """With dropout on: each rank's RNG state is in the checkpoint, so a resumed 2-process
    run takes the same steps as an uninterrupted one (checkpoints every 2 steps)."""
    full = run_worker(tmp_path, "full", 2)
    state = tmp_path / "state"
    run_worker(tmp_path, "killed", 2, "--state-dir", str(state), "--stop-after", "3")
    resumed = run_worker(tmp_path, "resumed", 2, "--state-dir", str(state))
    assert resumed["history"][0]["step"] == 1  # steps 1-2 from the state folder's history
    assert_same_trajectory(full, resumed, rel=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("signame", ["TERM", "INT"])
def test_sigterm_or_ctrl_c_to_a_ddp_run_checkpoints_all_ranks_at_one_step(tmp_path, signame):
    """SIGTERM (a SLURM time limit) or SIGINT (Ctrl-C) to torchrun, which passes it to both
    workers, at rank 0's step 3 (rank 0 is signalled directly too): the processes agree to stop
    at that step, rank 0 checkpoints it (between the every-2-steps checkpoints) with both
    ranks' RNG states and says so in one line, and the rerun finishes like an unkilled run."""
    state = tmp_path / "state"
    args = ("--state-dir", str(state), "--signal-at", "3", "--signal-name", signame)
    stopped = run_worker(tmp_path, "killed", 2, *args, expect_ok=False)
    line = f"interrupted (SIG{signame}): checkpoint written at step 3; rerun to resume"
    assert stopped.stderr.count(line) == 1, stopped.stderr
    ckpt = load_checkpoint(state / "checkpoint.pt")
    assert ckpt["step"] == 3 and len(ckpt["rng_ranks"]) == 2
    resumed = run_worker(tmp_path, "resumed", 2, "--state-dir", str(state))
    assert_same_trajectory(run_worker(tmp_path, "full", 2), resumed, rel=1e-6)


def test_ctrl_c_to_the_launcher_alone_is_passed_to_torchrun_and_waited_for(tmp_path):
    """The job's own process (run_training) passes a SIGINT it alone got to torchrun (here a
    stand-in that exits 130 on SIGINT, as torchrun's stopped workers do), waits for it, and
    exits 130 itself, without a KeyboardInterrupt traceback."""
    ready, stopped = tmp_path / "ready", tmp_path / "stopped"
    torchrun = (
        "import pathlib, signal, sys, time\n"
        "def stop(*_):\n"
        "    pathlib.Path(sys.argv[2]).write_text('SIGINT')\n"
        "    sys.exit(130)\n"
        "signal.signal(signal.SIGINT, stop)\n"
        "pathlib.Path(sys.argv[1]).touch()\n"
        "time.sleep(120)\n"
    )
    cmd = [sys.executable, "-c", torchrun, str(ready), str(stopped)]
    launcher = f"from smaf.distributed import _run_torchrun\n_run_torchrun({cmd!r}, 2)\n"
    proc = subprocess.Popen(
        [sys.executable, "-c", launcher], stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGINT)  # the launcher only, not its process group
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert stopped.read_text() == "SIGINT"


def test_torchrun_command_and_stage_names(tmp_path, capsys):
    cmd = distributed.torchrun_command(4, "/tmp/spec.json")
    assert cmd[1:4] == ["-m", "torch.distributed.run", "--standalone"]
    assert "--nproc_per_node=4" in cmd
    assert cmd[-3:] == ["-m", "smaf.launch", "/tmp/spec.json"]
    # The spec names a stage by its function's __name__: the table's keys must be those names.
    assert TRAINING_STAGES["pretrain"] is pretrain
    assert all(name == func.__name__ for name, func in TRAINING_STAGES.items())
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"stage": "test_torchrun_command_and_stage_names", "kwargs": {}}))
    assert launch.main([str(spec)]) == 2
    assert "unknown stage 'test_torchrun_command_and_stage_names'" in capsys.readouterr().err


def test_without_a_process_group_everything_is_local():
    ctx = distributed.context()
    assert (ctx.rank, ctx.world_size, ctx.is_main, ctx.enabled) == (0, 1, True, False)
    assert distributed.mean_over_ranks({"loss": 2.5}) == {"loss": 2.5}
    assert distributed.any_rank(True) and not distributed.any_rank(False)
    assert distributed.gather({"a": 1}) == [{"a": 1}]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """The tiny workflow up to DeepLab training with train.gpus 2 (gloo on this CPU)."""
    workdir = tmp_path_factory.mktemp("ddp_workflow")
    config = copy.deepcopy(TINY_CONFIG)
    config["train"]["gpus"] = 2
    target = "results/synthetic/default/deeplab/model.pt"
    snakemake(workdir, target, "--cores", "2", "--resources", "gpu=2", config=config)
    return workdir


@pytest.mark.slow
def test_workflow_trains_with_one_process_per_gpu_resource(ddp_run):
    for name, stage in (("pretrain", "pretrain"), ("default/self_train", "default/self_train")):
        log = (ddp_run / "logs/synthetic" / f"{name}.log").read_text()
        assert "DDP: 2 processes" in log and "DDP: rank 0 of 2 on cpu" in log
        assert "4/4 steps" in log
        history = pd.read_csv(ddp_run / "results/synthetic" / stage / "history.csv")
        assert history["step"].tolist() == [1, 2, 3, 4]
        model, meta = load_model(ddp_run / "results/synthetic" / stage / "model.pt")
        assert meta["iterations"] == 4 and model.num_classes == 6
    log = (ddp_run / "logs/synthetic/default/deeplab/train.log").read_text()
    assert "DDP: 2 processes" in log and "3/3 steps" in log  # batch 4: 2 per process
    history = pd.read_csv(ddp_run / "results/synthetic/default/deeplab/history.csv")
    assert history["step"].tolist() == [1, 2, 3] and history["loss"].notna().all()


@pytest.mark.slow
def test_fewer_gpus_than_configured_trains_with_fewer_processes(tmp_path):
    config = copy.deepcopy(TINY_CONFIG)
    config["train"]["gpus"] = 2
    target = "results/synthetic/pretrain/model.pt"
    snakemake(tmp_path, target, "--cores", "2", "--resources", "gpu=1", config=config)
    log = (tmp_path / "logs/synthetic/pretrain.log").read_text()
    assert "train.gpus is 2 but this job got gpu=1" in log
    assert "DDP" not in log.split("train.gpus is 2")[1] and "4/4 steps" in log

"""Shared fixtures: the real VOC 2012 subset (skips cleanly when absent), its index, the tiny
synthetic dataset and the tiny random classifier (built once per session; tests/helpers.py
holds the functions behind them)."""

from __future__ import annotations

import multiprocessing
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import (
    TINY,
    VOC_MINI_SPLITS,
    dataset_root,
    index_dataset,
    synthetic_index,
    tiny_classifier,
)
from slurm_cluster import SLURM_PROFILE, WORKFLOW_TIMEOUT, one_node_cluster, tail
from workflow_utils import TINY_CONFIG, snakemake

REPO_ROOT = Path(__file__).resolve().parents[1]

#: The genuine VOC 2012 subset lent to this project (676 image/mask pairs). Never committed;
#: override with SMAF_VOC_MINI=/path/to/voc2012-mini.
VOC_MINI = Path(
    os.environ.get("SMAF_VOC_MINI", REPO_ROOT.parent / "shared" / "data" / "voc2012-mini")
)


@pytest.fixture(scope="session")
def voc_mini() -> Path:
    """Root of the real VOC subset (holds ``VOCdevkit/VOC2012`` and ``extras/``)."""
    if not (VOC_MINI / "VOCdevkit" / "VOC2012" / "JPEGImages").is_dir():
        pytest.skip(f"real VOC 2012 subset not found at {VOC_MINI} (set SMAF_VOC_MINI)")
    return VOC_MINI


@pytest.fixture(scope="session")
def voc_mini_root(voc_mini: Path) -> Path:
    """``VOCdevkit/VOC2012`` inside the real subset."""
    return voc_mini / "VOCdevkit" / "VOC2012"


@pytest.fixture(scope="session")
def voc_mini_index(voc_mini_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``index.csv`` of the real subset (labels from the masks), by the dataset stage."""
    out = tmp_path_factory.mktemp("voc_mini_index")
    return index_dataset(
        voc_mini_root, out, 20, source="voc", label_source="masks", splits=VOC_MINI_SPLITS
    )


@pytest.fixture(scope="session")
def tiny_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``index.csv`` of the tiny synthetic dataset (:data:`helpers.TINY`, C = 6), with
    ``test_index.csv`` beside it. Shared by the whole session: never modify its files (use
    :func:`tiny_root` for a copy to damage)."""
    return synthetic_index(tmp_path_factory.mktemp("tiny"), with_test=True, **TINY)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny classifier file (width 0.125, EPS head, C = 6)."""
    return tiny_classifier(tmp_path_factory.mktemp("tiny_model") / "model.pt")


@pytest.fixture()
def tiny_root(tiny_index: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny dataset's generated folder (``tmp_path/VOC2012``), for tests
    that damage files; index it with :func:`helpers.index_dataset`."""
    return Path(shutil.copytree(dataset_root(tiny_index), tmp_path / "VOC2012"))


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module of tiny networks (the machine is shared): request it with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny demo workflow (:data:`workflow_utils.TINY_CONFIG`), run to the end once per
    session: tests read its files and dry-run on it, and never change it."""
    workdir = tmp_path_factory.mktemp("workflow")
    snakemake(workdir, "--cores", "2", "--resources", "gpu=1", config=TINY_CONFIG)
    return workdir


#: The tiny workflow in shards of 6 images: 12 train_aug images → 2 shards for the seeds of
#: each classifier (eps, smaf) and the SMAF CRF; 4 train images → 1 for the EPS CRF.
SHARDED = {"shards": {"images_per_shard": 6}}


@dataclass
class ShardedRun:
    """The session's sharded tiny run: its folder, its log, and whether SLURM ran it."""

    workdir: Path
    log: str
    slurm: bool
    why: str = ""  # why not through SLURM
    cpus: int = 1


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory):
    """A one-node SLURM cluster for the session (tests/slurm_cluster.py); skips where it
    cannot run here."""
    with one_node_cluster(tmp_path_factory) as host:
        yield host


@pytest.fixture(scope="session")
def sharded_run(request: pytest.FixtureRequest, tmp_path_factory) -> ShardedRun:
    """TINY_CONFIG in :data:`SHARDED` shards, run to results/summary.csv once per session:
    through ``--profile profiles/slurm`` on the test cluster where one can run here
    (tests/test_slurm.py checks its jobs), else locally. tests/test_workflow_shards.py compares
    its results with the one-shard ``tiny_run`` either way, so one run serves both."""
    workdir = tmp_path_factory.mktemp("sharded")
    config = {**TINY_CONFIG, **SHARDED}
    try:
        request.getfixturevalue("slurm_cluster")
    except pytest.skip.Exception as skipped:
        proc = snakemake(workdir, "--cores", "2", "results/summary.csv", config=config)
        return ShardedRun(workdir, proc.stdout + proc.stderr, slurm=False, why=str(skipped))
    cpus = os.cpu_count() or 1
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SMAF_SLURM_PARTITION", "debug")  # read by the profile
        env.delenv("SMAF_SLURM_ACCOUNT", raising=False)  # no accounting, no account
        proc = snakemake(
            workdir,
            "--profile",
            str(SLURM_PROFILE),
            "--workflow-profile",
            "none",
            # The test node has only this machine's CPUs (rules ask for up to 8 threads).
            "--max-threads",
            str(cpus),
            # Tiny jobs: poll soon (the profile keeps the plugin's 40 s for real clusters).
            # The plugin checks this long after a submission or a finished job, and 10 s
            # longer after each check that finds nothing finished: at 3 s the checks come at
            # 3, 16, 39 s, so a job (here 9 s without torch, 13 s with it, mostly the job's
            # own Snakemake start) is seen at 16 s; at 1 s a torch job waited for the third
            # check at 33 s (the run took 315 s with 1, on 2026-12-07).
            "--slurm-init-seconds-before-status-checks",
            "3",
            "--seconds-between-status-checks",
            "1",
            # Every stage up to the scores; the figures, report and test submission add jobs
            # of the same kinds, not new kinds of job.
            "results/summary.csv",
            config=config,
            check=False,
            timeout=WORKFLOW_TIMEOUT,
        )
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        kept = sorted((workdir / ".snakemake" / "slurm_logs").rglob("*.log"))
        pytest.fail(
            f"snakemake --profile profiles/slurm failed ({proc.returncode}):\n{log[-6000:]}\n"
            + "\n".join(tail(p, 30) for p in kept[-3:])
        )
    return ShardedRun(workdir, log, slurm=True, cpus=cpus)


@pytest.fixture()
def direct_localhost(monkeypatch: pytest.MonkeyPatch) -> None:
    """urllib (and a snakemake subprocess, which inherits os.environ) honour *_proxy
    variables: make 127.0.0.1, the tests' throw-away HTTP servers, be contacted directly."""
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run, naming them, when tests left child processes running; kill them.

    multiprocessing joins its children when the interpreter exits: one left behind (a
    DataLoader worker, which ignores SIGTERM) would hang the run after its summary.
    """
    left = multiprocessing.active_children()
    if not left:
        return
    for child in left:
        child.kill()
        child.join(5)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    message = f"tests left {len(left)} child process(es) running, now killed: {left}"
    if reporter is not None:
        reporter.write_sep("=", message, red=True)

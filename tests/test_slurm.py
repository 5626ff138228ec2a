"""SLURM profile: a real one-node cluster on localhost runs the tiny workflow via profiles/slurm.

The cluster test needs root and the Debian packages ``slurmctld slurmd slurm-client munge``.
When they are missing it installs them with apt-get if ``CI`` is set (and we are root), and
skips otherwise. It writes ``/etc/slurm/slurm.conf`` and ``/etc/slurm/gres.conf`` (a node with
all CPUs, one fake GPU ``File=/dev/null``, no accounting: ``sacct`` does not work), starts
munged (unless one already answers), slurmctld and slurmd, runs the workflow through
``--profile profiles/slurm`` and stops every daemon it started. Config files it replaced are
restored afterwards.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import time
from contextlib import ExitStack
from pathlib import Path

import pytest
import yaml
from workflow_utils import REPO_ROOT, TINY_CONFIG, snakemake

SLURM_PROFILE = REPO_ROOT / "profiles" / "slurm"
SLURM_ETC = Path("/etc/slurm")
MUNGE_KEY = Path("/etc/munge/munge.key")
PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
#: Binaries the test runs; sbin paths are searched even when they are not on PATH.
BINARIES = ("slurmctld", "slurmd", "sinfo", "sbatch", "squeue", "scontrol", "scancel", "munged")
#: First line of every file the test writes: a file with it is ours to overwrite.
MARKER = "# Written by SMAF tests/test_slurm.py for a throw-away one-node test cluster."
#: Rules with a `gpu` resource in the workflow (every other submitted rule must get no GPU).
GPU_RULES = {
    "pretrain",
    "teacher_maps",
    "self_train",
    "seeds",
    "deeplab_train",
    "deeplab_predict",
    "figure_scales",
    "saliency",
}
#: Rules the tiny workflow must submit (the offline teacher is its EPS seeds pass there).
SUBMITTED = {
    "pretrain",
    "self_train",
    "seeds",
    "deeplab_train",
    "deeplab_predict",
    "synthetic_dataset",
    "prepare_dataset",
    "crf",
    "evaluate_shard",
    "deeplab_crf",
}
#: The tiny workflow with shards of 6 images: 12 train_aug images → 2 shards for the seeds of
#: each classifier (eps, smaf) and the SMAF CRF; 4 train images → 1 for the EPS CRF.
SHARDED = {"shards": {"images_per_shard": 6}}
STARTUP_TIMEOUT = 90  # seconds for the node to come up idle
WORKFLOW_TIMEOUT = 3600  # seconds for the tiny workflow, one SLURM job per rule instance


def _which(name: str) -> str | None:
    """Path of binary `name` on PATH or in an sbin directory, else None."""
    extra = os.pathsep.join(("/usr/local/sbin", "/usr/sbin", "/sbin"))
    return shutil.which(name, path=os.environ.get("PATH", "") + os.pathsep + extra)


def _missing_binaries() -> list[str]:
    """The BINARIES not found."""
    return [name for name in BINARIES if _which(name) is None]


def _tail(path: Path, lines: int = 40) -> str:
    """The last `lines` lines of a log file, or a note that it does not exist."""
    if not path.is_file():
        return f"--- {path}: (no such file)"
    text = path.read_text(errors="replace").splitlines()[-lines:]
    return f"--- {path} (last {len(text)} lines):\n" + "\n".join(text)


def _run(*cmd: str, timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess:
    """Run a short command, capturing its text output."""
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=check)


def _install_packages() -> None:
    """apt-get install the SLURM and munge packages without starting their services."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    policy = Path("/usr/sbin/policy-rc.d")
    own_policy = not policy.exists()
    if own_policy:  # keep the packages' init scripts from starting daemons we do not track
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        for cmd in (
            ["apt-get", "update"],
            ["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES],
        ):
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
            if proc.returncode != 0:
                pytest.fail(
                    f"`{' '.join(cmd)}` failed ({proc.returncode}):\n"
                    f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
                )
    finally:
        if own_policy:
            policy.unlink()


def _running_daemons(*names: str) -> list[str]:
    """Names of the processes among `names` that are running (read from /proc)."""
    found = []
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            name = comm.read_text().strip()
        except OSError:
            continue
        if name in names:
            found.append(f"{name} (pid {comm.parent.name})")
    return found


def _meminfo_mb() -> int:
    """This machine's memory (MemTotal), MB."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise RuntimeError("no MemTotal in /proc/meminfo")


def _place_config(stack: ExitStack, path: Path, text: str) -> None:
    """Write `text` to `path`; a file there that we did not write is restored afterwards."""
    backup = path.with_name(path.name + ".smaf-test-backup")
    if path.exists() and not path.read_text(errors="replace").startswith(MARKER):
        if backup.exists():
            pytest.fail(f"{backup} exists: restore it to {path} (or delete it) first")
        path.rename(backup)
        stack.callback(backup.rename, path)
    stack.callback(path.unlink, missing_ok=True)
    path.write_text(f"{MARKER}\n{text}")


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM a daemon we started (SIGKILL after 20 s) and reap it."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def _munge_works() -> bool:
    """Whether a munged answers on the default socket (a credential round-trips)."""
    munge, unmunge = _which("munge"), _which("unmunge")
    if not munge or not unmunge:
        return False
    cred = subprocess.run([munge, "-n"], capture_output=True, timeout=10)
    if cred.returncode != 0:
        return False
    back = subprocess.run([unmunge], input=cred.stdout, capture_output=True, timeout=10)
    return back.returncode == 0


def _start_munged(stack: ExitStack, logdir: Path) -> None:
    """Use the running munged, or start one (as user munge when it exists) until teardown."""
    if _munge_works():
        return
    try:
        user = pwd.getpwnam("munge")
    except KeyError:
        user = None
    # What the munge package would set up (no init system made /run/munge here, say).
    for d in (MUNGE_KEY.parent, Path("/run/munge"), Path("/var/log/munge"), Path("/var/lib/munge")):
        if not d.is_dir():
            d.mkdir(parents=True, mode=0o700 if d == MUNGE_KEY.parent else 0o755)
            if user is not None:
                os.chown(d, user.pw_uid, user.pw_gid)
    if not MUNGE_KEY.exists():
        MUNGE_KEY.write_bytes(os.urandom(1024))
        MUNGE_KEY.chmod(0o400)
        if user is not None:
            os.chown(MUNGE_KEY, user.pw_uid, user.pw_gid)
    log = logdir / "munged.out"
    cmd = [_which("munged"), "--foreground", "--force"]
    with log.open("w") as out:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            user=user.pw_uid if user else None,
            group=user.pw_gid if user else None,
            start_new_session=True,
        )
    stack.callback(_stop, proc)
    deadline = time.monotonic() + 20
    while not _munge_works():
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(
                f"munged did not start ({' '.join(cmd)}, exit {proc.poll()}):\n"
                + _tail(log)
                + "\n"
                + _tail(Path("/var/log/munge/munged.log"))
            )
        time.sleep(0.5)


def _profile_max_mem_mb() -> int:
    """The largest `mem_mb` profiles/slurm requests (default-resources or set-resources)."""
    profile = yaml.safe_load((SLURM_PROFILE / "config.yaml").read_text())
    requests = [profile["default-resources"]["mem_mb"]]
    requests += [res["mem_mb"] for res in profile["set-resources"].values() if "mem_mb" in res]
    return max(int(m) for m in requests)


def _slurm_conf(host: str, workdir: Path) -> str:
    """slurm.conf of a one-node cluster: controller and node `host`, state under `workdir`."""
    cpus = os.cpu_count() or 1
    # This machine's memory, or more when the profile asks for more (VOC-sized requests, up
    # to 32 GB): memory is neither consumed (CR_Core) nor enforced (task/none) here, and
    # config_overrides keeps slurmd from draining a node that has less than it claims.
    memory = max(_meminfo_mb() - 1024, _profile_max_mem_mb())
    return f"""\
ClusterName=smaftest
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation={workdir}/state
SlurmdSpoolDir={workdir}/spool
SlurmctldPidFile={workdir}/slurmctld.pid
SlurmdPidFile={workdir}/slurmd.pid
SlurmctldLogFile={workdir}/slurmctld.log
SlurmdLogFile={workdir}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu
# No accounting: no slurmdbd, `sacct` fails; the profile's status command is squeue.
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# Finished jobs stay visible to squeue/scontrol for an hour (the test inspects them).
MinJobAge=3600
ReturnToService=2
# Trust this file over the hardware probe (CPU layout in VMs and containers varies).
SlurmdParameters=config_overrides
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory} Gres=gpu:1 State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


def _start_daemon(stack: ExitStack, name: str, args: list[str], logs: list[Path]) -> None:
    """Start daemon `name` in the foreground until teardown; fail with `logs` if it dies."""
    out = logs[0].with_name(f"{name}.out")
    with out.open("w") as fh:
        proc = subprocess.Popen(
            [_which(name), *args], stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
        )
    stack.callback(_stop, proc)
    time.sleep(1)
    if proc.poll() is not None:
        pytest.fail(
            f"{name} exited at start ({proc.returncode}):\n"
            + "\n".join(_tail(p) for p in [out, *logs])
        )


def _wait_idle(host: str, workdir: Path) -> None:
    """Wait until node `host` is idle; fail with the node's state and the daemons' logs."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    state = ""
    while time.monotonic() < deadline:
        proc = _run(_which("sinfo"), "-h", "-N", "-n", host, "-o", "%T", check=False)
        state = (proc.stdout + proc.stderr).strip()
        if state == "idle":
            return
        time.sleep(1)
    node = _run(_which("scontrol"), "show", "node", host, check=False)
    logs = [workdir / n for n in ("slurmctld.log", "slurmctld.out", "slurmd.log", "slurmd.out")]
    pytest.fail(
        f"SLURM node {host} not idle after {STARTUP_TIMEOUT} s (sinfo: {state!r}):\n"
        f"{node.stdout}{node.stderr}\n" + "\n".join(_tail(p) for p in logs)
    )


def _cancel_our_jobs() -> None:
    """Cancel what is left in the test cluster's queue (every job there is ours)."""
    proc = _run(_which("squeue"), "-h", "-o", "%i", check=False)
    ids = proc.stdout.split()
    if ids:
        _run(_which("scancel"), *ids, check=False)
        time.sleep(2)


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    """A running one-node SLURM cluster (partition `debug`, one fake GPU); yields its host."""
    if os.geteuid() != 0:
        pytest.skip("the SLURM test runs daemons and writes /etc/slurm: run it as root")
    missing = _missing_binaries()
    if missing:
        if not os.environ.get("CI") or not shutil.which("apt-get"):
            pytest.skip(
                f"slurmctld not installed (missing: {', '.join(missing)}); set CI=1 as root to "
                f"let the test apt-get it, or install: apt-get install {' '.join(PACKAGES)}"
            )
        _install_packages()
        missing = _missing_binaries()
        if missing:
            pytest.fail(f"still missing after apt-get install: {', '.join(missing)}")
    running = _running_daemons("slurmctld", "slurmd")
    if running:
        pytest.skip(f"SLURM daemons already run here ({', '.join(running)}); not touching them")

    host = socket.gethostname().split(".")[0]
    workdir = tmp_path_factory.mktemp("slurm")
    for d in ("state", "spool"):
        (workdir / d).mkdir()
    with ExitStack() as stack:
        SLURM_ETC.mkdir(parents=True, exist_ok=True)
        _place_config(stack, SLURM_ETC / "slurm.conf", _slurm_conf(host, workdir))
        _place_config(stack, SLURM_ETC / "gres.conf", "Name=gpu File=/dev/null\n")
        _start_munged(stack, workdir)
        # -c: start from an empty state; -i: ignore state problems; -D: stay in the foreground.
        _start_daemon(stack, "slurmctld", ["-D", "-c", "-i"], [workdir / "slurmctld.log"])
        _start_daemon(stack, "slurmd", ["-D", "-N", host], [workdir / "slurmd.log"])
        stack.callback(_cancel_our_jobs)  # runs before the daemons stop (LIFO)
        _wait_idle(host, workdir)
        yield host


def _scontrol_job(job_id: str) -> dict[str, str]:
    """`scontrol -d show job -o ID` (with the allocation: JOB_GRES, GRES) as a dict."""
    out = _run(_which("scontrol"), "-d", "show", "job", "-o", job_id).stdout
    return dict(re.findall(r"(\S+?)=(\S*)", out))


def _submitted_jobs(log: str) -> dict[str, list[str]]:
    """SLURM job ids per rule, from the plugin's "Job N has been submitted" log lines."""
    jobs: dict[str, list[str]] = {}
    pattern = r"has been submitted with SLURM jobid (\d+) \(log: (\S+)\)"
    for job_id, path in re.findall(pattern, log):
        rule = next(p[len("rule_") :] for p in Path(path).parts if p.startswith("rule_"))
        jobs.setdefault(rule, []).append(job_id)
    return jobs


def _has_gpu(fields: dict[str, str]) -> bool:
    """Whether a job (`scontrol show job` fields) asked for or was given any GPU."""
    keys = ("TRES", "TresPerJob", "TresPerNode", "JOB_GRES", "GRES")
    return any("gpu" in fields.get(k, "") for k in keys)


@pytest.mark.slow
@pytest.mark.slurm
def test_slurm_profile_runs_tiny_workflow_with_one_gpu_jobs(slurm_cluster, tmp_path, monkeypatch):
    """Every rule runs as a SLURM job; GPU rules get one GPU, CPU rules none."""
    monkeypatch.setenv("SMAF_SLURM_PARTITION", "debug")  # read by the profile
    monkeypatch.delenv("SMAF_SLURM_ACCOUNT", raising=False)  # no accounting, no account
    cpus = os.cpu_count() or 1
    start = time.monotonic()
    proc = snakemake(
        tmp_path,
        "--profile",
        str(SLURM_PROFILE),
        "--workflow-profile",
        "none",
        # The test node has only this machine's CPUs (rules ask for up to 8 threads).
        "--max-threads",
        str(cpus),
        # Tiny jobs: poll soon (the profile keeps the plugin's 40 s for real clusters).
        # (The plugin adds 10 s to the wait after each check that finds nothing finished.)
        "--slurm-init-seconds-before-status-checks",
        "1",
        "--seconds-between-status-checks",
        "1",
        # Every stage up to the scores; the figures, report and test submission add jobs
        # of the same kinds, not new kinds of job.
        "results/summary.csv",
        config={**TINY_CONFIG, **SHARDED},
        check=False,
        timeout=WORKFLOW_TIMEOUT,
    )
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        kept = sorted((tmp_path / ".snakemake" / "slurm_logs").rglob("*.log"))
        pytest.fail(
            f"snakemake --profile profiles/slurm failed ({proc.returncode}) after "
            f"{time.monotonic() - start:.0f} s:\n{log[-6000:]}\n"
            + "\n".join(_tail(p, 30) for p in kept[-3:])
        )
    assert (tmp_path / "results" / "summary.csv").is_file()

    jobs = _submitted_jobs(log)
    assert SUBMITTED <= set(jobs), f"rules submitted: {sorted(jobs)}"
    assert not {"summary", "deeplab_submission", "seeds_gather", "evaluate"} & set(jobs)  # local
    # A sharded stage is as many parallel SLURM jobs as shards.
    assert len(jobs["seeds"]) == 4 and len(jobs["crf"]) == 3, jobs
    for rule, ids in jobs.items():
        for job_id in ids:
            fields = _scontrol_job(job_id)
            where = f"{rule} (SLURM job {job_id}): {fields}"
            assert fields["JobState"] == "COMPLETED", where
            assert fields["Partition"] == "debug", where  # from $SMAF_SLURM_PARTITION
            assert fields["Account"] in ("(null)", ""), where
            if rule in GPU_RULES:
                # Asked for one GPU (--gpus=1) and was given one (the node's only one).
                assert re.search(r"gres[/:]gpu[:=]1\b", fields.get("TresPerJob", "")), where
                assert fields.get("JOB_GRES") == "gpu:1", where
            else:
                assert not _has_gpu(fields), where
            assert 1 <= int(fields["NumCPUs"]) <= cpus, where
    # A rule's threads become --cpus-per-task (pretrain: threads 8, capped by --max-threads).
    pretrain = _scontrol_job(jobs["pretrain"][0])
    assert pretrain["NumCPUs"] == str(min(8, cpus)), pretrain


def test_slurm_profile_reads_partition_from_environment(tmp_path, monkeypatch):
    """Dry runs: the profile plans with and without the workflow profile, env vars applied."""
    monkeypatch.setenv("SMAF_SLURM_PARTITION", "gpu-a100")
    monkeypatch.delenv("SMAF_SLURM_ACCOUNT", raising=False)
    alone = snakemake(tmp_path, "-n", "--profile", str(SLURM_PROFILE), "--workflow-profile", "none")
    out = alone.stdout + alone.stderr
    assert "workflow specific profile" not in out
    pretrain = out[out.index("rule pretrain:") :].split("\n\n")[0]
    assert "slurm_partition=gpu-a100" in pretrain and "gpu=1" in pretrain
    assert "runtime=1440" in pretrain and "mem_mb=32000" in pretrain
    assert "slurm_account" not in out

    monkeypatch.setenv("SMAF_SLURM_ACCOUNT", "proj1")
    both = snakemake(tmp_path, "-n", "--profile", str(SLURM_PROFILE))
    out = both.stdout + both.stderr
    # profiles/default (found next to the Snakefile) is merged on top of profiles/slurm.
    assert re.search(r"workflow specific profile \S*profiles/default\b", out), out[-2000:]
    pretrain = out[out.index("rule pretrain:") :].split("\n\n")[0]
    assert "slurm_account=proj1" in pretrain and "slurm_partition=gpu-a100" in pretrain
    assert "runtime=1440" in pretrain and "gpu=1" in pretrain

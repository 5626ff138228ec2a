"""A throw-away one-node SLURM cluster on localhost for the tests, and the sharded tiny run.

The cluster needs root and the Debian packages ``slurmctld slurmd slurm-client munge``.
When they are missing it installs them with apt-get if ``CI`` is set (and we are root), and
skips otherwise. It writes ``/etc/slurm/slurm.conf`` and ``/etc/slurm/gres.conf`` (a node with
all CPUs, one fake GPU ``File=/dev/null``, no accounting: ``sacct`` does not work), starts
munged (unless one already answers), slurmctld and slurmd, and stops every daemon it started.
Config files it replaced are restored afterwards. ``conftest.py`` makes it the session's
``slurm_cluster`` fixture, and the session's ``sharded_run`` runs through it where it can.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
import yaml
from workflow_utils import REPO_ROOT

SLURM_PROFILE = REPO_ROOT / "profiles" / "slurm"
SLURM_ETC = Path("/etc/slurm")
MUNGE_KEY = Path("/etc/munge/munge.key")
PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
#: Binaries the test runs; sbin paths are searched even when they are not on PATH.
BINARIES = ("slurmctld", "slurmd", "sinfo", "sbatch", "squeue", "scontrol", "scancel", "munged")
#: First line of every file the test writes: a file with it is ours to overwrite.
MARKER = "# Written by SMAF tests/test_slurm.py for a throw-away one-node test cluster."
STARTUP_TIMEOUT = 90  # seconds for the node to come up idle
WORKFLOW_TIMEOUT = 3600  # seconds for the tiny workflow, one SLURM job per rule instance


def which(name: str) -> str | None:
    """Path of binary `name` on PATH or in an sbin directory, else None."""
    extra = os.pathsep.join(("/usr/local/sbin", "/usr/sbin", "/sbin"))
    return shutil.which(name, path=os.environ.get("PATH", "") + os.pathsep + extra)


def _missing_binaries() -> list[str]:
    """The BINARIES not found."""
    return [name for name in BINARIES if which(name) is None]


def tail(path: Path, lines: int = 40) -> str:
    """The last `lines` lines of a log file, or a note that it does not exist."""
    if not path.is_file():
        return f"--- {path}: (no such file)"
    text = path.read_text(errors="replace").splitlines()[-lines:]
    return f"--- {path} (last {len(text)} lines):\n" + "\n".join(text)


def run_cmd(*cmd: str, timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess:
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
    munge, unmunge = which("munge"), which("unmunge")
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
    cmd = [which("munged"), "--foreground", "--force"]
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
                + tail(log)
                + "\n"
                + tail(Path("/var/log/munge/munged.log"))
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
            [which(name), *args], stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
        )
    stack.callback(_stop, proc)
    time.sleep(1)
    if proc.poll() is not None:
        pytest.fail(
            f"{name} exited at start ({proc.returncode}):\n"
            + "\n".join(tail(p) for p in [out, *logs])
        )


def _wait_idle(host: str, workdir: Path) -> None:
    """Wait until node `host` is idle; fail with the node's state and the daemons' logs."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    state = ""
    while time.monotonic() < deadline:
        proc = run_cmd(which("sinfo"), "-h", "-N", "-n", host, "-o", "%T", check=False)
        state = (proc.stdout + proc.stderr).strip()
        if state == "idle":
            return
        time.sleep(1)
    node = run_cmd(which("scontrol"), "show", "node", host, check=False)
    logs = [workdir / n for n in ("slurmctld.log", "slurmctld.out", "slurmd.log", "slurmd.out")]
    pytest.fail(
        f"SLURM node {host} not idle after {STARTUP_TIMEOUT} s (sinfo: {state!r}):\n"
        f"{node.stdout}{node.stderr}\n" + "\n".join(tail(p) for p in logs)
    )


def _cancel_our_jobs() -> None:
    """Cancel what is left in the test cluster's queue (every job there is ours)."""
    proc = run_cmd(which("squeue"), "-h", "-o", "%i", check=False)
    ids = proc.stdout.split()
    if ids:
        run_cmd(which("scancel"), *ids, check=False)
        time.sleep(2)


@contextmanager
def one_node_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A running one-node SLURM cluster (partition `debug`, one fake GPU); yields its host.
    Skips (pytest.skip) where it cannot run here."""
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

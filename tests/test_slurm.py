"""SLURM profile: a real one-node cluster on localhost runs the tiny workflow via profiles/slurm.

The cluster (tests/slurm_cluster.py, the session's ``slurm_cluster`` fixture) needs root and
the Debian packages ``slurmctld slurmd slurm-client munge`` (installed with apt-get when ``CI``
is set); without them the cluster test skips. The run itself is the session's ``sharded_run``
(conftest.py): the tiny workflow in shards of 6 images, through ``--profile profiles/slurm``
where the cluster runs, which tests/test_workflow_shards.py also compares with the one-shard
run.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from slurm_cluster import SLURM_PROFILE, run_cmd, which
from workflow_utils import snakemake

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


def _scontrol_job(job_id: str) -> dict[str, str]:
    """`scontrol -d show job -o ID` (with the allocation: JOB_GRES, GRES) as a dict."""
    out = run_cmd(which("scontrol"), "-d", "show", "job", "-o", job_id).stdout
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
@pytest.mark.slow
@pytest.mark.slurm
def test_slurm_profile_runs_tiny_workflow_with_one_gpu_jobs(sharded_run):
    """Every rule runs as a SLURM job; GPU rules get one GPU, CPU rules none."""
    if not sharded_run.slurm:
        pytest.skip(sharded_run.why)
    cpus = sharded_run.cpus
    assert (sharded_run.workdir / "results" / "summary.csv").is_file()
    jobs = _submitted_jobs(sharded_run.log)
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

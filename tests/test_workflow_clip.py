"""The CLIP base through the workflow (pretrain.method clip): CLIP seeds and SMAF's teacher
from one pass when their settings agree, no pretraining job, and (slow) the whole run to
summary.csv on the tiny synthetic dataset with a tiny random CLIP checkpoint."""

from __future__ import annotations

import copy
import re

import pandas as pd
import pytest
import torch
from clip_checkpoint import tiny_clip_state
from workflow_utils import TINY_CONFIG, planned_rules, snakemake

pytestmark = pytest.mark.slow

#: The smallest CLIP that runs the same code (2 vision blocks, 1 text block).
SMALL_CLIP = {"vision_layers": 2, "text_layers": 1}


def clip_config(weights, **clip) -> dict:
    """TINY_CONFIG on the CLIP base: its model is `clip` in the records."""
    config = copy.deepcopy(TINY_CONFIG)
    config["pretrain"] = {
        **config["pretrain"],
        "method": "clip",
        "clip": {"weights": weights, **clip},
    }
    config["evaluation"] = {"models": ["clip", "smaf"], "splits": ["train"]}
    return config


def _jobs(dry_run: str) -> dict[str, int]:
    """The job counts of a dry run's table (rule → count)."""
    return {k: int(v) for k, v in re.findall(r"^(\w+)\s+(\d+)$", dry_run, flags=re.MULTILINE)}


def test_the_clip_base_plans_no_pretraining_and_one_pass_when_seeds_and_teacher_agree(
    tmp_path,
) -> None:
    weights = tmp_path / "clip.pt"
    weights.touch()  # a dry run reads no weights
    # CLIP-ES's seeds (scale 1, no flip) and the teacher at teacher_cam: two CLIP passes.
    jobs = _jobs(snakemake(tmp_path / "two", "-n", config=clip_config(str(weights))).stdout)
    assert jobs["clip_maps"] == 1 and jobs["teacher_maps"] == 1
    assert "pretrain" not in jobs and jobs["seeds"] == 1  # seeds: the SMAF student's only
    # The seeds at the teacher's scales with flips: the seeds' pass is the teacher's.
    same = clip_config(str(weights), scales=[0.5, 1.0], flip=True)
    proc = snakemake(tmp_path / "one", "-n", "results/summary.csv", config=same)
    jobs = _jobs(proc.stdout)
    assert jobs["clip_maps"] == 1 and "teacher_maps" not in jobs and "pretrain" not in jobs
    assert "results/synthetic/default/seeds/clip" in proc.stdout
    # The default weights are the ViT-B/16 download item.
    config = clip_config("ViT-B-16.pt")
    planned = planned_rules(snakemake(tmp_path / "dl", "-n", config=config))
    assert {"download", "clip_maps", "self_train"} <= planned and "pretrain" not in planned


def test_an_eps_model_under_the_clip_base_is_a_config_error(tmp_path) -> None:
    config = clip_config(str(tmp_path / "clip.pt"))
    config["evaluation"]["models"] = ["eps", "smaf"]
    proc = snakemake(tmp_path, "-n", config=config, check=False)
    assert proc.returncode != 0
    assert "evaluation.models names 'eps', but pretrain.method 'clip'" in proc.stdout + proc.stderr


def test_smaf_on_clip_runs_to_the_summary(tmp_path) -> None:
    """dataset → CLIP seeds (= the teacher's maps) → CRF → SMAF → seeds → CRF → DeepLab →
    summary.csv, with a tiny random OpenAI-format CLIP checkpoint."""
    weights = tmp_path / "tiny_clip.pt"
    torch.save(tiny_clip_state(**SMALL_CLIP), weights)
    config = clip_config(str(weights), scales=[0.5, 1.0], flip=True)
    snakemake(tmp_path / "work", "--cores", "2", "results/summary.csv", config=config)
    summary = pd.read_csv(tmp_path / "work" / "results" / "summary.csv")
    stages = set(summary["stage"])
    assert {"clip_seed", "clip_crf", "smaf_seed", "smaf_crf", "deeplab"} <= stages
    assert set(summary.loc[summary["stage"].str.startswith("clip"), "model"]) == {"clip"}
    assert set(summary.loc[summary["stage"] == "deeplab", "model"]) == {"smaf"}
    # Every number stands on the CLIP base; the tiny student has no init weights of its own.
    assert set(summary["base"]) == {"clip"}
    assert set(summary["supervision"]) == {"CLIP image-text pretraining"}
    assert not (tmp_path / "work" / "results" / "synthetic" / "pretrain").exists()

"""The CLIP base through the workflow (pretrain.method clip): CLIP seeds and SMAF's teacher
from one pass when their settings agree, no pretraining job, and (slow) the whole run to
summary.csv on the tiny synthetic dataset with a tiny random CLIP checkpoint, with the SAM
refinement (a tiny random SAM) in the same run."""

from __future__ import annotations

import copy

import pandas as pd
import pytest
import torch
from clip_checkpoint import tiny_clip_state
from sam_utils import TINY_SAM, write_tiny_sam
from workflow_utils import TINY_CONFIG, job_counts, planned_rules, snakemake

from smaf.data.index import DatasetIndex
from smaf.models.checkpoint import load_model
from smaf.models.deeplab import load_deeplab

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


def test_the_clip_base_plans_no_pretraining_and_one_pass_when_seeds_and_teacher_agree(
    tmp_path,
) -> None:
    weights = tmp_path / "clip.pt"
    weights.touch()  # a dry run reads no weights
    # CLIP-ES's seeds (scale 1, no flip) and the teacher at teacher_cam: two CLIP passes.
    jobs = job_counts(snakemake(tmp_path / "two", "-n", config=clip_config(str(weights))).stdout)
    assert jobs["clip_maps"] == 1 and jobs["teacher_maps"] == 1
    assert "pretrain" not in jobs and jobs["seeds"] == 1  # seeds: the SMAF student's only
    # The seeds at the teacher's scales with flips: the seeds' pass is the teacher's.
    same = clip_config(str(weights), scales=[0.5, 1.0], flip=True)
    proc = snakemake(tmp_path / "one", "-n", "results/summary.csv", config=same)
    jobs = job_counts(proc.stdout)
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
    summary.csv → report, with a tiny random OpenAI-format CLIP checkpoint and a timm student
    (timm's tiny test_resnet, random init: issue 22 §2); and the SAM refinement (issue 23) in
    the same run: refine [crf, sam] with a tiny random SAM, DeepLab trained on the SAM-refined
    labels (one whole-workflow run for all three: `make test`'s time)."""
    weights = tmp_path / "tiny_clip.pt"
    torch.save(tiny_clip_state(**SMALL_CLIP), weights)
    config = clip_config(str(weights), scales=[0.5, 1.0], flip=True)
    config["refine"] = ["crf", "sam"]
    # SAM's quality thresholds at 0: the random tiny SAM's masks survive, the seeds name some.
    config["sam"] = {
        "checkpoint": str(write_tiny_sam(tmp_path / "tiny_sam.pth", TINY_SAM)),
        "points_per_side": 4,
        "max_side": 64,
        "pred_iou_thresh": 0,
        "stability_score_thresh": 0,
    }
    # The student: any timm backbone; DeepLab then starts from its own init (here random), not
    # from the student's backbone (init_from smaf needs a resnet38d student).
    config["model"] = {"backbone": "timm/test_resnet", "width": 1.0}
    config["deeplab"] = {**config["deeplab"], "pseudo_labels": "sam", "init_from": None}
    work = tmp_path / "work"
    snakemake(work, "--cores", "2", config=config)  # to the report (issue 22's acceptance)
    summary = pd.read_csv(work / "results" / "summary.csv")
    stages = set(summary["stage"])
    assert {"clip_seed", "clip_crf", "smaf_seed", "smaf_crf", "deeplab"} <= stages
    assert {"clip_sam", "smaf_sam"} <= stages and not stages & {"clip_sam_crf", "smaf_sam_crf"}
    assert set(summary.loc[summary["stage"].str.startswith("clip"), "model"]) == {"clip"}
    assert set(summary.loc[summary["stage"] == "deeplab", "model"]) == {"smaf"}
    # Every number stands on the CLIP base; the tiny student has no init weights of its own.
    # SAM is named where its masks made the number: +SAM rows and DeepLab on SAM labels.
    assert set(summary["base"]) == {"clip"}
    sam_used = summary["stage"].str.contains("sam") | summary["stage"].str.startswith("deeplab")
    assert set(summary.loc[sam_used, "supervision"]) == {"CLIP image-text pretraining; SAM"}
    assert set(summary.loc[~sam_used, "supervision"]) == {"CLIP image-text pretraining"}
    results = work / "results" / "synthetic"
    assert not (results / "pretrain").exists()
    student, _ = load_model(results / "default" / "self_train" / "model.pt")
    assert student.config.backbone == "timm/test_resnet" and student.num_classes == 6
    # SAM's masks: once per image any refinement reads (both classifiers' scored train split,
    # DeepLab's train_aug), in one dataset-level folder.
    refined = DatasetIndex.read(results / "data" / "index.csv").ids(["train", "train_aug"])
    masks = sorted(p.name[: -len(".sam.json")] for p in (results / "sam_masks").glob("*.sam.json"))
    assert masks == sorted(refined)
    assert sorted(p.stem for p in (results / "default" / "sam" / "smaf").glob("*.png"))
    # DeepLab trained on the SAM-refined SMAF labels.
    _, meta = load_deeplab(results / "default" / "deeplab" / "model.pt")
    assert meta["labels"] == "results/synthetic/default/sam/smaf"
    # The report: no EPS figures on the CLIP base (Fig. 1 and 4 need a trained base), Fig. 3
    # of CLIP vs SMAF, Fig. 5a with the SAM columns.
    figures = {p.stem for p in (results / "default" / "figures").glob("fig*.png")}
    assert figures == {"fig3_eps_vs_smaf", "fig5a_pseudo_labels", "fig5b_segmentation"}
    page = (work / "results" / "report.html").read_text()
    assert "+SAM" in page  # Table 2's +SAM column

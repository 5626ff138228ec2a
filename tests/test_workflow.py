"""The workflow itself: the tiny demo DAG runs, reruns nothing when nothing changed, lints clean."""

from __future__ import annotations

import json
import re
import tarfile

import pandas as pd
import pytest
from workflow_utils import REPO_ROOT, TINY_CONFIG, copy_checkout, planned_rules, snakemake


@pytest.mark.slow
def test_demo_dataset_stage(tiny_run):
    info = json.loads((tiny_run / "results/synthetic/data/dataset.json").read_text())
    assert info["images"] == {"train_aug": 12, "train": 4, "val": 4}
    root = tiny_run / "resources/synthetic/VOC2012"
    assert len(list((root / "JPEGImages").glob("*.jpg"))) == 12 + 4 + 2
    assert len(list((root / "SegmentationClass").glob("*.png"))) == 12 + 4
    assert len(list((root / "SALImages").glob("*.png"))) == 12 + 4 + 2
    assert (tiny_run / "logs/synthetic/prepare_dataset.log").read_text()


@pytest.mark.slow
def test_demo_dag_ends_with_the_summary_table(tiny_run):
    summary = pd.read_csv(tiny_run / "results/summary.csv")
    table2 = {"eps_seed", "eps_crf", "smaf_seed", "smaf_crf"}  # seeds and CRF, on train
    table1 = {"deeplab", "deeplab_crf"}  # DeepLab, on val
    assert set(summary["stage"]) == table2 | table1
    assert set(summary.loc[summary["stage"].isin(table2), "split"]) == {"train"}
    assert set(summary.loc[summary["stage"].isin(table1), "split"]) == {"val"}
    assert (summary["gt"] == "SegmentationClass").all()
    assert summary["miou"].between(0, 1).all()
    assert (summary["group"] == "default").all() and (summary["seed"] == 0).all()
    # Issue 22 §3: what each number used, the last columns before the config digest. The demo
    # trains from scratch with EPS on its synthetic saliency maps; DeepLab starts from SMAF's.
    assert list(summary.columns[-3:]) == ["base", "supervision", "config"]
    assert (summary["base"] == "eps").all()
    assert (summary["supervision"] == "saliency maps (EPS)").all()
    report = (tiny_run / "results/report.html").read_text()
    assert "Table 1" in report and "Table 2" in report and "data:image/png;base64," in report
    archive = tiny_run / "results/synthetic/default/deeplab_submission.tar.gz"
    with tarfile.open(archive) as tar:
        names = sorted(tar.getnames())
    assert names == [
        f"results/VOC2012/Segmentation/comp6_test_cls/2000_{i:06d}.png" for i in (16, 17)
    ]
    for stage_dir in ("pretrain", "default/self_train"):
        model_file = tiny_run / "results/synthetic" / stage_dir / "model.pt"
        assert model_file.stat().st_size > 0
    # The offline teacher's maps are the EPS seeds' (same settings): one pass over train_aug.
    teacher = tiny_run / "results/synthetic/default/seeds/eps/maps"
    assert len(list(teacher.glob("*.npz"))) == 12
    for log in ("pretrain.log", "default/self_train.log"):
        assert "4/4 steps" in (tiny_run / "logs/synthetic" / log).read_text()


@pytest.mark.slow
def test_nothing_to_be_done_after_a_tiny_run(tiny_run):
    proc = snakemake(tiny_run, "-n", config=TINY_CONFIG)
    assert "Nothing to be done" in proc.stdout + proc.stderr


#: Rules upstream of the CAM seeds: a change downstream of them must not plan these.
TRAINING = {"synthetic_dataset", "prepare_dataset", "pretrain", "teacher_maps", "self_train"}


@pytest.mark.slow
def test_code_change_in_a_crf_module_reruns_crf_and_downstream_only(tiny_run, tmp_path):
    snakefile = copy_checkout(tmp_path / "checkout")
    same = snakemake(tiny_run, "-n", config=TINY_CONFIG, snakefile=snakefile)
    assert "Nothing to be done" in same.stdout + same.stderr  # another folder, same code
    crf_module = tmp_path / "checkout/src/smaf/crf.py"
    crf_module.write_text(crf_module.read_text() + "\n_CHANGED = 1\n")  # code, not a comment
    proc = snakemake(tiny_run, "-n", config=TINY_CONFIG, snakefile=snakefile)
    planned = planned_rules(proc)
    assert {"crf", "evaluate", "deeplab_crf", "summary"} <= planned
    assert not planned & (TRAINING | {"seeds"}), planned


@pytest.mark.slow
def test_changed_reactivation_thr_reruns_self_training_and_downstream_only(tiny_run):
    config = json.loads(json.dumps(TINY_CONFIG))
    config["self_train"]["thr"] = 0.3
    planned = planned_rules(snakemake(tiny_run, "-n", config=config))
    assert {"self_train", "seeds", "crf", "deeplab_train", "summary"} <= planned
    assert not planned & {"synthetic_dataset", "prepare_dataset", "pretrain", "teacher_maps"}


@pytest.mark.slow
def test_runtime_settings_rerun_nothing(tiny_run):
    config = json.loads(json.dumps(TINY_CONFIG))
    config["train"] = {"checkpoint_every": 7, "log_every": 3, "device": "cpu"}
    proc = snakemake(tiny_run, "-n", config=config)
    assert "Nothing to be done" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_ablations_target_plans_tables_3_to_5_reusing_shared_stages(tiny_run):
    planned = snakemake(tiny_run, "-n", "ablations", config=TINY_CONFIG).stdout
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", planned, flags=re.MULTILINE))
    # 8 new students; 6 new teachers: the tiny default fuses {0.5, 1} already, so Table 3's
    # {0.5, 1} row and the reactivation row reuse its maps. The default experiment, EPS
    # pretraining and the dataset are done already.
    assert jobs["teacher_maps"] == "6" and jobs["self_train"] == "8"
    assert "pretrain" not in jobs and "ablations" in jobs


@pytest.mark.slow
def test_changed_generator_setting_reruns_the_dataset_stage(tiny_run):
    config = json.loads(json.dumps(TINY_CONFIG))
    config["datasets"]["synthetic"]["synthetic"]["seed"] = 1
    proc = snakemake(tiny_run, "-n", "--rerun-triggers", "params", config=config)
    out = proc.stdout + proc.stderr
    assert "synthetic_dataset" in out and "prepare_dataset" in out


def _voc_dry_run(workdir, *configfiles, **kwargs):
    """``snakemake -n`` of the VOC 2012 preset with ``configfiles`` merged over it."""
    voc = REPO_ROOT / "config/voc2012.yaml"
    return snakemake(workdir, "-n", "--configfile", str(voc), *map(str, configfiles), **kwargs)


def _job_block(dry_run: str, rule: str) -> str:
    """The lines a dry run prints for the (first) job of ``rule``."""
    m = re.search(rf"^(?:local)?rule {rule}:\n((?:    .*\n)+)", dry_run, flags=re.MULTILINE)
    assert m, f"no {rule} job planned"
    return m.group(1)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ({"datasets": {"synthetic": {"num_classes": "six"}}}, "num_classes"),
        ({"datasets": {"synthetic": {"synthetic": {"min_area": 2.0}}}}, "min_area"),
        ({"datasets": {"synthetic": {"source": "imagenet"}}}, "source"),
    ],
)
def test_invalid_config_rejected_before_any_job(tmp_path, override, key):
    proc = snakemake(tmp_path, "-n", config=override, check=False)
    assert proc.returncode != 0
    assert key in proc.stdout + proc.stderr
    assert not (tmp_path / "resources").exists()


def test_unknown_dataset_name_is_a_clear_error(tmp_path):
    proc = snakemake(tmp_path, "-n", config={"dataset": "coco"}, check=False)
    assert proc.returncode != 0
    assert "dataset 'coco' is not declared under `datasets:`" in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {"ablations": {"table5": [{"row": "x", "experiment": "nowhere"}]}},
            "row 'x' names experiment 'nowhere', which is neither under `experiments:`",
        ),
        (
            {"experiments": {"default": {}, "mine_seed3": {}}},
            "experiments: name 'mine_seed3' is not allowed",
        ),
        ({"train": {"seeds": []}}, "should be non-empty"),
    ],
)
def test_invalid_config_experiments_and_seeds_are_named(tmp_path, config, message):
    proc = snakemake(tmp_path, "-n", config=config, check=False)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr


def test_snakemake_lint_is_clean(tmp_path):
    proc = snakemake(tmp_path, "--lint", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "Congratulations, your workflow is in a good condition" in out


def test_voc_presets_plan_downloads_manual_items_and_teacher_modes(tmp_path):
    released = _voc_dry_run(tmp_path)
    out = released.stdout
    for rule in (
        "download",
        "extract_voc2012",
        "manual_item",
        "seeds",
        "self_train",
        "summary",
    ):
        assert f"rule {rule}:" in out or f"\n{rule} " in out, rule
    # The released teacher is offline: its maps are the EPS seeds' (same settings, one pass).
    assert "results/voc2012/default/seeds/eps" in _job_block(out, "self_train")
    # Table 1's DeepLab starts from the DeepLab authors' COCO init: downloaded and extracted.
    assert "rule extract_deeplab_init:" in out or "extract_deeplab_init" in out
    assert "resources/downloads/prototxt_and_model.zip" in out
    assert "resources/weights/deeplab_resnet101.extracted" in out
    assert "resnet101-63fe2227.pth" not in out  # torchvision's init is an option only
    paper = _voc_dry_run(tmp_path, REPO_ROOT / "config/paper.yaml")
    assert "teacher_maps" not in paper.stdout  # the paper's teacher runs online
    assert "seeds/eps" not in _job_block(paper.stdout, "self_train")
    assert "self_train" in paper.stdout
    assert "extract_deeplab_init" in paper.stdout


def test_voc_presets_plan_published_checkpoints_instead_of_training(tmp_path):
    """pretrain.init_checkpoint (the EPS authors' model, a manual item) and
    deeplab.init_checkpoint (deeplab-pytorch's, a download): no saliency maps, no ImageNet
    weights, no DeepLab init and no train_aug pseudo labels are needed any more."""
    override = tmp_path / "published.yaml"
    override.write_text(
        "model: {head: eps}\n"
        "pretrain: {init_checkpoint: resources/weights/eps_voc12_checkpoint_cls.pth}\n"
        "deeplab: {init_checkpoint: "
        "resources/downloads/deeplabv2_resnet101_msc-vocaug-20000.pth}\n"
    )
    proc = _voc_dry_run(tmp_path / "run", override)
    out = proc.stdout
    assert "resources/manual/eps_voc12_checkpoint.ok" in out
    assert "resources/downloads/deeplabv2_resnet101_msc-vocaug-20000.pth" in out
    assert "voc2012_saliency" not in out and "resnet38d_imagenet" not in out
    assert "extract_deeplab_init" not in out and "prototxt_and_model.zip" not in out
    assert "crf/smaf" not in _job_block(out, "deeplab_train")  # no pseudo labels needed
    assert "deeplab_train" in out and "self_train" in out

    # The authors' trained DeepLab comes out of the same archive as the COCO init.
    override.write_text(
        "deeplab: {init_checkpoint: "
        "resources/weights/deeplab_resnet101/train2_iter_20000.caffemodel}\n"
    )
    proc = _voc_dry_run(tmp_path / "run", override)
    assert "extract_deeplab_init" in proc.stdout
    assert "crf/smaf" not in _job_block(proc.stdout, "deeplab_train")

    override.write_text("pretrain: {init_checkpoint: resources/weights/eps.pth}\n")
    proc = _voc_dry_run(tmp_path / "run", override, check=False)
    assert proc.returncode != 0
    assert "model.head is 'smaf'" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_pretraining_is_taken_from_the_between_workflow_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SNAKEMAKE_OUTPUT_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    target = "results/synthetic/pretrain/model.pt"
    args = (target, "--cores", "2", "--cache", "pretrain")
    snakemake(tmp_path / "one", *args, config=TINY_CONFIG)
    assert "4/4 steps" in (tmp_path / "one/logs/synthetic/pretrain.log").read_text()  # trained
    snakemake(tmp_path / "two", *args, config=TINY_CONFIG)
    model = tmp_path / "two" / target
    assert model.is_symlink() and model.resolve().parent == tmp_path / "cache"
    assert model.read_bytes() == (tmp_path / "one" / target).read_bytes()
    log = tmp_path / "two/logs/synthetic/pretrain.log"  # created by Snakemake, left empty
    assert not log.exists() or "step" not in log.read_text()  # not trained again


@pytest.mark.slow
def test_published_checkpoints_and_thr_sweep_run_on_the_tiny_workflow(tmp_path):
    """The EPS authors' classifier and deeplab-pytorch's DeepLab (their key names and shapes,
    1/8 width, the demo's 6 classes) replace pretraining and DeepLab training; the threshold
    sweep runs on the held-out train_aug images."""
    import torch
    from test_start_from_checkpoints import deeplab_pytorch_published, eps_published

    from smaf.config import deep_merge
    from smaf.models.checkpoint import load_model

    (tmp_path / "ckpt").mkdir()
    torch.save(eps_published(), tmp_path / "ckpt/checkpoint_cls.pth")
    torch.save(deeplab_pytorch_published(), tmp_path / "ckpt/deeplabv2.pth")
    config = deep_merge(
        TINY_CONFIG,
        {
            "model": {"head": "eps"},
            "pretrain": {"init_checkpoint": "ckpt/checkpoint_cls.pth"},
            "deeplab": {"init_checkpoint": "ckpt/deeplabv2.pth"},
            "thr_sweep": {"values": [0.1, 0.3], "holdout": 0.5},
        },
    )
    deeplab_eval = "results/synthetic/default/eval/deeplab_val_SegmentationClass.json"
    snakemake(
        tmp_path, "thr_sweep", deeplab_eval, "--cores", "2", "--resources", "gpu=1", config=config
    )

    model, meta = load_model(tmp_path / "results/synthetic/pretrain/model.pt", num_classes=6)
    assert meta["source"] == "halbielee/EPS" and model.config.head == "eps"
    history = pd.read_csv(tmp_path / "results/synthetic/pretrain/history.csv")
    assert list(history.columns) == ["step", "note"] and "converted" in history["note"][0]
    assert not (tmp_path / "results/synthetic/state/pretrain").exists()  # nothing trained
    record = json.loads((tmp_path / deeplab_eval).read_text())
    assert 0 <= record["miou"] <= 1
    assert record["init"] == "checkpoint deeplabv2.pth (not trained here)"
    assert not (tmp_path / "results/synthetic/default/crf").exists()  # no pseudo labels needed
    sweep = pd.read_csv(tmp_path / "results/synthetic/default/thr_sweep.csv")
    assert sweep["thr"].tolist() == [0.1, 0.2, 0.3] and sweep["chosen"].sum() == 1
    held_out = json.loads((tmp_path / "results/synthetic/default/thr_sweep.json").read_text())
    # 12 train_aug images, the first 4 also train: 4 of the other 8 are held out.
    assert len(held_out["holdout"]) == 4


@pytest.mark.slow
def test_summary_is_built_per_dataset_and_gathers_every_dataset(tmp_path):
    """Issue 21 item 7 (dry run): the dataset's own summary feeds results/summary.csv; another
    dataset's file is read, never rebuilt (its rows are merged by smaf.stages.evaluate)."""
    other = tmp_path / "results" / "leaves" / "summary.csv"
    other.parent.mkdir(parents=True)
    other.write_text(
        "dataset,experiment,stage,split,gt,miou\nleaves,default,eps_seed,train,x,0.3\n"
    )
    proc = snakemake(tmp_path, "-n", "results/summary.csv", config=TINY_CONFIG)
    out = proc.stdout
    assert {"dataset_summary", "summary"} <= planned_rules(proc)
    assert "output: results/synthetic/summary.csv" in _job_block(out, "dataset_summary")
    # Its inputs: this dataset's summary (and its index, for index_rows), not the other's.
    inputs = _job_block(out, "summary").split("input: ")[1].split("\n")[0]
    assert inputs == "results/synthetic/summary.csv, results/synthetic/data/index.csv"

"""smaf.experiments: runs, merged sections, teacher sharing, targets and ablation rows."""

from __future__ import annotations

import copy

import pytest
import yaml
from conftest import REPO_ROOT

from smaf.config import RUNTIME_KEYS, canonical, deep_merge, did_you_mean
from smaf.errors import ConfigError
from smaf.experiments import Experiments, canonical_config


@pytest.fixture(scope="module")
def demo_config() -> dict:
    """The repo's config.yaml (the demo), as the workflow sees it before defaults."""
    return yaml.safe_load((REPO_ROOT / "config.yaml").read_text())


def _exp(cfg: dict, **changes) -> Experiments:
    cfg = copy.deepcopy(cfg)
    cfg.update(changes)
    return Experiments(canonical_config(cfg))


def test_deep_merge_and_canonical() -> None:
    base = {"a": 1, "b": {"c": 2, "d": {"e": 3}}}
    assert deep_merge(base, {"b": {"d": {"e": 4}}, "f": 5}) == {
        "a": 1,
        "b": {"c": 2, "d": {"e": 4}},
        "f": 5,
    }
    assert base["b"]["d"]["e"] == 3  # not modified
    assert deep_merge(base, None) == base
    assert list(canonical({"b": 1, "a": {"d": 2, "c": 3}})) == ["a", "b"]
    assert list(canonical({"b": 1, "a": {"d": 2, "c": 3}})["a"]) == ["c", "d"]
    assert did_you_mean("self_trian", ["self_train", "seeds"]) == " (did you mean 'self_train'?)"
    assert did_you_mean("zzz", ["self_train"]) == ""


def test_runs_and_sections(demo_config) -> None:
    train = {**demo_config["train"], "seeds": [0, 3]}
    exp = _exp(
        demo_config,
        train=train,
        experiments={"default": {}, "low": {"self_train": {"thr": 0.1}}},
    )
    assert exp.run_names("low") == ["low", "low_seed3"]
    assert exp.parse_run("low_seed3") == ("low", 3) and exp.parse_run("low") == ("low", 0)
    assert exp.section("low_seed3", "self_train")["thr"] == 0.1
    assert exp.section("default", "self_train")["thr"] == demo_config["self_train"]["thr"]
    # Other keys of an overridden section keep their values.
    assert exp.section("low", "self_train")["alpha"] == demo_config["self_train"]["alpha"]
    assert list(exp.runs()) == ["default", "default_seed3", "low", "low_seed3"]
    # thr does not change the teacher's maps: one pass for every run.
    assert exp.teacher_owner("low_seed3") == "default"
    settings = exp.settings("low_seed3", "self_train")
    assert settings.loop.seed == 3 and settings.thr == 0.1
    params = settings.params()  # the rule's params: the run's seed, train.amp, no runtime keys
    assert params["seed"] == 3 and params["thr"] == 0.1 and "amp" in params
    assert not set(RUNTIME_KEYS) & set(params)
    assert list(params) == sorted(params)
    # DeepLab's inference settings retrain nothing
    assert "test" not in exp.settings("low", "deeplab").params()
    assert exp.settings(None, "pretrain").loop.seed == 0
    # A summary row's config: the run's own settings, seed and dataset only.
    low = exp.run_config("low_seed3", "synthetic")
    assert low["self_train"]["thr"] == 0.1 and low["train"]["seed"] == 3
    assert list(low["datasets"]) == ["synthetic"] and low["dataset"] == "synthetic"
    assert exp.run_config("low", "synthetic") != low != exp.run_config("default_seed3", "synthetic")
    same = _exp(
        demo_config,
        train={**train, "log_every": 999, "checkpoint_every": 3},  # how it runs, not results
        experiments={"default": {}, "low": {"self_train": {"thr": 0.1}}},
        shards={"images_per_shard": 7, "max": 256},
    )
    assert same.run_config("low_seed3", "synthetic") == low


def test_targets_of_the_demo(demo_config) -> None:
    exp = _exp(demo_config)
    records = exp.seed_records("synthetic", "default")
    # eps/smaf x seed/crf on train; no SegmentationClassAug on synthetic data
    assert len(records) == 4 and all("SegmentationClass.json" in r for r in records)
    assert "results/synthetic/default/eval/smaf_crf_train_SegmentationClass.json" in records
    assert exp.deeplab_records("synthetic", "default") == [
        "results/synthetic/default/eval/deeplab_val_SegmentationClass.json",
        "results/synthetic/default/eval/deeplab_crf_val_SegmentationClass.json",
    ]
    assert exp.submission_archives("synthetic") == [
        "results/synthetic/default/deeplab_submission.tar.gz"
    ]
    # COCO has no test images: no archive, although deeplab.test.submission defaults to true.
    coco = _exp(demo_config, datasets={"c": {"source": "coco", "root": "x"}})
    assert coco.section("default", "deeplab")["test"]["submission"] is True
    assert coco.submission_archives("c") == []
    rows = exp.ablation_rows("synthetic")
    assert {r["table"] for r in rows} == {"table3", "table4", "table5"}
    assert rows[0]["record"].endswith("smaf_seed_train_SegmentationClass.json")
    # Ablation experiments are known (buildable) but not part of `rule all`.
    assert "single_2" in exp.all and "single_2" not in exp.listed


def test_bad_experiments_are_named(demo_config) -> None:
    with pytest.raises(ConfigError, match=r"'self_trian' \(did you mean 'self_train'\?\)"):
        _exp(demo_config, experiments={"x": {"self_trian": {"thr": 0.1}}})
    with pytest.raises(ConfigError, match="overrides .pretrain.*shared by every run"):
        _exp(demo_config, experiments={"x": {"pretrain": {"lr": 0.1}}})
    with pytest.raises(ConfigError, match="_seed<k>"):
        _exp(demo_config, experiments={"x_seed1": {}})
    table = [{"row": "r", "experiment": "missing"}]
    with pytest.raises(ConfigError, match="neither under `experiments:`"):
        _exp(demo_config, ablations={"table5": table})


def test_each_image_is_computed_once_per_model_and_settings(demo_config) -> None:
    exp = _exp(demo_config)
    ds = "synthetic"
    # The offline teacher's maps are the EPS seeds (same CAM settings, thr = the previews').
    assert exp.teacher_is_eps_seeds("default")
    assert exp.teacher_folder(ds, "default") == "results/synthetic/default/seeds/eps"
    # One EPS pass serves the teacher (train_aug) and the scored seeds (train ⊂ train_aug).
    assert exp.seeds_roles(ds, "default", "eps") == ["train", "train_aug"]
    assert exp.crf_roles(ds, "default", "eps") == ["train"]  # scored only
    # SMAF: scored on train, pseudo labels of train_aug for DeepLab: one folder for both.
    assert exp.seeds_roles(ds, "default", "smaf") == ["train", "train_aug"]
    assert exp.crf_roles(ds, "default", "smaf") == ["train", "train_aug"]
    # Ablation runs share the EPS model and the seeds settings: the default's EPS seeds.
    assert exp.seeds_owner("single_2", "eps") == "default"
    assert exp.crf_owner("no_reactivation", "eps") == "default"
    assert exp.seeds_owner("single_2", "smaf") == "single_2"  # its own student
    # A teacher with other scales than the seeds' has maps of its own.
    assert not exp.teacher_is_eps_seeds("single_2")
    assert exp.teacher_folder(ds, "single_2") == "results/synthetic/single_2/teacher_maps"


def test_settings_that_split_the_shared_passes(demo_config) -> None:
    seeds = {**demo_config["seeds"], "thr": 0.3}
    exp = _exp(demo_config, seeds=seeds)
    assert not exp.teacher_is_eps_seeds("default")  # previews use 0.2: two passes
    assert exp.seeds_roles("synthetic", "default", "eps") == ["train"]
    deeplab = {**demo_config["deeplab"], "labels_from": "eps", "init_from": None}
    exp = _exp(demo_config, deeplab=deeplab)
    assert exp.crf_roles("synthetic", "default", "eps") == ["train", "train_aug"]
    assert exp.crf_roles("synthetic", "default", "smaf") == ["train"]


def test_the_eps_crf_is_shared_unless_the_methods_own_parameters_differ(demo_config) -> None:
    experiments = {
        "default": {},
        "probs_changed": {"crf": {"probs": {"bg_power": 4}}},  # method labels: not used
        "labels_changed": {"crf": {"labels": {"gt_prob": 0.8}}},
    }
    exp = _exp(demo_config, experiments=experiments, ablations={})
    assert exp.crf_owner("probs_changed", "eps") == "default"
    assert exp.crf_owner("labels_changed", "eps") == "labels_changed"
    params = exp.settings("default", "crf").params()
    assert params["method"] == "labels" and "probs" not in params


def test_the_teacher_pass_is_the_seeds_computation_with_the_teachers_cam(demo_config) -> None:
    experiments = {
        "default": {},
        "thr_low": {"self_train": {"thr": 0.1}},  # the maps do not depend on it: shared
        "amp": {"seeds": {"amp": True}},  # bf16 maps: a pass of their own
    }
    exp = _exp(demo_config, experiments=experiments, ablations={})
    teacher = exp.teacher_settings("default")
    assert teacher.thr == 0.2 and teacher.cam == exp.settings("default", "self_train").teacher_cam
    assert teacher == exp.settings("default", "seeds")  # the demo: one pass serves both
    assert exp.teacher_owner("thr_low") == "default"
    assert exp.teacher_owner("amp") == "amp" and exp.teacher_settings("amp").amp


def _clip_exp(demo_config, **clip) -> Experiments:
    pretrain = {**demo_config["pretrain"], "method": "clip", "clip": {"weights": "w.pt", **clip}}
    evaluation = {**demo_config["evaluation"], "models": ["clip", "smaf"]}
    return _exp(demo_config, pretrain=pretrain, evaluation=evaluation)


def test_the_clip_base_is_shared_like_eps_and_its_teacher_pass_is_the_seeds_when_settings_agree(
    demo_config,
) -> None:
    ds = "synthetic"
    # CLIP-ES's seeds (scale 1, no flip) differ from the teacher's (teacher_cam): two passes.
    exp = _clip_exp(demo_config)
    assert exp.base == "clip"
    # pretrain.clip is a pretrain setting, but no pretraining param (its stage is clip_maps).
    pretrain = exp.settings(None, "pretrain")
    assert pretrain.method == "clip" and pretrain.clip["weights"] == "w.pt"
    assert "clip" not in pretrain.params()
    assert not exp.teacher_is_base_seeds("default")
    assert exp.teacher_folder(ds, "default") == "results/synthetic/default/teacher_maps"
    assert exp.clip_settings("default", "teacher")["scales"] == [0.5, 1.0, 1.5, 2.0]
    assert exp.clip_settings("default", "teacher")["flip"] is True
    assert exp.clip_settings("default")["scales"] == [1.0] and "weights" not in exp.clip_settings(
        "default"
    )
    assert exp.seeds_roles(ds, "default", "clip") == ["train"]
    # Every run with the same seeds settings shares the default's CLIP seeds and CRF.
    assert exp.seeds_owner("single_2", "clip") == "default"
    assert exp.crf_owner("no_reactivation", "clip") == "default"
    assert exp.seeds_owner("single_2", "smaf") == "single_2"
    # The seeds at the teacher's scales and flips: one CLIP pass serves both (train_aug too).
    teacher = demo_config["self_train"]["teacher_cam"]
    exp = _clip_exp(demo_config, scales=teacher["scales"], flip=teacher["flip"])
    assert exp.teacher_is_base_seeds("default")
    assert exp.teacher_folder(ds, "default") == "results/synthetic/default/seeds/clip"
    assert exp.seeds_roles(ds, "default", "clip") == ["train", "train_aug"]
    # The CLIP settings are in an EPS run's config column only when they are used.
    assert "clip" in exp.run_config("default", ds)["pretrain"]
    assert "clip" not in _exp(demo_config).run_config("default", ds)["pretrain"]


def test_refinements_pick_what_is_scored_and_what_deeplab_trains_on(demo_config) -> None:
    ds = "synthetic"
    default = _exp(demo_config)
    assert default.refinements() == ["crf"]
    assert default.sam_mask_roles(ds) == []  # no SAM pass unless asked for
    assert not any("_sam_" in r for r in default.seed_records(ds, "default"))

    deeplab = {**demo_config["deeplab"], "pseudo_labels": "sam"}
    exp = _exp(demo_config, refine=["crf", "sam"], deeplab=deeplab)
    records = exp.seed_records(ds, "default")
    assert "results/synthetic/default/eval/smaf_sam_train_SegmentationClass.json" in records
    assert "results/synthetic/default/eval/eps_crf_train_SegmentationClass.json" in records
    # DeepLab's pseudo labels are SAM's: train_aug is SAM-refined, CRF only scored.
    assert exp.sam_roles(ds, "default", "smaf") == ["train", "train_aug"]
    assert exp.crf_roles(ds, "default", "smaf") == ["train"]
    assert exp.sam_roles(ds, "default", "eps") == ["train"]
    # One dataset-level SAM pass covers every split any run refines, whatever the classifier.
    assert exp.sam_mask_roles(ds) == ["train", "train_aug"]
    # SAM-refined EPS labels are shared like the EPS seeds; SMAF's are the run's own.
    assert exp.refined_owner("single_2", "eps", "sam") == "default"
    assert exp.refined_owner("single_2", "smaf", "sam") == "single_2"
    # DeepLab on SAM labels alone: only train_aug is refined, nothing scored with SAM.
    only = _exp(demo_config, deeplab=deeplab)
    assert only.sam_mask_roles(ds) == ["train_aug"]
    assert not any("_sam_" in r for r in only.seed_records(ds, "default"))
    assert only.sam_crf_roles(ds, "default", "smaf") == []


def test_an_unknown_refinement_is_named(demo_config) -> None:
    with pytest.raises(ConfigError, match="refine: 'sma'.*did you mean 'sam'"):
        _exp(demo_config, refine=["crf", "sma"])


def test_sam_settings_and_provenance_appear_only_where_sam_made_the_number(demo_config) -> None:
    ds = "synthetic"
    default = _exp(demo_config, deeplab={**demo_config["deeplab"], "pseudo_labels": "crf"})
    cfg = default.run_config("default", ds)
    # The demo's summary rows are unchanged by the SAM keys (pseudo_labels: crf is the old way).
    assert "sam" not in cfg and "refine" not in cfg and "pseudo_labels" not in cfg["deeplab"]
    assert "SAM" not in default.provenance("default", "smaf", "deeplab")["supervision"]
    assert "pseudo_labels" not in default.settings("default", "deeplab").params()

    deeplab = {**demo_config["deeplab"], "pseudo_labels": "sam"}
    sam = {"checkpoint": "sam.pth", "points_per_side": 4}
    exp = _exp(demo_config, refine=["crf", "sam"], deeplab=deeplab, sam=sam)
    cfg = exp.run_config("default", ds)
    assert cfg["refine"] == ["crf", "sam"] and cfg["sam"]["points_per_side"] == 4
    assert "SAM" in exp.provenance("default", "smaf", "smaf_sam")["supervision"]
    assert "SAM" not in exp.provenance("default", "smaf", "smaf_crf")["supervision"]
    assert "SAM" in exp.provenance("default", "smaf", "deeplab_crf")["supervision"]
    # sam_masks' params: the generator and model, not the refinement (its own rule's part).
    params = exp.settings(None, "sam").params()
    assert params["points_per_side"] == 4 and "unclaimed" not in params
    assert "checkpoint" not in params
    # SAM then CRF: the run's CRF on hard labels.
    assert exp.sam_crf_settings("default").method == "labels"

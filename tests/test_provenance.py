"""Issue 22 §3: what each number used, the `base` and `supervision` of every summary row."""

from __future__ import annotations

import copy
import json

import pandas as pd
import pytest
import yaml
from conftest import REPO_ROOT

from smaf.config import deep_merge
from smaf.errors import ConfigError
from smaf.experiments import Experiments
from smaf.provenance import Provenance, provenance
from smaf.report.tables import ablation_tables, pseudo_label_table, segmentation_table
from smaf.stages.evaluate import (
    CONFIG_COLUMN,
    SUMMARY_COLUMNS,
    merge_summaries,
    write_ablations,
    write_summary,
)

COCO = "DeepLab COCO init (COCO masks)"


def _load(*presets: str) -> dict:
    config = yaml.safe_load((REPO_ROOT / "config.yaml").read_text())
    for preset in presets:
        config = deep_merge(config, yaml.safe_load((REPO_ROOT / "config" / preset).read_text()))
    return config


@pytest.fixture(scope="module")
def demo() -> dict:
    return _load()


def test_the_demo_used_its_synthetic_saliency_maps_and_nothing_else(demo) -> None:
    """From scratch, EPS on synthetic saliency; DeepLab from the SMAF classifier's backbone."""
    for model, stage in (("eps", "eps_seed"), ("smaf", "smaf_crf"), ("smaf", "deeplab_crf")):
        assert provenance(demo, model, stage) == Provenance("eps", "saliency maps (EPS)")


def test_the_released_preset_adds_imagenet_and_deeplabs_coco_init() -> None:
    released = _load("voc2012.yaml")
    both = "saliency maps (EPS); ImageNet init"
    assert provenance(released, "eps", "eps_seed") == ("eps", both)
    assert provenance(released, "smaf", "smaf_crf") == ("eps", both)  # inherits EPS's
    assert provenance(released, "smaf", "deeplab") == ("eps", f"{both}; {COCO}")
    torchvision = copy.deepcopy(released)
    torchvision["deeplab"].update(backbone="resnet101", pretrained="r/resnet101-63fe2227.pth")
    assert provenance(torchvision, "eps", "deeplab_crf").supervision == both  # said once


def test_image_labels_alone_say_none_and_sam_is_named(demo) -> None:
    cam = deep_merge(demo, {"pretrain": {"method": "cam"}, "model": {"head": "cam"}})
    assert provenance(cam, "eps", "eps_seed") == ("cam", "none")
    assert provenance(cam, "smaf", "deeplab") == ("cam", "none")  # init_from: smaf
    assert provenance(cam, "smaf", "smaf_seed", sam=True) == ("cam", "SAM")
    cam["model"]["pretrained"] = "w/ilsvrc-cls_rna-a1_cls1000_ep-0001.params"
    assert provenance(cam, "smaf", "smaf_crf") == ("cam", "ImageNet init")


def test_published_checkpoints_are_named(demo) -> None:
    eps = deep_merge(
        demo,
        {
            "pretrain": {"init_checkpoint": "resources/weights/eps_voc12_checkpoint_cls.pth"},
            "model": {"pretrained": "w/ilsvrc.params"},  # not used: the checkpoint replaces it
        },
    )
    expected = "saliency maps (EPS); published checkpoint eps_voc12_checkpoint_cls.pth"
    assert provenance(eps, "smaf", "smaf_seed") == ("eps", expected)
    deeplab = deep_merge(eps, {"deeplab": {"init_checkpoint": "d/deeplabv2_msc-vocaug.pth"}})
    assert provenance(deeplab, "smaf", "deeplab_crf") == (
        "eps",
        "published checkpoint deeplabv2_msc-vocaug.pth",  # no pseudo labels, no init used
    )


def test_the_clip_base_and_its_student(demo) -> None:
    """`pretrain.method: clip` (wired in later): the base's maps used CLIP alone; the SMAF
    student starts from model.pretrained, and DeepLab adds its init."""
    clip = deep_merge(
        demo,
        {
            "pretrain": {"method": "clip"},
            "model": {"backbone": "timm/resnet50", "pretrained": "w/resnet50_a1.pth"},
            "deeplab": {"init_from": None, "backbone": "resnet101_caffe", "pretrained": "i"},
        },
    )
    assert provenance(clip, "clip", "clip_seed") == ("clip", "CLIP image-text pretraining")
    student = "CLIP image-text pretraining; timm pretrained weights (resnet50_a1.pth)"
    assert provenance(clip, "smaf", "smaf_crf") == ("clip", student)
    assert provenance(clip, "clip", "deeplab") == ("clip", f"CLIP image-text pretraining; {COCO}")
    with pytest.raises(ConfigError, match="pretrain.method is 'sam'"):
        provenance(deep_merge(demo, {"pretrain": {"method": "sam"}}), "eps", "eps_seed")


def test_experiments_give_each_run_its_merged_configs_provenance(demo) -> None:
    config = copy.deepcopy(demo)
    config["train"]["seeds"] = [0, 1]
    config["experiments"]["coco_init"] = {
        "deeplab": {
            "init_from": None,
            "backbone": "resnet101_caffe",
            "pretrained": "x/init.caffemodel",
        }
    }
    exp = Experiments(config)
    assert exp.provenance("default", "smaf", "deeplab") == {
        "base": "eps",
        "supervision": "saliency maps (EPS)",
    }
    assert exp.provenance("coco_init_seed1", "smaf", "deeplab")["supervision"] == (
        f"saliency maps (EPS); {COCO}"
    )


def _record(stage: str, model: str, supervision: str, miou: float) -> dict:
    return {
        "dataset": "voc",
        "experiment": "default",
        "stage": stage,
        "split": "val" if stage.startswith("deeplab") else "train",
        "gt": "SegmentationClass",
        "miou": miou,
        "n_images": 3,
        "model": model,
        "group": "default",
        "seed": 0,
        **({"init": "resnet38d: smaf classifier's backbone"} if stage.startswith("d") else {}),
        **({"thr": 0.2} if not stage.startswith("d") else {}),
        "base": "eps",
        "supervision": supervision,
    }


def test_summary_appends_base_and_supervision_and_keeps_the_metric_cells(tmp_path) -> None:
    records = [
        _record("eps_seed", "eps", "saliency maps (EPS)", 0.1234567),
        _record("deeplab", "smaf", f"saliency maps (EPS); {COCO}", 0.5),
    ]
    plain = [{k: v for k, v in r.items() if k not in ("base", "supervision")} for r in records]
    write_summary(plain, tmp_path / "before.csv", {"default": {}})
    write_summary(records, tmp_path / "voc" / "summary.csv", {"default": {}})
    before = pd.read_csv(tmp_path / "before.csv", dtype=str)
    after = pd.read_csv(tmp_path / "voc" / "summary.csv", dtype=str)
    # Every column keeps its place; the two new ones come last before the config digest.
    assert list(after.columns) == [*before.columns[:-1], "base", "supervision", CONFIG_COLUMN]
    pd.testing.assert_frame_equal(after[before.columns], before)  # same cells, byte for byte
    assert dict(zip(after["stage"], after["supervision"], strict=True)) == {
        "deeplab": f"saliency maps (EPS); {COCO}",
        "eps_seed": "saliency maps (EPS)",
    }
    files = [tmp_path / "before.csv", tmp_path / "voc" / "summary.csv"]
    merged = merge_summaries(files, tmp_path / "s.csv")
    assert list(merged.columns[-3:]) == ["base", "supervision", CONFIG_COLUMN]
    assert list(merged.columns[: len(SUMMARY_COLUMNS)]) == list(SUMMARY_COLUMNS)


def test_report_tables_show_what_each_number_used(tmp_path) -> None:
    none_smaf = {**_record("smaf_seed", "smaf", "none", 0.6), "base": "cam"}
    rows = [
        _record("eps_seed", "eps", "saliency maps (EPS)", 0.5),
        _record("eps_crf", "eps", "saliency maps (EPS)", 0.55),
        none_smaf,
        _record("deeplab", "smaf", f"saliency maps (EPS); {COCO}", 0.7),
        _record("deeplab_crf", "smaf", f"saliency maps (EPS); {COCO}", 0.72),
    ]
    write_summary(rows, tmp_path / "summary.csv")
    from smaf.report.tables import read_summary

    summary = read_summary(tmp_path / "summary.csv")
    table1 = segmentation_table(summary, paper=True)
    assert list(table1.columns[-4:]) == ["base", "supervision", "paper val", "paper test"]
    assert table1.loc[0, "supervision"] == f"saliency maps (EPS); {COCO}"
    table2 = pseudo_label_table(summary, paper=False)
    assert list(table2.columns[-2:]) == ["base", "supervision"]
    by_method = dict(zip(table2["method"], table2["supervision"], strict=True))
    assert by_method == {"EPS": "saliency maps (EPS)", "SMAF": "none"}  # "none" stays a word
    assert list(table2["base"]) == ["eps", "cam"]
    older = summary.drop(columns=["base", "supervision"])
    assert "supervision" not in segmentation_table(older).columns  # as before for old files

    for i, stage in enumerate(("seed", "crf")):
        path = tmp_path / f"r{i}.json"
        path.write_text(json.dumps(_record(f"smaf_{stage}", "smaf", "saliency maps (EPS)", 0.6)))
    ablation_rows = [
        {"table": "table5", "row": "with", "experiment": "default", "seed": 0}
        | {"stage": f"smaf_{stage}", "record": tmp_path / f"r{i}.json"}
        for i, stage in enumerate(("seed", "crf"))
    ]
    ablations = write_ablations(ablation_rows, tmp_path / "ablations.csv")
    assert list(ablations.columns[-3:]) == ["miou", "base", "supervision"]
    (table5,) = ablation_tables(pd.read_csv(tmp_path / "ablations.csv"), paper=True).values()
    assert table5.loc[0, "supervision"] == "saliency maps (EPS)"
    assert list(table5.columns[-3:]) == ["base", "supervision", "paper seed mIoU"]

"""pretrain.init_checkpoint / deeplab.init_checkpoint: a stage's model from a file, not trained.

The published checkpoints are synthetic state dicts with the key names and shapes of the
authors' model code (the helpers of test_convert_published / deeplab_layouts, written from
halbielee/EPS and kazuto1011/deeplab-pytorch), at 1/8 width.
"""

from __future__ import annotations

import csv

import pandas as pd
import pytest
import torch
from deeplab_layouts import coco_init_shapes, random_state
from test_convert_published import eps_resnet38d_shapes

from smaf.config import checkpoint_problems
from smaf.data.index import DatasetIndex
from smaf.errors import ConfigError, DataError, SmafError
from smaf.models.build import ModelConfig, build_classifier
from smaf.models.checkpoint import load_model, save_model
from smaf.models.deeplab import DeepLabConfig, build_deeplab, load_deeplab, save_deeplab
from smaf.provenance import deeplab_init
from smaf.report.tables import segmentation_table
from smaf.stages.published import adopt_classifier, adopt_deeplab, is_project_model

#: Tiny networks: one torch thread (the machine is shared).
pytestmark = pytest.mark.usefixtures("one_torch_thread")

W = 8  # 1/8 of the released widths
C = 6  # foreground classes (the demo's)
NAMES = ["background", *(f"class_{k}" for k in range(1, C + 1))]
MODEL = {"backbone": "resnet38d", "width": 1 / W, "head": "eps", "freeze_bn": True}


@pytest.fixture()
def index() -> DatasetIndex:
    return DatasetIndex.build([], NAMES, {"name": "toy"})


def eps_published(classes: int = C) -> dict[str, torch.Tensor]:
    """halbielee/EPS checkpoint_cls.pth of ``network/resnet38_eps.py`` Net(C+1), 1/8 width."""
    shapes = eps_resnet38d_shapes()
    shapes["fc8.weight"] = (classes + 1, 4096 // W, 1, 1)
    return random_state(shapes, seed=1)


def deeplab_pytorch_published(classes: int = C) -> dict[str, torch.Tensor]:
    """deeplab-pytorch's DeepLabV2_ResNet101_MSC state dict (``base.`` + ASPP c0..c3)."""
    shapes = {k: v for k, v in coco_init_shapes(1 / W).items() if not k.startswith("fc.")}
    for k in range(4):
        shapes[f"aspp.c{k}.weight"] = (classes + 1, 2048 // W, 3, 3)
        shapes[f"aspp.c{k}.bias"] = (classes + 1,)
    return {f"base.{k}": v for k, v in random_state(shapes, seed=2).items()}


def _note(path) -> str:
    (row,) = list(csv.DictReader(open(path)))
    assert row["step"] == "0" and set(row) == {"step", "note"}  # no loss: nothing trained
    return row["note"]


# ------------------------------------------------------------------------------- classifier
def test_published_eps_classifier_replaces_pretraining(tmp_path, index):
    torch.save(eps_published(), tmp_path / "checkpoint_cls.pth")
    meta = adopt_classifier(
        tmp_path / "checkpoint_cls.pth", index, MODEL, tmp_path / "m.pt", tmp_path / "h.csv"
    )
    model, saved = load_model(tmp_path / "m.pt", num_classes=C)
    assert model.config.head == "eps" and model.config.width == 1 / W and model.has_background
    assert saved["source"] == "halbielee/EPS" and saved["class_names"] == NAMES
    assert saved["stage"] == "pretrain" and meta["method"] == "checkpoint"
    assert "converted from" in _note(tmp_path / "h.csv")


def test_published_classifier_of_another_head_or_width_is_refused(tmp_path, index):
    torch.save(eps_published(), tmp_path / "eps.pth")
    with pytest.raises(ConfigError, match="'eps' head but model.head is 'smaf'"):
        adopt_classifier(
            tmp_path / "eps.pth",
            index,
            {**MODEL, "head": "smaf"},
            tmp_path / "m.pt",
            tmp_path / "h",
        )
    with pytest.raises(ConfigError, match="model.width is 1"):
        adopt_classifier(
            tmp_path / "eps.pth", index, {**MODEL, "width": 1.0}, tmp_path / "m.pt", tmp_path / "h"
        )
    assert not (tmp_path / "m.pt").exists()  # nothing left looking complete
    torch.save(eps_published(classes=20), tmp_path / "voc.pth")
    with pytest.raises(DataError, match="21 outputs"):
        adopt_classifier(tmp_path / "voc.pth", index, MODEL, tmp_path / "m.pt", tmp_path / "h")


def test_our_own_classifier_is_checked_then_copied_unchanged(tmp_path, index):
    net = build_classifier(ModelConfig(width=1 / W, head="smaf", num_classes=C))
    save_model(tmp_path / "model.pt", net, {"stage": "self_train", "class_names": NAMES})
    assert is_project_model(tmp_path / "model.pt")
    adopt_classifier(
        tmp_path / "model.pt",
        index,
        {**MODEL, "head": "smaf"},
        tmp_path / "out.pt",
        tmp_path / "h.csv",
    )
    assert (tmp_path / "out.pt").read_bytes() == (tmp_path / "model.pt").read_bytes()
    assert "a model of this project" in _note(tmp_path / "h.csv")
    with pytest.raises(ConfigError, match="'smaf' head but model.head is 'eps'"):
        adopt_classifier(tmp_path / "model.pt", index, MODEL, tmp_path / "x.pt", tmp_path / "h")
    deeplab = build_deeplab(DeepLabConfig(backbone="resnet38d", width=1 / W, num_classes=C))
    save_deeplab(tmp_path / "deeplab.pt", deeplab, {})
    with pytest.raises(SmafError, match="not a classifier model file"):
        adopt_classifier(tmp_path / "deeplab.pt", index, MODEL, tmp_path / "x.pt", tmp_path / "h")
    other = DatasetIndex.build([], NAMES[:3], {"name": "two classes"})
    with pytest.raises(SmafError, match="trained for 6 classes but this dataset has 2"):
        adopt_classifier(
            tmp_path / "model.pt",
            other,
            {**MODEL, "head": "smaf"},
            tmp_path / "x.pt",
            tmp_path / "h",
        )


def test_missing_checkpoint_is_named(tmp_path, index):
    with pytest.raises(DataError, match="checkpoint not found"):
        adopt_classifier(tmp_path / "nope.pth", index, MODEL, tmp_path / "m.pt", tmp_path / "h")


# ---------------------------------------------------------------------------------- DeepLab
def test_published_deeplab_replaces_training_for_evaluation(tmp_path, index):
    torch.save(deeplab_pytorch_published(), tmp_path / "deeplabv2_resnet101_msc-vocaug-20000.pth")
    adopt_deeplab(
        tmp_path / "deeplabv2_resnet101_msc-vocaug-20000.pth",
        index,
        tmp_path / "deeplab.pt",
        tmp_path / "h.csv",
    )
    model, meta = load_deeplab(tmp_path / "deeplab.pt", num_classes=C)
    assert model.config.backbone == "resnet101_caffe" and model.scales == (1.0, 0.75, 0.5)
    assert meta["source"] == "kazuto1011/deeplab-pytorch" and meta["class_names"] == NAMES
    assert "converted from" in _note(tmp_path / "h.csv")
    other = DatasetIndex.build([], NAMES[:3], {"name": "two classes"})
    with pytest.raises(DataError, match="output channels"):
        adopt_deeplab(
            tmp_path / "deeplabv2_resnet101_msc-vocaug-20000.pth",
            other,
            tmp_path / "x.pt",
            tmp_path / "h",
        )


def test_our_own_deeplab_is_checked_then_copied_unchanged(tmp_path, index):
    net = build_deeplab(DeepLabConfig(backbone="resnet38d", width=1 / W, num_classes=C))
    save_deeplab(tmp_path / "model.pt", net, {"stage": "deeplab"})
    adopt_deeplab(tmp_path / "model.pt", index, tmp_path / "out.pt", tmp_path / "h.csv")
    assert (tmp_path / "out.pt").read_bytes() == (tmp_path / "model.pt").read_bytes()
    classifier = build_classifier(ModelConfig(width=1 / W, head="eps", num_classes=C))
    save_model(tmp_path / "cls.pt", classifier, {})
    with pytest.raises(SmafError, match="not a DeepLab model"):
        adopt_deeplab(tmp_path / "cls.pt", index, tmp_path / "x.pt", tmp_path / "h.csv")


# ------------------------------------------------------------------ config and Table 1 init
def test_a_published_classifier_with_the_smaf_head_is_a_config_error():
    config = {"model": {"head": "smaf"}, "pretrain": {"init_checkpoint": "w/eps.pth"}}
    (problem,) = checkpoint_problems(config)
    assert "'eps' head" in problem and "model.head is 'smaf'" in problem
    assert checkpoint_problems({**config, "model": {"head": "eps"}}) == []
    ours = {"model": {"head": "smaf"}, "pretrain": {"init_checkpoint": "results/x/model.pt"}}
    assert checkpoint_problems(ours) == []  # our own files are checked when loaded


def test_deeplab_init_names_where_the_weights_come_from():
    caffe = {
        "backbone": "resnet101_caffe",
        "pretrained": "resources/weights/deeplab_resnet101/init.caffemodel",
    }
    assert deeplab_init(caffe) == "resnet101_caffe: DeepLab-v2 Caffe init (init.caffemodel)"
    tv = {"backbone": "resnet101", "pretrained": "resources/downloads/resnet101-63fe2227.pth"}
    assert deeplab_init(tv) == "resnet101: torchvision ImageNet (resnet101-63fe2227.pth)"
    demo = {"backbone": "resnet38d", "init_from": "smaf", "pretrained": None}
    assert deeplab_init(demo) == "resnet38d: smaf classifier's backbone"
    assert deeplab_init({"backbone": "resnet38d"}) == "resnet38d: random init"
    published = {**caffe, "init_checkpoint": "d/deeplabv2_resnet101_msc-vocaug-20000.pth"}
    assert deeplab_init(published) == (
        "checkpoint deeplabv2_resnet101_msc-vocaug-20000.pth (not trained here)"
    )


def test_table1_says_which_init_produced_it():
    rows = [
        {
            "dataset": "voc2012",
            "experiment": "default",
            "stage": stage,
            "split": "val",
            "gt": "SegmentationClass",
            "miou": 0.7,
            "model": "smaf",
            "init": "resnet101_caffe: DeepLab-v2 Caffe init (init.caffemodel)",
        }
        for stage in ("deeplab", "deeplab_crf")
    ]
    table = segmentation_table(pd.DataFrame(rows))
    assert table.loc[0, "init"] == "resnet101_caffe: DeepLab-v2 Caffe init (init.caffemodel)"
    assert list(table.columns[:6]) == [
        "dataset",
        "experiment",
        "pseudo labels",
        "gt",
        "init",
        "DeepLab (MSC)",
    ]
    older = segmentation_table(pd.DataFrame(rows).drop(columns="init"))
    assert "init" not in older.columns  # a summary without the column: the table as before


def test_init_checkpoints_are_settings_the_training_scripts_read():
    import yaml
    from conftest import REPO_ROOT

    from smaf.experiments import Experiments

    config = yaml.safe_load((REPO_ROOT / "config.yaml").read_text())
    config["pretrain"]["init_checkpoint"] = "w/eps.pth"
    config["deeplab"]["init_checkpoint"] = "w/deeplab.pth"
    exp = Experiments(config)
    pretrain, deeplab = exp.settings(None, "pretrain"), exp.settings("default", "deeplab")
    # The scripts adopt the checkpoint instead of training; another checkpoint reruns the rule.
    assert pretrain.init_checkpoint == "w/eps.pth" and deeplab.init_checkpoint == "w/deeplab.pth"
    assert pretrain.params()["init_checkpoint"] == "w/eps.pth"
    assert deeplab.params()["init_checkpoint"] == "w/deeplab.pth"
    assert deeplab.optim.lr_update_every == 1 and pretrain.augment.resize_mode == "bilinear"

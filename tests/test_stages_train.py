"""EPS pretraining, the offline teacher and SMAF self-training, end to end on a tiny dataset."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from smaf.data.index import DatasetIndex
from smaf.errors import ConfigError, DataError
from smaf.io import load_maps
from smaf.models.checkpoint import load_model
from smaf.settings import PretrainSettings, SeedsSettings, SelfTrainSettings
from smaf.stages.pretrain import pretrain
from smaf.stages.self_train import make_target, self_train, student_maps
from smaf.stages.teacher import teacher_maps

MODEL = {
    "backbone": "resnet38d",
    "width": 0.125,
    "head": "smaf",
    "freeze_bn": False,
    "freeze_stem": False,
}
LOOP = {"iterations": 3, "batch_size": 2, "checkpoint_every": 2, "log_every": 1, "device": "cpu"}
AUG = {
    "crop_size": 48,
    "resize_long": [48, 64],
    "hflip": True,
    "color_jitter": [0.3, 0.3, 0.3, 0.1],
}


@pytest.fixture(scope="module")
def data(tiny_index, tmp_path_factory):
    """The session's tiny dataset (train_aug: 6 images with saliency maps) and a scratch folder."""
    return {"index": tiny_index, "tmp": tmp_path_factory.mktemp("stages")}


@pytest.fixture(scope="module")
def eps_model(data):
    out = data["tmp"] / "pretrain"
    pretrain(
        index=data["index"],
        model=MODEL,
        settings=PretrainSettings.from_dict({"method": "eps", **LOOP, "augment": AUG}),
        out_model=out / "model.pt",
        out_history=out / "history.csv",
        state_dir=out / "state",
    )
    return out


def test_pretrain_writes_a_loadable_model_and_history(eps_model):
    model, meta = load_model(eps_model / "model.pt", num_classes=6)
    assert meta["stage"] == "pretrain" and meta["method"] == "eps"
    assert meta["class_names"][0] == "background"
    assert model.has_background and model.config.width == 0.125
    rows = list(csv.DictReader(open(eps_model / "history.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    assert {"loss", "cls", "sal", "lr"} <= set(rows[0])


def test_cam_pretraining_baseline(data, tmp_path):
    """The CAM baseline needs no saliency maps: none in its index."""
    index = DatasetIndex.read(data["index"])
    no_saliency = DatasetIndex(index.table.assign(saliency=""), index.info)
    pretrain(
        index=no_saliency,
        model={**MODEL, "head": "cam"},
        settings=PretrainSettings.from_dict({"method": "cam", **LOOP, "augment": AUG}),
        out_model=tmp_path / "m.pt",
        out_history=tmp_path / "h.csv",
        state_dir=tmp_path / "state",
    )
    model, _ = load_model(tmp_path / "m.pt")
    assert not model.has_background
    # EPS on the same index: one message saying how to get saliency maps, nothing written.
    with pytest.raises(DataError, match=r"6 of 6 train_aug images .* no saliency map"):
        pretrain(
            index=no_saliency,
            model=MODEL,
            settings=PretrainSettings.from_dict({"method": "eps", **LOOP, "augment": AUG}),
            out_model=tmp_path / "eps.pt",
            out_history=tmp_path / "eps.csv",
            state_dir=tmp_path / "eps_state",
        )
    assert not (tmp_path / "eps.pt").exists()


def test_invalid_config_eps_needs_a_background_channel(data, tmp_path):
    with pytest.raises(ConfigError, match="needs a background channel"):
        pretrain(
            index=data["index"],
            model={**MODEL, "head": "cam"},
            settings=PretrainSettings.from_dict({"method": "eps", **LOOP, "augment": AUG}),
            out_model=tmp_path / "m.pt",
            out_history=tmp_path / "h.csv",
            state_dir=tmp_path / "s",
        )
    assert not (tmp_path / "m.pt").exists()


def test_invalid_config_unknown_key_is_named(data, tmp_path):
    with pytest.raises(ConfigError, match="'pretrain': unknown key.*lerning_rate"):
        PretrainSettings.from_dict({"lerning_rate": 1, **LOOP})
    with pytest.raises(ConfigError, match="'self_train.teacher_cam': unknown key.*scale"):
        SelfTrainSettings.from_dict({"teacher_cam": {"scale": [1.0]}})
    # the dict form (how settings reach a DDP worker) is checked the same way
    with pytest.raises(ConfigError, match="unknown key.*lerning_rate"):
        pretrain(
            index=data["index"],
            model=MODEL,
            settings={"lerning_rate": 1, **LOOP},
            out_model=tmp_path / "m.pt",
            out_history=tmp_path / "h.csv",
            state_dir=tmp_path / "s",
        )


@pytest.mark.parametrize("teacher", ["offline", "online"])
def test_self_train(data, eps_model, tmp_path, teacher):
    cam = {"scales": [0.5, 1.0], "flip": True}
    teacher_dir = None
    if teacher == "offline":
        teacher_dir = tmp_path / "teacher"
        stats = teacher_maps(
            index=data["index"],
            model_path=eps_model / "model.pt",
            settings=SeedsSettings.from_dict({**cam, "thr": 0.2}),
            out_dir=teacher_dir,
            device="cpu",
        )
        assert stats["images"] == 6 and stats["bytes_per_image"] > 0
        files = sorted((teacher_dir / "maps").glob("*.npz"))
        assert len(files) == 6
        maps = load_maps(files[0])
        assert maps.shape[0] == 6 and maps.max() <= 1.0 and maps.min() >= 0.0
    out = tmp_path / "smaf"
    self_train(
        index=data["index"],
        init_model=eps_model / "model.pt",
        teacher_dir=teacher_dir,
        settings=SelfTrainSettings.from_dict(
            {"teacher": teacher, "teacher_cam": cam, "w_cls": 1.0, **LOOP, "augment": AUG}
        ),
        out_model=out / "model.pt",
        out_history=out / "history.csv",
        state_dir=out / "state",
    )
    student, meta = load_model(out / "model.pt", num_classes=6)
    assert meta["stage"] == "self_train"
    rows = list(csv.DictReader(open(out / "history.csv")))
    assert len(rows) == 3 and float(rows[0]["mac"]) > 0
    init, _ = load_model(eps_model / "model.pt")
    changed = any(
        not torch.equal(a, b)
        for a, b in zip(student.state_dict().values(), init.state_dict().values(), strict=True)
    )
    assert changed


def test_self_train_without_a_pretrained_model_builds_a_fresh_student(data, eps_model, tmp_path):
    """The CLIP base: no pretrained classifier, the student comes from the `model` settings
    (any teacher maps in the seeds' layout; here a classifier's, the cheapest to make)."""
    teacher_dir = tmp_path / "teacher"
    cam = {"scales": [1.0], "flip": False}
    teacher_maps(
        index=data["index"],
        model_path=eps_model / "model.pt",
        settings=SeedsSettings.from_dict({**cam, "thr": 0.2}),
        out_dir=teacher_dir,
        device="cpu",
    )
    params = {"teacher": "offline", "teacher_cam": cam, **LOOP, "augment": AUG}
    out = tmp_path / "smaf"
    run = {
        "index": data["index"],
        "init_model": None,
        "teacher_dir": teacher_dir,
        "out_model": out / "model.pt",
        "out_history": out / "history.csv",
        "state_dir": out / "state",
        "model": MODEL,
    }
    self_train(settings=SelfTrainSettings.from_dict(params), **run)
    student, meta = load_model(out / "model.pt", num_classes=6)
    assert meta["stage"] == "self_train" and meta["method"] == "clip"
    assert student.config.width == MODEL["width"] and student.has_background
    with pytest.raises(ConfigError, match="'online' runs the pretrained classifier"):
        online = SelfTrainSettings.from_dict({**params, "teacher": "online"})
        self_train(settings=online, **{**run, "state_dir": tmp_path / "s"})


def test_make_target_hand_case():
    """Reactivation with thr 0.2 after denoising, background first (Eq. 8)."""
    fused = torch.tensor([[[[0.1]], [[0.5]], [[0.9]]]])  # [1, 3, 1, 1]
    labels = torch.tensor([[1.0, 1.0, 0.0]])  # class 3 absent → zeroed
    target = make_target(fused, labels, SelfTrainSettings(thr=0.2), with_background=True)
    np.testing.assert_allclose(target.flatten().numpy(), [0.2 / 0.5, 0.1 / 0.5, 1.0, 0.0])
    off = make_target(fused, labels, SelfTrainSettings(reactivation=False), with_background=True)
    np.testing.assert_allclose(off.flatten().numpy(), [0.1, 0.5, 0.0])


def test_student_maps_softmax_and_normalised_relu():
    class WithBg:
        has_background = True

    class NoBg:
        has_background = False

    cam = torch.tensor([[[[0.0, 1.0]], [[1.0, 0.0]]]])  # [1, 2, 1, 2]
    p = student_maps(WithBg(), cam, (1, 2))
    np.testing.assert_allclose(p.sum(1).numpy(), 1.0, rtol=1e-6)
    m = student_maps(NoBg(), cam * 4 - 1, (1, 2))  # ReLU then / max per channel
    np.testing.assert_allclose(
        m.flatten().numpy(), [0.0, 3 / (3 + 1e-5), 3 / (3 + 1e-5), 0.0], rtol=1e-6
    )

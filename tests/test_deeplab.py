"""DeepLab-v2 stage: network shapes, ASPP, MSC, frozen BN, solver groups, train/predict/submit."""

from __future__ import annotations

import json
import shutil
import tarfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from smaf.data.index import DatasetIndex, ImageRecord
from smaf.errors import ConfigError, DataError, SmafError
from smaf.io import load_mask, save_mask
from smaf.losses import masked_cross_entropy, resize_labels
from smaf.models.deeplab import (
    ASPP,
    MSC,
    DeepLabConfig,
    build_deeplab,
    load_classifier_backbone,
    load_deeplab,
    save_deeplab,
)
from smaf.settings import DeepLabSettings
from smaf.stages.crf_stage import crf_split
from smaf.stages.deeplab import predict_split, train_deeplab
from smaf.stages.evaluate import evaluate_split
from smaf.stages.submission import SUBMISSION_SUBDIR, make_submission
from smaf.train import OptimConfig, build_optimizer
from smaf.transforms import DeepLabAugment, augment_pair

SMALL = {"backbone": "resnet38d", "width": 0.125, "freeze_bn": False}


def _small(num_classes: int = 6, **kw) -> MSC:
    torch.manual_seed(0)
    return build_deeplab(DeepLabConfig(**{**SMALL, **kw}, num_classes=num_classes))


#: One torch thread: these nets are tiny, and on a busy machine OpenMP threads waiting for a
#: core turn a 30 ms forward into seconds.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def resnet101() -> MSC:
    torch.manual_seed(0)
    return build_deeplab(DeepLabConfig(backbone="resnet101", num_classes=20))


# --------------------------------------------------------------------------- the network


def test_small_backbone_has_output_stride_8_and_msc_outputs():
    model = _small().train()
    outs = model(torch.randn(2, 3, 64, 64))
    # scales 1, 0.75, 0.5 (inputs 64, 48, 32 px → 8, 6, 4) and the max at the 1.0 size
    assert [tuple(o.shape) for o in outs] == [
        (2, 7, 8, 8),
        (2, 7, 6, 6),
        (2, 7, 4, 4),
        (2, 7, 8, 8),
    ]
    model.eval()
    with torch.no_grad():
        assert tuple(model(torch.randn(1, 3, 65, 47)).shape) == (1, 7, 9, 6)  # ⌈H/8⌉, ⌈W/8⌉


def test_small_backbone_drops_the_classifier_dropout():
    model = _small().train()
    assert not any(isinstance(m, nn.Dropout2d | nn.Dropout) for m in model.modules())
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(model(x)[-1], model(x)[-1])  # train mode, yet deterministic


def test_resnet101_is_dilated_deeplab_v2(resnet101):
    bb = resnet101.base.backbone
    assert bb.layer3[1].conv2.dilation == (2, 2) and bb.layer3[0].conv2.stride == (1, 1)
    assert bb.layer4[1].conv2.dilation == (4, 4) and bb.layer4[0].conv2.stride == (1, 1)
    assert len(bb.layer3) == 23  # ResNet-101: 3, 4, 23, 3 blocks
    convs = resnet101.base.aspp.convs
    assert [c.dilation for c in convs] == [(6, 6), (12, 12), (18, 18), (24, 24)]
    assert all(tuple(c.weight.shape) == (21, 2048, 3, 3) for c in convs)
    assert all(c.bias is not None and float(c.bias.detach().abs().max()) == 0 for c in convs)
    std = torch.cat([c.weight.detach().flatten() for c in convs]).std().item()
    assert 0.009 < std < 0.011  # N(0, 0.01²) init
    resnet101.eval()
    with torch.no_grad():  # one scale is enough for the output stride (and 3× cheaper)
        assert tuple(resnet101.base(torch.randn(1, 3, 33, 41)).shape) == (1, 21, 5, 6)


def test_aspp_is_the_sum_of_four_dilated_convs():
    torch.manual_seed(0)
    aspp = ASPP(5, 3, (1, 2, 3, 4))
    for conv in aspp.convs:
        nn.init.normal_(conv.bias)
    x = torch.randn(2, 5, 9, 11)
    manual = sum(
        F.conv2d(x, c.weight, c.bias, padding=r, dilation=r)
        for c, r in zip(aspp.convs, (1, 2, 3, 4), strict=True)
    )
    torch.testing.assert_close(aspp(x), manual)
    # A constant input and all-ones 1-in/1-out kernels: every branch sees 9 taps far from the
    # border, so the sum is 4 branches × 9 × value + the 4 biases.
    ones = ASPP(1, 1, (6, 12, 18, 24))
    for conv in ones.convs:
        nn.init.ones_(conv.weight)
        nn.init.constant_(conv.bias, 0.5)
    out = ones(torch.full((1, 1, 60, 60), 2.0))
    assert out[0, 0, 30, 30].item() == pytest.approx(4 * 9 * 2.0 + 4 * 0.5)


class _Probe(nn.Module):
    """Stand-in network: 'logits' = 8×8 average pools of the input (output stride 8)."""

    num_classes = 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, 8, ceil_mode=True)


def test_msc_returns_all_scales_in_training_and_their_max_in_eval():
    msc = MSC(_Probe(), (1.0, 0.75, 0.5))
    x = torch.randn(1, 3, 64, 80)
    msc.train()
    l1, l75, l50, lmax = msc(x)
    assert l75.shape[-2:] == (6, 8) and l50.shape[-2:] == (4, 5)
    up = [
        F.interpolate(lg, size=l1.shape[-2:], mode="bilinear", align_corners=False)
        for lg in (l75, l50)
    ]
    expected = torch.maximum(l1, torch.maximum(*up))
    torch.testing.assert_close(lmax, expected)
    msc.eval()
    torch.testing.assert_close(msc(x), expected)
    assert (msc(x) >= l1).all()


def test_frozen_bn_stays_in_eval_mode_without_gradients(resnet101):
    resnet101.train()
    bns = [m for m in resnet101.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)
    assert not any(p.requires_grad for m in bns for p in m.parameters())
    small = _small(freeze_bn=True).train()
    before = {k: v.clone() for k, v in small.state_dict().items() if "running" in k}
    small(torch.randn(2, 3, 32, 32))
    after = small.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())  # statistics untouched


def test_param_groups_carry_deeplab_multipliers(resnet101):
    groups = resnet101.param_groups()
    by_name = {g["name"]: g for g in groups}
    assert len(by_name["aspp_weight"]["params"]) == 4 and len(by_name["aspp_bias"]["params"]) == 4
    assert by_name["backbone_other"]["params"] == []  # BN frozen: nothing but conv weights
    trainable = [p for p in resnet101.parameters() if p.requires_grad]
    grouped = [p for g in groups for p in g["params"]]
    assert len(grouped) == len(trainable) == len({id(p) for p in grouped})
    opt = build_optimizer(groups, OptimConfig(lr=2.5e-4, weight_decay=5e-4, momentum=0.9))
    got = {g["name"]: (g["lr"], g["weight_decay"]) for g in opt.param_groups}
    assert got["backbone_weight"] == pytest.approx((2.5e-4, 5e-4))
    assert got["aspp_weight"] == pytest.approx((2.5e-3, 5e-4))
    assert got["aspp_bias"] == pytest.approx((5e-3, 0.0))
    # With trainable BN (demo) its affine parameters join the backbone group without decay.
    small = _small(freeze_bn=False).param_groups()
    assert small[1]["name"] == "backbone_other" and small[1]["params"]
    assert small[1]["weight_decay_mult"] == 0.0 and small[1]["lr_mult"] == 1.0


def test_torchvision_weights_load_into_the_backbone(tmp_path):
    from torchvision.models import resnet50

    torch.manual_seed(1)
    ref = resnet50()
    torch.save(ref.state_dict(), tmp_path / "resnet50.pth")  # includes fc.*, dropped on load
    model = build_deeplab(
        DeepLabConfig(backbone="resnet50", num_classes=3, pretrained=str(tmp_path / "resnet50.pth"))
    )
    torch.testing.assert_close(
        model.base.backbone.layer4[2].conv3.weight, ref.layer4[2].conv3.weight
    )
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(SmafError, match="do not fit"):
        build_deeplab(DeepLabConfig(backbone="resnet50", pretrained=str(tmp_path / "bad.pth")))


def test_classifier_backbone_initialises_the_demo_backbone(tmp_path):
    from smaf.models.build import ModelConfig, build_classifier
    from smaf.models.checkpoint import save_model

    torch.manual_seed(3)
    classifier = build_classifier(ModelConfig(width=0.125, num_classes=6, head="smaf"))
    save_model(tmp_path / "smaf.pt", classifier, {"stage": "self_train"})
    model = _small(num_classes=6)
    aspp_before = model.base.aspp.convs[0].weight.clone()
    load_classifier_backbone(model, tmp_path / "smaf.pt")
    for name, value in classifier.backbone.state_dict().items():
        assert torch.equal(model.base.backbone.state_dict()[name], value), name
    assert torch.equal(model.base.aspp.convs[0].weight, aspp_before)  # the head keeps its init

    wider = build_classifier(ModelConfig(width=0.25, num_classes=6, head="smaf"))
    save_model(tmp_path / "wide.pt", wider, {})
    with pytest.raises(SmafError, match="width 0.25 cannot initialise"):
        load_classifier_backbone(_small(num_classes=6), tmp_path / "wide.pt")
    with pytest.raises(ConfigError, match="needs deeplab.backbone: resnet38d"):
        load_classifier_backbone(
            build_deeplab(DeepLabConfig(backbone="resnet50", num_classes=6)), tmp_path / "smaf.pt"
        )


def test_model_file_roundtrip_and_class_check(tmp_path):
    model = _small(num_classes=4)
    save_deeplab(tmp_path / "m.pt", model, {"stage": "deeplab"})
    loaded, meta = load_deeplab(tmp_path / "m.pt", num_classes=4)
    assert meta == {"stage": "deeplab"} and loaded.scales == (1.0, 0.75, 0.5)
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k])
    with pytest.raises(SmafError, match="4 classes"):
        load_deeplab(tmp_path / "m.pt", num_classes=20)


def test_config_errors():
    with pytest.raises(ConfigError, match="backbone"):
        DeepLabConfig(backbone="vgg16")
    with pytest.raises(ConfigError, match="width"):
        DeepLabConfig(backbone="resnet101", width=0.5)
    with pytest.raises(ConfigError, match="unknown key"):
        DeepLabSettings.from_dict({"backbone": "resnet50", "lr_mult": 3})
    with pytest.raises(ConfigError, match="augment"):
        DeepLabSettings.from_dict({"augment": {"crop_size": 2}})
    s = DeepLabSettings.from_dict({"batch_size": 10, "lr": 2.5e-4, "test": {"flip": True}})
    # grad_accum's default is DeepLab's own (2), not the other stages' (1)
    assert (s.loop.batch_size, s.loop.grad_accum, s.optim.lr) == (10, 2, 2.5e-4)
    assert s.augment.crop_size == 321 and s.augment.scales == (0.5, 0.75, 1.0, 1.25, 1.5)
    assert s.test.flip and s.model.backbone == "resnet101"


# --------------------------------------------------------------------------- loss pieces


def test_resize_labels_samples_pixel_centres_like_pil():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=(13, 17)).astype(np.uint8)
    labels[:3] = 255
    ours = resize_labels(torch.from_numpy(labels).long()[None], (5, 7))[0].numpy()
    pil = np.asarray(Image.fromarray(labels).resize((7, 5), resample=Image.NEAREST))
    np.testing.assert_array_equal(ours, pil)


def test_masked_cross_entropy_ignores_255_and_never_nan():
    logits = torch.randn(1, 3, 2, 2)
    labels = torch.tensor([[[0, 255], [2, 255]]])
    expected = F.cross_entropy(logits, labels, ignore_index=255)
    torch.testing.assert_close(masked_cross_entropy(logits, labels), expected)
    assert masked_cross_entropy(logits, torch.full((1, 2, 2), 255)).item() == 0.0


def test_augment_pads_the_label_with_255_and_the_image_with_the_mean():
    image = np.full((20, 30, 3), 200, np.uint8)
    label = np.ones((20, 30), np.uint8)
    cfg = DeepLabAugment(crop_size=40, scales=(1.0,))
    x, y = augment_pair(image, label, np.random.default_rng(0), cfg)
    assert x.shape == (3, 40, 40) and y.shape == (40, 40) and y.dtype == torch.int64
    pad = y == 255
    assert int((y == 1).sum()) == 20 * 30 and int(pad.sum()) == 40 * 40 - 600
    assert float(x[:, pad].abs().max()) == 0.0  # normalised mean = 0
    # Scale 0.5 halves the image: 10×15 labelled pixels in the crop.
    _, y2 = augment_pair(image, label, np.random.default_rng(0), DeepLabAugment(40, (0.5,)))
    assert int((y2 == 1).sum()) == 10 * 15


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def tiny(tiny_index, tmp_path_factory):
    """The session's tiny dataset, its test index, and pseudo labels = the ground-truth masks
    (standing in for the CRF-refined seeds)."""
    tmp = tmp_path_factory.mktemp("deeplab")
    index = DatasetIndex.read(tiny_index)
    labels = tmp / "pseudo"
    labels.mkdir()
    for image_id in index.ids():
        shutil.copy(index.mask_path(image_id), labels / f"{image_id}.png")
    test_index = tiny_index.with_name("test_index.csv")
    return {"index": tiny_index, "test_index": test_index, "labels": labels, "tmp": tmp}


PARAMS = {
    **SMALL,
    "iterations": 3,
    "batch_size": 4,
    "grad_accum": 2,
    "lr": 2.5e-4,
    "device": "cpu",
    "checkpoint_every": 2,
    "log_every": 1,
    "augment": {"crop_size": 48, "scales": [0.5, 1.0, 1.5], "hflip": True},
    "test": {"flip": False},
}


def test_train_predict_crf_evaluate_and_submit(tiny):
    tmp, index_path = tiny["tmp"], tiny["index"]
    index = DatasetIndex.read(index_path)
    out = tmp / "deeplab"
    history = train_deeplab(
        index=index_path,
        label_dir=tiny["labels"],
        settings=DeepLabSettings.from_dict(PARAMS),
        out_model=out / "model.pt",
        out_history=out / "history.csv",
        state_dir=tmp / "state" / "deeplab",
        threads=1,
    )
    assert [h["step"] for h in history] == [1, 2, 3]
    assert {"loss", "ce_1", "ce_0.75", "ce_0.5", "ce_max"} <= set(history[0])
    assert (out / "history.csv").read_text().startswith("step,lr,loss")
    model, meta = load_deeplab(out / "model.pt", num_classes=6)
    assert meta["stage"] == "deeplab" and meta["iterations"] == 3

    predict_split(
        out / "model.pt",
        index_path,
        "val",
        out / "pred_val",
        logits_dir=out / "logits_val",
        flip=True,
        device="cpu",
        work_dir=tmp / "state" / "pred_val",
    )
    assert not (tmp / "state" / "pred_val").exists()  # published and cleaned up
    crf_split(index_path, "val", out / "logits_val", out / "pred_val_crf", processes=1)
    for image_id in index.ids("val"):
        gt = load_mask(index.mask_path(image_id))
        logits = np.load(out / "logits_val" / f"{image_id}.npy")
        assert logits.shape == (7, -(-gt.shape[0] // 8), -(-gt.shape[1] // 8))
        for folder in ("pred_val", "pred_val_crf"):
            with Image.open(out / folder / f"{image_id}.png") as im:
                assert im.mode == "P" and im.size[::-1] == gt.shape
            assert load_mask(out / folder / f"{image_id}.png").max() <= 6

    for stage, folder in (("deeplab", "pred_val"), ("deeplab_crf", "pred_val_crf")):
        meta = {"dataset": "synthetic", "experiment": "default", "stage": stage, "model": "smaf"}
        record = evaluate_split(
            out / folder,
            index_path,
            "val",
            "SegmentationClass",
            out_csv=tmp / f"{stage}.csv",
            out_json=tmp / f"{stage}.json",
            meta={**meta, "split": "val"},
        )
        saved = json.loads((tmp / f"{stage}.json").read_text())
        assert saved["stage"] == stage and saved["split"] == "val" and 0 <= record["miou"] <= 1

    test_ids = DatasetIndex.read(tiny["test_index"]).ids("test")
    predict_split(out / "model.pt", tiny["test_index"], "test", out / "pred_test", device="cpu")
    tar_path = tmp / "deeplab_submission.tar.gz"
    n = make_submission(out / "pred_test", tiny["test_index"], out / "submission", tar_path)
    assert n == len(test_ids) == 2
    expected = sorted(f"{SUBMISSION_SUBDIR}/{i}.png" for i in test_ids)
    assert SUBMISSION_SUBDIR == "results/VOC2012/Segmentation/comp6_test_cls"
    with tarfile.open(tar_path) as tar:
        assert sorted(tar.getnames()) == expected
        assert all(m.isfile() for m in tar.getmembers())
        with Image.open(tar.extractfile(expected[0])) as im:
            assert im.mode == "P"
    assert (
        sorted(str(p.relative_to(out / "submission")) for p in (out / "submission").rglob("*.png"))
        == expected
    )


def test_submission_refuses_missing_or_out_of_range_predictions(tmp_path):
    records = [ImageRecord(i, f"{i}.jpg", roles={"test"}) for i in ("a", "b")]
    index = DatasetIndex.build(records, [f"c{k}" for k in range(1, 7)])  # C = 6
    save_mask(tmp_path / "pred" / "a.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(DataError, match="1 of 2 test predictions are missing"):
        make_submission(tmp_path / "pred", index, tmp_path / "sub", tmp_path / "s.tar.gz")
    save_mask(tmp_path / "pred" / "b.png", np.full((4, 4), 255, np.uint8))
    with pytest.raises(DataError, match="label 255"):
        make_submission(tmp_path / "pred", index, tmp_path / "sub", tmp_path / "s.tar.gz")
    assert not (tmp_path / "s.tar.gz").exists() and not (tmp_path / "sub").exists()


def test_missing_pseudo_labels_are_a_clear_error(tiny, tmp_path):
    labels = tmp_path / "partial"
    shutil.copytree(tiny["labels"], labels)
    first = DatasetIndex.read(tiny["index"]).ids("train_aug")[0]
    (labels / f"{first}.png").unlink()
    with pytest.raises(DataError, match="pseudo labels are missing"):
        train_deeplab(
            index=tiny["index"],
            label_dir=labels,
            settings=DeepLabSettings.from_dict(PARAMS),
            out_model=tmp_path / "m.pt",
            out_history=tmp_path / "h.csv",
            state_dir=None,
        )

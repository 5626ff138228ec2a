"""The settings that make the `released` preset do what the released code does (issue 14, §2).

Each setting has a default that keeps this project's earlier behaviour (the demo's numbers do
not change) and a value in config/voc2012.yaml that matches bupt-ai-cz/SMAF, halbielee/EPS or
kazuto1011/deeplab-pytorch; the expected values are hand-computed or come from an independent
implementation (PIL for the bicubic resize).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import REPO_ROOT
from helpers import t
from PIL import Image
from torch import nn

from smaf.cam import CAMConfig, attention_maps
from smaf.config import deep_merge, load_schema
from smaf.fusion import fuse_scales
from smaf.optim import OptimConfig, poly_lr, scheduled_step, set_lr
from smaf.stages.self_train import online_teacher, teacher_at
from smaf.transforms import (
    AugmentConfig,
    DeepLabAugment,
    augment_pair,
    normalize,
    train_augment,
)


# --------------------------------------------------------------------- poly lr every N steps
def _sgd() -> torch.optim.SGD:
    p = nn.Parameter(torch.zeros(1))
    return torch.optim.SGD([{"params": [p], "lr": 1.0, "lr_mult": 1.0}], lr=1.0)


def test_poly_lr_is_held_for_lr_update_every_steps_like_deeplab_pytorch():
    # deeplab-pytorch (step_size 10): iterations 1..10 at the base lr, 11..20 at
    # base·(1 − 10/max)^p, ...; our steps count from 0, so step 10 is its iteration 11.
    cfg = OptimConfig(lr=1.0, poly_power=0.9, lr_update_every=10)
    opt = _sgd()
    want = {0: 1.0, 9: 1.0, 10: 0.9**0.9, 19: 0.9**0.9, 20: 0.8**0.9, 25: 0.8**0.9, 99: 0.1**0.9}
    for step, lr in want.items():
        assert set_lr(opt, cfg, step, 100) == pytest.approx(lr)
        assert opt.param_groups[0]["lr"] == pytest.approx(lr)
    assert [scheduled_step(s, 10) for s in (0, 9, 10, 11, 29, 30)] == [0, 0, 10, 10, 20, 30]


def test_poly_lr_every_step_by_default_is_the_plain_poly_schedule():
    cfg = OptimConfig(lr=0.01, poly_power=0.9)
    assert cfg.lr_update_every == 1
    opt = _sgd()
    for step in range(0, 50, 7):
        assert set_lr(opt, cfg, step, 50) == poly_lr(0.01, step, 50, 0.9)


def test_lr_update_every_must_be_a_positive_integer():
    with pytest.raises(Exception, match="lr_update_every"):
        OptimConfig(lr_update_every=0)


# --------------------------------------------------------------------- DeepLab crop padding
def test_bottom_right_pad_puts_the_image_at_the_top_left_like_deeplab_pytorch():
    image = np.full((10, 6, 3), 200, np.uint8)
    label = np.ones((10, 6), np.uint8)
    cfg = DeepLabAugment(crop_size=16, scales=(1.0,), hflip=False, pad="bottom_right")
    for seed in range(5):
        x, y = augment_pair(image, label, np.random.default_rng(seed), cfg)
        assert (y[:10, :6] == 1).all()  # the image at (0, 0) ...
        assert (y[10:] == 255).all() and (y[:, 6:] == 255).all()  # ... padded after it
        assert (x[:, 10:] == 0).all() and (x[:, :, 6:] == 0).all()  # the mean (0) in the padding
        assert torch.allclose(x[:, :10, :6], normalize(image[:1, :1]).expand(3, 10, 6))


def test_random_pad_is_the_default_and_places_the_image_anywhere():
    assert DeepLabAugment().pad == "random"
    image = np.zeros((6, 6, 3), np.uint8)
    label = np.ones((6, 6), np.uint8)
    cfg = DeepLabAugment(crop_size=16, scales=(1.0,), hflip=False)
    corners = set()
    for seed in range(12):
        _, y = augment_pair(image, label, np.random.default_rng(seed), cfg)
        rows, cols = np.nonzero(y.numpy() == 1)
        corners.add((int(rows.min()), int(cols.min())))
    assert len(corners) > 3 and corners != {(0, 0)}


def test_bottom_right_pad_still_crops_a_longer_side_at_random():
    # Wider than the crop, shorter in height: a random column offset, the row offset 0.
    image = np.zeros((6, 40, 3), np.uint8)
    label = np.tile(np.arange(40, dtype=np.uint8), (6, 1))
    cfg = DeepLabAugment(crop_size=16, scales=(1.0,), hflip=False, pad="bottom_right")
    starts = set()
    for seed in range(10):
        _, y = augment_pair(image, label, np.random.default_rng(seed), cfg)
        assert (y[6:] == 255).all()
        starts.add(int(y[0, 0]))
        assert y[0].tolist() == list(range(int(y[0, 0]), int(y[0, 0]) + 16))
    assert len(starts) > 1


def test_unknown_pad_is_refused():
    with pytest.raises(ValueError, match="pad"):
        DeepLabAugment(pad="center")


# ------------------------------------------------------------- image / saliency resize mode
def _resized_region(cfg: AugmentConfig, image, saliency):
    extras = {"saliency": (saliency.astype(np.float32) / 255.0, "image", 0.0)}
    aug = train_augment(image, np.random.default_rng(0), cfg, extras, pad="bottom_right")
    h, w = aug.valid.nonzero().max(0).values.tolist()
    return aug.image[:, : h + 1, : w + 1], aug.extras["saliency"][: h + 1, : w + 1]


def test_bicubic_resize_mode_is_pils_bicubic_for_image_and_saliency():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    saliency = rng.integers(0, 256, (40, 60), dtype=np.uint8)
    base = dict(crop_size=48, resize_long=(36, 36), hflip=False, color_jitter=None)
    x, sal = _resized_region(AugmentConfig(**base, resize_mode="bicubic"), image, saliency)
    assert x.shape[1:] == (24, 36)
    # PIL (what EPS/SMAF's RandomResizeLong uses): Image.resize(..., CUBIC).
    pil_img = np.asarray(Image.fromarray(image).resize((36, 24), Image.BICUBIC))
    pil_sal = np.asarray(Image.fromarray(saliency).resize((36, 24), Image.BICUBIC)) / 255.0
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    err_img = ((x - normalize(pil_img)) * std * 255).abs()  # in grey levels
    assert err_img.mean() < 1.0 and err_img.max() <= 3.5
    err_sal = (sal - torch.from_numpy(pil_sal).float()).abs()
    assert err_sal.mean() < 1.5 / 255 and err_sal.max() <= 4 / 255
    assert 0 <= sal.min() and sal.max() <= 1  # saturates like PIL's 8-bit result

    # The default (bilinear) is further from PIL's bicubic: the setting does something.
    xb, _ = _resized_region(AugmentConfig(**base), image, saliency)
    assert ((xb - normalize(pil_img)) * std * 255).abs().mean() > err_img.mean()


def test_default_resize_mode_keeps_the_earlier_saliency_resize():
    # 'image' extras with resize_mode bilinear = the bilinear extras of before (demo unchanged).
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (30, 20, 3), dtype=np.uint8)
    sal = rng.random((30, 20)).astype(np.float32)
    cfg = AugmentConfig(crop_size=24, resize_long=(24, 40), hflip=True, color_jitter=None)
    a = train_augment(image, np.random.default_rng(5), cfg, {"s": (sal, "image", 0.0)})
    b = train_augment(image, np.random.default_rng(5), cfg, {"s": (sal, "bilinear", 0.0)})
    assert torch.equal(a.image, b.image) and torch.equal(a.extras["s"], b.extras["s"])


# ------------------------------------------------------------------ align_corners of maps
def test_teacher_maps_follow_the_random_resize_with_align_corners_true():
    # A 1x2 ramp [0, 1] stretched to 8 px: align_corners=True puts the samples on the ends,
    # k/7; False on the pixel centres, clamp(k/4 - 3/8, 0, 1).
    image = np.zeros((1, 2, 3), np.uint8)
    ramp = t([[[0.0, 1.0]]])  # [K=1, 1, 2]
    cfg = AugmentConfig(crop_size=8, resize_long=(8, 8), hflip=False, color_jitter=None)
    got = {}
    for mode in ("bilinear_aligned", "bilinear"):
        extras = {"m": (ramp, mode, 0.0)}
        aug = train_augment(image, np.random.default_rng(0), cfg, extras, pad="bottom_right")
        got[mode] = aug.extras["m"][0, 0].tolist()
    assert got["bilinear_aligned"] == pytest.approx([k / 7 for k in range(8)])
    assert got["bilinear"] == pytest.approx([0, 0, 0.125, 0.375, 0.625, 0.875, 1, 1])


def test_offline_target_resize_uses_align_corners():
    fused = t([[[[0.0, 3.0]]]])  # [1, 1, 1, 2]
    assert teacher_at(fused, (1, 4), True)[0, 0, 0].tolist() == pytest.approx([0, 1, 2, 3])
    assert teacher_at(fused, (1, 4), False)[0, 0, 0].tolist() == pytest.approx([0, 0.75, 2.25, 3])


def test_student_logits_are_upsampled_with_align_corners_before_the_softmax():
    # Background logits [0, 3], class logits [0, 0]: the background probability is the
    # sigmoid of the resized background logit.
    cam = t([[[[0.0, 3.0]], [[0.0, 0.0]]]])  # [1, 2, 1, 2]
    sig = lambda v: [1 / (1 + np.exp(-x)) for x in v]  # noqa: E731
    aligned = attention_maps(cam, True, size=(1, 4), keep_background=True, align_corners=True)
    plain = attention_maps(cam, True, size=(1, 4), keep_background=True)
    assert aligned[0, 0, 0].tolist() == pytest.approx(sig([0, 1, 2, 3]))
    assert plain[0, 0, 0].tolist() == pytest.approx(sig([0, 0.75, 2.25, 3]))


# ----------------------------------------------------------- online teacher: valid region
def test_a_peak_in_the_padding_no_longer_sets_the_max():
    total = t([[[[0.5, 0.25, 4.0]]]])  # the last pixel is padding with a spurious peak
    valid = t([[[[1, 1, 0]]]])
    assert fuse_scales([total], (1, 3), valid=valid)[0, 0, 0].tolist() == [1.0, 0.5, 0.0]
    # Without the mask (a whole image, the offline path) the max is over every pixel.
    assert fuse_scales([total], (1, 3))[0, 0, 0].tolist() == [0.125, 0.0625, 1.0]
    # eps (the released +1e-5) divides by the valid max + eps.
    got = fuse_scales([total], (1, 3), eps=0.5, valid=valid.bool()[:, 0])[0, 0, 0]
    assert got.tolist() == pytest.approx([0.5, 0.25, 0.0])


class PaddingLover(nn.Module):
    """A frozen 'teacher' whose attention is high where the input is the mean (the padding)."""

    has_background = False

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"cam": 1.0 - F.avg_pool2d(x[:, :1], 4)}  # [B, 1, h/4, w/4]


def test_online_teacher_normalises_over_the_valid_region_then_masks_the_padding():
    x = torch.zeros(1, 3, 16, 16)
    x[:, :, :8, :8] = 0.5  # the image: top-left 8x8; the rest is padding (0)
    valid = torch.zeros(1, 16, 16, dtype=torch.bool)
    valid[:, :8, :8] = True
    fused = online_teacher(PaddingLover(), x, valid, (4, 4), CAMConfig(scales=(1.0,), flip=False))
    assert fused.shape == (1, 1, 4, 4)
    assert torch.allclose(fused[0, 0, :2, :2], torch.ones(2, 2))  # the image's own max: 1
    assert fused[0, 0, 2:].abs().max() == 0 and fused[0, 0, :, 2:].abs().max() == 0


# ---------------------------------------------------------------------------- the presets
@pytest.fixture(scope="module")
def configs():
    demo = yaml.safe_load((REPO_ROOT / "config.yaml").read_text())
    released = deep_merge(demo, yaml.safe_load((REPO_ROOT / "config/voc2012.yaml").read_text()))
    paper = deep_merge(released, yaml.safe_load((REPO_ROOT / "config/paper.yaml").read_text()))
    return demo, released, paper


def test_released_preset_has_the_released_codes_values(configs):
    _, released, paper = configs
    st, dl = released["self_train"], released["deeplab"]
    assert released["train"]["amp"] is False  # fp32 (autocast commented out)
    assert st["augment"]["color_jitter"] is None  # no jitter in the student
    assert st["align_corners"] is True
    assert st["augment"]["resize_mode"] == "bicubic"
    assert released["pretrain"]["augment"]["resize_mode"] == "bicubic"
    assert released["pretrain"]["augment"]["color_jitter"] == [0.3, 0.3, 0.3, 0.1]  # EPS: on
    assert dl["lr_update_every"] == 10 and dl["augment"]["pad"] == "bottom_right"
    assert dl["backbone"] == "resnet101_caffe" and dl["width"] == 1.0
    assert dl["pretrained"] == "resources/weights/deeplab_resnet101/init.caffemodel"
    assert paper["self_train"]["teacher"] == "online" and paper["train"]["amp"] is False


def test_new_keys_default_to_the_earlier_behaviour(configs):
    demo, _, _ = configs
    schema = load_schema(REPO_ROOT / "workflow/schemas/config.schema.yaml")
    props = schema["properties"]
    defaults = {
        ("self_train", "align_corners"): False,
        ("deeplab", "lr_update_every"): 1,
        ("pretrain", "init_checkpoint"): None,
        ("deeplab", "init_checkpoint"): None,
    }
    for (section, key), value in defaults.items():
        assert props[section]["properties"][key]["default"] == value
        assert demo[section][key] == value
    assert props["deeplab"]["properties"]["augment"]["properties"]["pad"]["default"] == "random"
    assert schema["$defs"]["augment"]["properties"]["resize_mode"]["default"] == "bilinear"
    assert demo["deeplab"]["augment"]["pad"] == "random"
    for section in ("pretrain", "self_train"):
        assert demo[section]["augment"]["resize_mode"] == "bilinear"
    assert demo["train"]["amp"] is True

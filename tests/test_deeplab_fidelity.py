"""DeepLab's augmentation and MSC as deeplab-pytorch computes them (hand-computed cases)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from smaf.models.deeplab import MSC, scale_input
from smaf.provenance import deeplab_init
from smaf.transforms import DeepLabAugment, _resize, augment_pair


def test_label_downsampling_takes_the_pixel_under_each_output_centre():
    # 5 → 3: output pixel i covers [i·5/3, (i+1)·5/3); its centre (i + ½)·5/3 lies in source
    # pixel 0, 2, 4. Legacy "nearest" took floor(i·5/3) = 0, 1, 3 (half a pixel shifted).
    label = (np.arange(5)[:, None] * 10 + np.arange(5)[None]).astype(np.uint8)
    out = _resize(torch.from_numpy(label), (3, 3), "nearest").numpy()
    expected = np.array([[0, 2, 4], [20, 22, 24], [40, 42, 44]], np.uint8)
    np.testing.assert_array_equal(out, expected)
    pil = np.asarray(Image.fromarray(label).resize((3, 3), resample=Image.NEAREST))
    np.testing.assert_array_equal(out, pil)  # deeplab-pytorch's label resize


def test_random_scale_truncates_each_side_like_deeplab_pytorch():
    # int(333 · 0.75) = int(249.75) = 249 and int(500 · 0.75) = 375 (a rounded, aspect-kept
    # long side gave 250 × 375).
    image = np.full((333, 500, 3), 100, np.uint8)
    label = np.ones((333, 500), np.uint8)
    cfg = DeepLabAugment(crop_size=512, scales=(0.75,), hflip=False, pad="bottom_right")
    _, y = augment_pair(image, label, np.random.default_rng(0), cfg)
    rows, cols = np.nonzero(y.numpy() == 1)
    assert (rows.max() + 1, cols.max() + 1) == (249, 375)
    assert int((y == 1).sum()) == 249 * 375
    assert (y[249:] == 255).all() and (y[:, 375:] == 255).all()


class _Recorder(nn.Module):
    """Stand-in network that records its inputs; 'logits' = 8×8 average pools."""

    num_classes = 2

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x)
        return F.avg_pool2d(x, 8, ceil_mode=True)


def test_msc_resizes_by_scale_factor_like_deeplab_pytorch():
    torch.manual_seed(0)
    x = torch.randn(1, 3, 65, 97)
    base = _Recorder()
    MSC(base, (1.0, 0.75, 0.5)).eval()(x)
    # deeplab-pytorch: F.interpolate(x, scale_factor=p, mode="bilinear", align_corners=False)
    assert [tuple(t.shape[-2:]) for t in base.seen] == [(65, 97), (48, 72), (32, 48)]
    for seen, s in zip(base.seen[1:], (0.75, 0.5), strict=True):
        reference = F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False)
        torch.testing.assert_close(seen, reference, rtol=0, atol=0)
    # Resizing to ⌊s·H⌋ × ⌊s·W⌋ samples a different grid at odd sizes.
    by_size = F.interpolate(x, size=(48, 72), mode="bilinear", align_corners=False)
    assert not torch.allclose(base.seen[1], by_size)


def test_scale_input_keeps_a_vanishing_side_at_one_pixel():
    assert scale_input(torch.zeros(1, 3, 1, 9), 0.5).shape[-2:] == (1, 4)


def test_table1_init_says_the_authors_train2_model_has_seen_val():
    train2 = deeplab_init({"init_checkpoint": "w/train2_iter_20000.caffemodel"})
    assert "fine-tuned on val: no val score" in train2
    assert "val" not in deeplab_init({"init_checkpoint": "w/train_iter_20000.caffemodel"})

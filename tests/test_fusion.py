"""Eq. 5-9 against hand-computed cases (CPU), plus a CUDA parity check when a GPU is present."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import t

from smaf.fusion import (
    denoise,
    fuse_scales,
    multiscale_maps,
    reactivate,
    undo_flip,
)
from smaf.losses import mac_loss

# --------------------------------------------------------------------------- fuse_scales (5-6)


def test_fuse_scales_hand_case() -> None:
    # Map A is 1x1: bilinear upsampling of a constant is the constant, so A -> [[2, 2], [2, 2]].
    # Map B is already 2x2. Channel 0: A + B = [[3, 4], [5, 6]] -> / 6.
    # Channel 1: both maps are zero -> must stay exactly zero (no 0/0 = NaN).
    a = t([[[[2.0]], [[0.0]]]])  # [1, 2, 1, 1]
    b = t([[[[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [0.0, 0.0]]]])  # [1, 2, 2, 2]
    out = fuse_scales([a, b], (2, 2))
    assert out.shape == (1, 2, 2, 2)
    expected0 = t([[3 / 6, 4 / 6], [5 / 6, 6 / 6]])
    torch.testing.assert_close(out[0, 0], expected0)
    assert torch.equal(out[0, 1], torch.zeros(2, 2))
    assert not torch.isnan(out).any()


def test_fuse_scales_bilinear_align_corners_false() -> None:
    # 1x2 -> 1x4 with align_corners=False: output pixel i samples source x = (i + 0.5) / 2 - 0.5
    # = -0.25, 0.25, 0.75, 1.25 -> clamped/interpolated values on [0, 4]: 0, 1, 3, 4.
    # (align_corners=True would give 0, 4/3, 8/3, 4.) The max is 4, so F = [0, .25, .75, 1].
    m = t([[[[0.0, 4.0]]]])  # [1, 1, 1, 2]
    out = fuse_scales([m], (1, 4))
    torch.testing.assert_close(out[0, 0, 0], t([0.0, 0.25, 0.75, 1.0]))


def test_fuse_scales_normalises_each_image_and_class_separately() -> None:
    # Batch of 2, 2 classes, each (b, c) channel with its own max: 2, 8, 0.5, 1.
    m = t(
        [
            [[[1.0, 2.0]], [[8.0, 4.0]]],
            [[[0.5, 0.25]], [[0.0, 1.0]]],
        ]
    )  # [2, 2, 1, 2]
    out = fuse_scales([m, m], (1, 2))  # the sum doubles every value; the max doubles too
    torch.testing.assert_close(out, t([[[[0.5, 1.0]], [[1.0, 0.5]]], [[[1.0, 0.5]], [[0.0, 1.0]]]]))
    assert out.amax(dim=(-2, -1)).eq(1).all()


def test_fuse_scales_eps_option_matches_released_formula() -> None:
    m = t([[[[1.0, 3.0]]]])
    out = fuse_scales([m], (1, 2), eps=1e-5)
    torch.testing.assert_close(out, m / (3.0 + 1e-5))


def test_fuse_scales_does_not_modify_input_and_validates() -> None:
    m = t([[[[1.0, 3.0]]]])
    before = m.clone()
    fuse_scales([m], (1, 2))
    assert torch.equal(m, before)
    with pytest.raises(ValueError):
        fuse_scales([], (1, 2))
    with pytest.raises(ValueError):
        fuse_scales([m, torch.zeros(1, 3, 1, 2)], (1, 2))  # channel mismatch
    with pytest.raises(ValueError):
        fuse_scales([m[0]], (1, 2))  # 3-D


# --------------------------------------------------------------------------- denoise (Sec. 3.3)


def test_denoise_zeroes_absent_classes() -> None:
    fused = torch.ones(2, 3, 2, 2)
    labels = t([[1, 0, 1], [0, 1, 0]])
    out = denoise(fused, labels)
    assert out[0, 0].eq(1).all() and out[0, 1].eq(0).all() and out[0, 2].eq(1).all()
    assert out[1, 0].eq(0).all() and out[1, 1].eq(1).all() and out[1, 2].eq(0).all()
    # Boolean / integer labels work the same.
    assert torch.equal(denoise(fused, labels.bool()), out)
    assert torch.equal(denoise(fused, labels.long()), out)
    with pytest.raises(ValueError):
        denoise(fused, labels[:, :2])


# --------------------------------------------------------------------------- reactivate (Eq. 8)


def test_reactivate_hand_case_thr_0_2() -> None:
    # Three pixels, two classes, thr 0.2 prepended as channel 0:
    #   p0: (0.2 | 0.5, 0.1)  max 0.5 -> (0.4, 1.0, 0.2)
    #   p1: (0.2 | 0.1, 0.05) max 0.2 (all classes < thr) -> bg 1, classes x5: (1.0, 0.5, 0.25)
    #   p2: (0.2 | 0.0, 0.0)  max 0.2 -> (1.0, 0.0, 0.0)
    fused = t([[[[0.5, 0.1, 0.0]], [[0.1, 0.05, 0.0]]]])  # [1, 2, 1, 3]
    out = reactivate(fused, 0.2)
    assert out.shape == (1, 3, 1, 3)
    expected = t([[[[0.4, 1.0, 1.0]], [[1.0, 0.5, 0.0]], [[0.2, 0.25, 0.0]]]])
    torch.testing.assert_close(out, expected)
    assert out.amax(dim=1).eq(1).all()


@pytest.mark.parametrize("thr", [0.0, -0.1, float("nan")])
def test_reactivate_rejects_non_positive_thr(thr: float) -> None:
    with pytest.raises(ValueError):
        reactivate(torch.zeros(1, 1, 1, 1), thr)


# --------------------------------------------------------------------------- mac_loss (Eq. 7/9)


def test_mac_loss_hand_value() -> None:
    # Image 0: channel 0 diff (0, 1) -> mean sq 0.5; channel 1 diff (0.5, 0) -> 0.125;
    #          mean over channels 0.3125.
    # Image 1: channel 0 diff (1, 1) -> 1; channel 1 diff (0, 0) -> 0; mean 0.5.
    # Batch mean: (0.3125 + 0.5) / 2 = 0.40625.
    pred = t([[[[0.0, 1.0]], [[1.0, 1.0]]], [[[1.0, 1.0]], [[0.0, 0.0]]]])
    target = t([[[[0.0, 0.0]], [[0.5, 1.0]]], [[[0.0, 0.0]], [[0.0, 0.0]]]])
    loss = mac_loss(pred, target)
    torch.testing.assert_close(loss, torch.tensor(0.40625))
    # Same as the explicit Eq. 7 formula and as F.mse_loss (documented equivalence).
    explicit = ((pred - target) ** 2).mean(dim=(-2, -1)).mean(dim=1).mean()
    torch.testing.assert_close(loss, explicit)
    torch.testing.assert_close(loss, F.mse_loss(pred, target))
    with pytest.raises(ValueError):
        mac_loss(pred, target[:, :, :, :1])


# --------------------------------------------------------------------------- multiscale_maps


def _asymmetric_forward(x: torch.Tensor) -> torch.Tensor:
    """Cumulative sum along the width of channel 0: not flip-equivariant, shape-preserving."""
    return x[:, :1].cumsum(dim=-1)


def test_multiscale_maps_unflips_with_asymmetric_forward() -> None:
    torch.manual_seed(0)
    image = torch.rand(2, 3, 4, 6)
    calls: list[tuple[int, ...]] = []

    def forward(x: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(x.shape))
        return _asymmetric_forward(x)

    maps = multiscale_maps(forward, image, scales=(1.0, 0.5), flip=True)
    # One forward per scale, original and flipped copy batched together.
    assert calls == [(4, 3, 4, 6), (4, 3, 2, 3)]
    assert len(maps) == 4
    assert [tuple(m.shape) for m in maps] == [
        (2, 1, 4, 6),
        (2, 1, 4, 6),
        (2, 1, 2, 3),
        (2, 1, 2, 3),
    ]
    # Scale 1 is untouched: the plain output is the cumsum from the left ...
    torch.testing.assert_close(maps[0], image[:, :1].cumsum(-1))
    # ... the flipped branch, un-flipped, is the cumsum from the right (reverse cumsum), which
    # is what un-flipping must give for this forward.
    from_right = image[:, :1].flip(-1).cumsum(-1).flip(-1)
    torch.testing.assert_close(maps[1], from_right)
    # Scale 0.5 input is the bilinear (align_corners=False) resize.
    small = F.interpolate(image, size=(2, 3), mode="bilinear", align_corners=False)
    torch.testing.assert_close(maps[2], small[:, :1].cumsum(-1))
    torch.testing.assert_close(maps[3], small[:, :1].flip(-1).cumsum(-1).flip(-1))


def test_multiscale_maps_flip_equivariant_forward_gives_identical_maps() -> None:
    image = torch.rand(1, 3, 5, 7)
    maps = multiscale_maps(lambda x: x * 2, image, scales=(1.0,), flip=True)
    torch.testing.assert_close(maps[0], image * 2)
    torch.testing.assert_close(maps[1], image * 2)
    no_flip = multiscale_maps(lambda x: x, image, scales=(1.0, 2.0), flip=False)
    assert [tuple(m.shape) for m in no_flip] == [(1, 3, 5, 7), (1, 3, 10, 14)]


def test_undo_flip_is_involution() -> None:
    x = torch.arange(6.0).view(1, 1, 2, 3)
    assert torch.equal(undo_flip(x)[0, 0, 0], t([2.0, 1.0, 0.0]))
    assert torch.equal(undo_flip(undo_flip(x)), x)


def test_teacher_chain_end_to_end() -> None:
    # fuse -> denoise -> reactivate on random non-negative maps: shapes and invariants.
    torch.manual_seed(1)
    image = torch.rand(2, 3, 8, 8)
    forward = lambda x: F.softmax(F.avg_pool2d(x.repeat(1, 2, 1, 1)[:, :5], 2), dim=1)  # noqa: E731
    maps = multiscale_maps(forward, image, scales=(0.5, 1.0, 1.5, 2.0), flip=True)
    fused = fuse_scales([m[:, 1:] for m in maps], (4, 4))  # [2, 4, 4, 4], fg only
    labels = t([[1, 0, 0, 1], [0, 1, 0, 0]])
    target = reactivate(denoise(fused, labels), 0.2)
    assert target.shape == (2, 5, 4, 4)
    assert target.amax(dim=1).eq(1).all()
    assert target[0, 2].eq(0).all() and target[1, 1].eq(0).all()  # absent -> 0 (index +1)
    assert target.min() >= 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_fusion_on_cuda_matches_cpu() -> None:
    torch.manual_seed(2)
    dev = torch.device("cuda")
    maps = [torch.rand(2, 3, 5, 6), torch.rand(2, 3, 9, 11)]
    maps[0][1, 2] = 0
    maps[1][1, 2] = 0
    labels = t([[1, 1, 0], [0, 1, 1]])
    cpu = reactivate(denoise(fuse_scales(maps, (10, 12)), labels), 0.2)
    gpu = reactivate(denoise(fuse_scales([m.to(dev) for m in maps], (10, 12)), labels.to(dev)), 0.2)
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-5, atol=1e-6)
    image = torch.rand(1, 3, 8, 8)
    ms_cpu = multiscale_maps(_asymmetric_forward, image, (0.5, 1.0), flip=True)
    ms_gpu = multiscale_maps(_asymmetric_forward, image.to(dev), (0.5, 1.0), flip=True)
    for a, b in zip(ms_cpu, ms_gpu, strict=True):
        torch.testing.assert_close(b.cpu(), a, rtol=1e-5, atol=1e-5)
    pred = torch.rand(2, 4, 3, 3)
    torch.testing.assert_close(
        mac_loss(pred.to(dev), cpu[:, :, :3, :3].to(dev)).cpu(), mac_loss(pred, cpu[:, :, :3, :3])
    )

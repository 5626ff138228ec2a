"""Eq. 3, the EPS saliency loss and Eq. 1 against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import t

from smaf.losses import classification_loss, eps_saliency_loss, smaf_loss


def test_classification_loss_hand_value() -> None:
    # logits (0, 2), labels (1, 0):
    #   class 1 present: -log sigmoid(0) = log 2                = 0.693147...
    #   class 2 absent:  -log(1 - sigmoid(2)) = log(1 + e^2)    = 2.126928...
    # mean over classes = 1.410038...
    loss = classification_loss(t([[0.0, 2.0]]), t([[1, 0]]))
    expected = (math.log(2.0) + math.log(1.0 + math.e**2)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # Batch mean: a second image with the mirrored case gives the same value.
    loss2 = classification_loss(t([[0.0, 2.0], [2.0, 0.0]]), t([[1, 0], [0, 1]]))
    assert loss2.item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError):
        classification_loss(t([[0.0, 2.0]]), t([[1, 0, 1]]))


# Probabilities per pixel (bg, c1, c2, c3) of a 2x2 CAM; logits = log(p) so softmax(logits) = p.
#   (0,0): .1 .7 .1 .1    (0,1): .1 .2 .1 .6
#   (1,0): .7 .1 .1 .1    (1,1): .1 .1 .6 .2
_P = [
    [[0.1, 0.1], [0.7, 0.1]],  # bg
    [[0.7, 0.2], [0.1, 0.1]],  # c1
    [[0.1, 0.1], [0.1, 0.6]],  # c2
    [[0.1, 0.6], [0.1, 0.2]],  # c3
]
_SAL = [[1.0, 0.8], [0.0, 0.2]]  # rounds to [[1, 1], [0, 0]]


def _cam() -> torch.Tensor:
    return torch.log(t([_P]))  # [1, 4, 2, 2]


def test_eps_saliency_loss_hand_case() -> None:
    # Labels: c1 present, c2 present, c3 absent.
    # Overlap ratios (denominator: sum of round(p_c) + 1e-4 per pixel = + 4e-4 here):
    #   c1: round = [[1,0],[0,0]], overlap with round(sal) = 1 -> 1 / 1.0004 = 0.9996 > 0.4: fg
    #   c2: round = [[0,0],[0,1]], overlap 0                   -> 0 <= 0.4: joins background
    #   c3: ratio would be 1 / 1.0004, but it is absent -> neither fg nor bg.
    # fg        = p_c1              = [[.7, .2], [.1, .1]]
    # bg        = 1 - (p_bg + p_c2) = [[.8, .8], [.2, .3]]
    # lam = 0.5: sal_pred = [[.75, .5], [.15, .2]]
    # diff to sal = [[-.25, -.3], [.15, 0]] -> squares .0625 + .09 + .0225 + 0 = .175 -> /4
    # loss = 0.04375
    loss, sal_pred = eps_saliency_loss(_cam(), t([[_SAL]]), t([[1, 1, 0]]), tau=0.4, lam=0.5)
    torch.testing.assert_close(sal_pred, t([[[[0.75, 0.5], [0.15, 0.2]]]]))
    assert loss.item() == pytest.approx(0.04375, rel=1e-5)

    # lam = 0.3: sal_pred = .3 fg + .7 bg = [[.77, .62], [.17, .24]]
    # diff = [[-.23, -.18], [.17, .04]] -> .0529 + .0324 + .0289 + .0016 = .1158 -> /4 = .02895
    loss, sal_pred = eps_saliency_loss(_cam(), t([_SAL]), t([[1, 1, 0]]), tau=0.4, lam=0.3)
    torch.testing.assert_close(sal_pred, t([[[[0.77, 0.62], [0.17, 0.24]]]]))
    assert loss.item() == pytest.approx(0.02895, rel=1e-5)


def test_eps_saliency_loss_absent_class_counts_only_in_bg_term() -> None:
    # Same CAM, only c1 present: c2 is now absent too, so bg = 1 - p_bg = [[.9, .9], [.3, .9]]
    # and fg = p_c1 = [[.7, .2], [.1, .1]]; lam = .5 -> [[.8, .55], [.2, .5]].
    _, sal_pred = eps_saliency_loss(_cam(), t([_SAL]), t([[1, 0, 0]]))
    torch.testing.assert_close(sal_pred, t([[[[0.8, 0.55], [0.2, 0.5]]]]))


def test_eps_saliency_loss_ratio_epsilon_is_per_pixel() -> None:
    # c1 ratio = 1 / (1 + 1e-4 * 4) = 0.99960. With tau = 0.99975 it must be background (a
    # single 1e-4 would give 0.99990 > tau). Then bg = 1 - (p_bg + p_c1 + p_c2) and fg = 0:
    # bg = [[.1, .6], [.1, .2]] (= p_c3), sal_pred = .5 * bg = [[.05, .3], [.05, .1]].
    _, sal_pred = eps_saliency_loss(_cam(), t([_SAL]), t([[1, 1, 0]]), tau=0.99975)
    torch.testing.assert_close(sal_pred, t([[[[0.05, 0.3], [0.05, 0.1]]]]))


def test_eps_saliency_loss_resizes_saliency_nearest_like_eps() -> None:
    # A 4x4 saliency to the 2x2 CAM: legacy "nearest" picks source rows/cols floor(i * 2) = 0, 2.
    sal4 = torch.zeros(1, 1, 4, 4)
    sal4[0, 0, 0::2, 0::2] = t(_SAL)
    sal4[0, 0, 1::2, :] = 0.33  # never sampled by nearest
    sal4[0, 0, :, 1::2] = 0.33
    loss_big, pred_big = eps_saliency_loss(_cam(), sal4, t([[1, 1, 0]]))
    loss_small, pred_small = eps_saliency_loss(_cam(), t([[_SAL]]), t([[1, 1, 0]]))
    torch.testing.assert_close(loss_big, loss_small)
    torch.testing.assert_close(pred_big, pred_small)
    # Bilinear (align_corners=False, exact 2x downscale = mean of each 2x2 block) differs.
    loss_bil, _ = eps_saliency_loss(_cam(), sal4, t([[1, 1, 0]]), saliency_resize="bilinear")
    assert not torch.isclose(loss_bil, loss_small)


def test_eps_saliency_loss_gradient_and_validation() -> None:
    cam = _cam().requires_grad_(True)
    loss, _ = eps_saliency_loss(cam, t([_SAL]), t([[1, 1, 0]]))
    loss.backward()
    assert cam.grad is not None and torch.isfinite(cam.grad).all()
    with pytest.raises(ValueError):
        eps_saliency_loss(_cam(), t([_SAL]), t([[1, 1]]))  # labels [B, C] with C = 3
    with pytest.raises(ValueError):
        eps_saliency_loss(_cam(), t([_SAL]), t([[1, 1, 0]]), lam=1.5)


def test_smaf_loss_combination() -> None:
    # mac: one channel, diff (1, 0) -> 0.5.  cls: logits (0, 2), labels (1, 0) -> 1.410038.
    pred = t([[[[1.0, 0.0]]]])
    target = t([[[[0.0, 0.0]]]])
    logits, labels = t([[0.0, 2.0]]), t([[1, 0]])
    cls = (math.log(2.0) + math.log(1.0 + math.e**2)) / 2
    out = smaf_loss(pred, target, logits, labels, alpha=100.0, w_cls=1.0)
    assert out["mac"].item() == pytest.approx(0.5)
    assert out["cls"].item() == pytest.approx(cls, rel=1e-6)
    assert out["loss"].item() == pytest.approx(cls + 50.0, rel=1e-6)
    # Released code: L_cls commented out -> w_cls = 0, no logits needed.
    released = smaf_loss(pred, target, alpha=100.0, w_cls=0.0)
    assert released["loss"].item() == pytest.approx(50.0)
    assert released["cls"].item() == 0.0
    with pytest.raises(ValueError):
        smaf_loss(pred, target, w_cls=1.0)


def test_smaf_loss_does_not_backprop_into_target() -> None:
    pred = torch.rand(1, 3, 2, 2, requires_grad=True)
    target = torch.rand(1, 3, 2, 2, requires_grad=True)
    smaf_loss(pred, target, w_cls=0.0)["loss"].backward()
    assert pred.grad is not None and target.grad is None

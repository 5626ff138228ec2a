"""Training losses: classification (Eq. 3), EPS saliency loss (stage 2), the SMAF loss (Eq. 1, 7, 9)
and DeepLab's multi-scale cross-entropy (stage 6).

Channel convention (project-wide): CAM logits with a background channel are ``[B, C+1, h, w]``
with background at index 0; image labels are ``[B, C]`` 0/1 for classes 1..C. (EPS itself puts
the background channel last; everything here is written for index 0.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from smaf.io import IGNORE_INDEX

__all__ = [
    "classification_loss",
    "eps_saliency_loss",
    "mac_loss",
    "masked_cross_entropy",
    "msc_loss",
    "resize_labels",
    "smaf_loss",
]

#: Added to every pixel of the rounded class map in the EPS overlap-ratio denominator, exactly as
#: in the EPS code, so the effective epsilon is ``EPS_RATIO_EPS * h * w`` (0.31 for a 56x56 CAM).
EPS_RATIO_EPS = 1e-4


def classification_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Multi-label soft-margin loss on GAP scores (Eq. 3).

    ``L_cls = -1/K sum_k [y_k log sigmoid(s_k) + (1 - y_k) log(1 - sigmoid(s_k))]``, averaged over
    the batch (Eq. 3 as printed lacks the leading minus; this is the loss that is minimised).
    Identical to :func:`torch.nn.functional.multilabel_soft_margin_loss`.

    Args:
        logits: ``[B, C]`` class scores for classes 1..C (no background).
        labels: ``[B, C]`` 0/1 targets.

    Returns:
        Scalar tensor.
    """
    if logits.ndim != 2 or logits.shape != labels.shape:
        raise ValueError(
            f"logits and labels must both be [B, C], got {tuple(logits.shape)} and "
            f"{tuple(labels.shape)}"
        )
    return F.multilabel_soft_margin_loss(logits, labels.to(logits.dtype))


def eps_saliency_loss(
    cam: Tensor,
    saliency: Tensor,
    labels: Tensor,
    tau: float = 0.4,
    lam: float = 0.5,
    *,
    saliency_resize: Literal["nearest", "bilinear"] = "nearest",
) -> tuple[Tensor, Tensor]:
    """EPS saliency loss (Lee et al., CVPR 2021), background channel at index 0.

    Steps, matching ``get_eps_loss`` in ``halbielee/EPS`` ``eps.py`` (also copied unchanged into
    ``bupt-ai-cz/SMAF`` ``SMAF/smaf/models/eps_loss.py``):

    1. Resize the saliency map to the CAM size. EPS calls ``F.interpolate(saliency, size=(h, w))``
       with no mode, i.e. PyTorch's default ``"nearest"`` (legacy nearest: source index
       ``floor(i * in / out)``), so that is the default here; ``"bilinear"``
       (align_corners=False) is available for the smoother variant.
    2. ``p = softmax(cam)`` over the C+1 channels.
    3. For every class c: ``ratio_c = sum(round(p_c) * round(sal)) / sum(round(p_c) + 1e-4)``,
       computed on ``p`` detached. The 1e-4 is added *per pixel* before the sum in EPS, so the
       denominator is ``sum(round(p_c)) + 1e-4 * h * w``; that is reproduced here.
       ``torch.round`` rounds half to even, so 0.5 rounds to 0 for both maps.
    4. Present classes with ``ratio > tau`` are foreground; present classes with
       ``ratio <= tau`` join the background channel.
    5. ``fg = sum_{c in fg} p_c``; ``bg = 1 - (p_bg + sum_{c present, not fg} p_c)``;
       ``sal_pred = lam * fg + (1 - lam) * bg``; ``loss = MSE(sal_pred, sal)``.

    Absent classes (label 0) are in neither the foreground nor the background set, whatever
    their ratio: in EPS both selection masks are ANDed with the label map. Their probability is
    therefore missing from ``fg`` but, through ``bg = 1 - sum p_bg``, counted as salient by the
    background term: ``sal_pred = lam * sum p_fg + (1 - lam) * (sum p_fg + sum p_absent)``.

    Args:
        cam: ``[B, C+1, h, w]`` CAM logits, background at channel 0.
        saliency: ``[B, 1, H, W]`` or ``[B, H, W]`` saliency in [0, 1] (the PFAN PNG / 255).
        labels: ``[B, C]`` 0/1 image labels for classes 1..C.
        tau: overlap-ratio threshold (EPS script value 0.4; its argparse default is 0.5).
        lam: foreground/background blending weight lambda (0.5).
        saliency_resize: how the saliency map is brought to ``(h, w)``.

    Returns:
        ``(loss, sal_pred)``: scalar loss and the predicted saliency ``[B, 1, h, w]``.
    """
    if cam.ndim != 4 or cam.shape[1] < 2:
        raise ValueError(f"cam must be [B, C+1, h, w] with C >= 1, got {tuple(cam.shape)}")
    b, k, h, w = cam.shape
    c = k - 1
    if labels.shape != (b, c):
        raise ValueError(
            f"labels must be [B, C] = [{b}, {c}] for a cam with C+1 = {k} channels, "
            f"got {tuple(labels.shape)}"
        )
    if saliency.ndim == 3:
        saliency = saliency.unsqueeze(1)
    if saliency.ndim != 4 or saliency.shape[:2] != (b, 1):
        raise ValueError(
            f"saliency must be [B, 1, H, W] or [B, H, W] with B = {b}, got {tuple(saliency.shape)}"
        )
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be in [0, 1], got {lam}")
    if saliency_resize not in ("nearest", "bilinear"):
        raise ValueError(
            f"saliency_resize must be 'nearest' or 'bilinear', got {saliency_resize!r}"
        )

    # EPS loads saliency as float64 numpy; compute in the CAM's dtype and device.
    sal = saliency.to(device=cam.device, dtype=cam.dtype)
    if tuple(sal.shape[-2:]) != (h, w):
        if saliency_resize == "nearest":
            sal = F.interpolate(sal, size=(h, w), mode="nearest")
        else:
            sal = F.interpolate(sal, size=(h, w), mode="bilinear", align_corners=False)
    # [B, 1, h, w]

    p = F.softmax(cam, dim=1)  # [B, C+1, h, w]
    p_bg, p_fg = p[:, :1], p[:, 1:]  # [B, 1, h, w], [B, C, h, w]

    # The channel selection is a hard decision: no gradient through the ratio (EPS detaches).
    with torch.no_grad():
        p_round = torch.round(p_fg.detach())  # [B, C, h, w]
        overlap = (p_round * torch.round(sal)).sum(dim=(-2, -1))  # [B, C]
        area = (p_round + EPS_RATIO_EPS).sum(dim=(-2, -1))  # [B, C], eps per pixel as in EPS
        valid = overlap / area > tau  # [B, C]
        present = labels.to(device=cam.device) != 0  # [B, C]
        fg_sel = (present & valid).to(p.dtype)[:, :, None, None]  # [B, C, 1, 1]
        bg_sel = (present & ~valid).to(p.dtype)[:, :, None, None]  # [B, C, 1, 1]

    fg = (p_fg * fg_sel).sum(dim=1, keepdim=True)  # [B, 1, h, w]
    bg = 1.0 - (p_bg + (p_fg * bg_sel).sum(dim=1, keepdim=True))  # [B, 1, h, w]
    sal_pred = lam * fg + (1.0 - lam) * bg  # [B, 1, h, w]
    loss = F.mse_loss(sal_pred, sal)
    return loss, sal_pred


def mac_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Multi-scale attention consistency loss (Eq. 7; Eq. 9 when ``target`` is reactivated).

    ``L_mac = 1/K sum_k 1/(H W) sum_ij (F_ij^k - M_o,ij^k)^2``, averaged over the batch. With
    every channel of equal size this is the mean over all elements, i.e. exactly
    ``F.mse_loss(pred, target)`` (what the released code calls), which is used for speed.

    Args:
        pred: student maps ``M_o``, ``[B, K, H, W]`` (K = C or C+1).
        target: teacher maps ``F`` or ``F'``, same shape (no broadcasting: a mismatch is a bug).

    Returns:
        Scalar tensor. Gradients flow into both arguments; detach the target yourself.
    """
    if pred.ndim != 4:
        raise ValueError(f"pred must be 4-D [B, K, H, W], got shape {tuple(pred.shape)}")
    if pred.shape != target.shape:
        raise ValueError(
            f"pred and target must have the same shape, got {tuple(pred.shape)} and "
            f"{tuple(target.shape)}; resize the student maps to the target size first"
        )
    return F.mse_loss(pred, target)


def smaf_loss(
    pred_maps: Tensor,
    target_maps: Tensor,
    logits: Tensor | None = None,
    labels: Tensor | None = None,
    *,
    alpha: float = 100.0,
    w_cls: float = 1.0,
) -> dict[str, Tensor]:
    """SMAF self-training loss ``L = w_cls * L_cls + alpha * L_mac`` (Eq. 1).

    The paper uses ``w_cls = 1`` and ``alpha = 100``; the released code comments ``L_cls`` out,
    i.e. ``w_cls = 0`` (then ``logits`` / ``labels`` may be omitted; ``cls`` is still reported when
    they are given, and 0 otherwise).

    Args:
        pred_maps: student maps ``M_o`` ``[B, K, H, W]`` already at the target size (the
            released code: upsampled logits -> softmax over C+1).
        target_maps: teacher maps ``F'`` (Eq. 8) ``[B, K, H, W]``; treated as constants.
        logits: ``[B, C]`` GAP scores for Eq. 3 (needed when ``w_cls != 0``).
        labels: ``[B, C]`` 0/1 image labels (needed when ``w_cls != 0``).
        alpha: weight of the consistency loss.
        w_cls: weight of the classification loss.

    Returns:
        ``{"loss": total, "cls": L_cls, "mac": L_mac}``, scalar tensors; ``loss`` carries the
        graph, detach the others before logging.
    """
    mac = mac_loss(pred_maps, target_maps.detach())  # Eq. 7 / 9
    if logits is not None and labels is not None:
        cls = classification_loss(logits, labels)  # Eq. 3 (logged even when w_cls = 0)
    elif w_cls != 0:
        raise ValueError("w_cls != 0 needs logits and labels for the classification loss")
    else:
        cls = pred_maps.new_zeros(())
    total = alpha * mac + w_cls * cls if w_cls != 0 else alpha * mac
    return {"loss": total, "cls": cls, "mac": mac}


# ------------------------------------------------------------------- DeepLab (stage 6)
def resize_labels(labels: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Nearest-neighbour resize of int labels ``[B, H, W]`` to ``[B, h, w]``.

    ``nearest-exact`` samples pixel centres like PIL's NEAREST (deeplab-pytorch resizes with
    PIL because plain ``nearest`` shifts the labels by up to a pixel).
    """
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels
    out = F.interpolate(labels[:, None].float(), size=tuple(size), mode="nearest-exact")
    return out[:, 0].long()


def masked_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy ``[B, K, h, w]`` vs ``[B, h, w]`` over pixels whose label is not 255.

    A batch with no valid pixel gives 0 (not NaN): the loop would stop on a NaN loss.
    """
    loss = F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX, reduction="sum")
    return loss / (labels != IGNORE_INDEX).sum().clamp(min=1)


def msc_loss(outputs: Sequence[torch.Tensor], labels: torch.Tensor) -> list[torch.Tensor]:
    """Cross-entropy of every MSC output against the labels resized to its size.

    Args:
        outputs: training-mode :class:`~smaf.models.deeplab.MSC` outputs, each
            ``[B, C+1, h_i, w_i]`` (the scales, then the max).
        labels: int64 ``[B, H, W]`` with 255 = ignore.

    Returns:
        One scalar per output; deeplab-pytorch sums them.
    """
    return [masked_cross_entropy(o, resize_labels(labels, o.shape[-2:])) for o in outputs]

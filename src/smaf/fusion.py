"""Multi-scale attention fusion, denoising and reactivation (paper Sec. 3.2-3.3, Eq. 5, 6, 8).

Every function here is a pure, device-agnostic tensor operation: it runs on whatever device its
inputs live on and never moves data. The teacher pipeline is

    maps = multiscale_maps(forward, image, scales, flip=True)   # one map per scale (and flip)
    fused = fuse_scales(maps, size)                             # Eq. 5-6     [B, C, H, W]
    fused = denoise(fused, labels)                              # Sec. 3.3    [B, C, H, W]
    target = reactivate(fused, thr)                             # Eq. 8       [B, C+1, H, W]
    loss = smaf.losses.mac_loss(student_maps, target)           # Eq. 7 / 9 (smaf.losses)

Channel convention (project-wide): maps with a background channel are ``[B, C+1, H, W]`` with
background at index 0 (VOC order); foreground-only maps are ``[B, C, H, W]`` for classes 1..C;
image labels are ``[B, C]`` 0/1 for classes 1..C.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "denoise",
    "fuse_scales",
    "multiscale_maps",
    "reactivate",
    "undo_flip",
]


def _check_4d(name: str, x: Tensor) -> None:
    if x.ndim != 4:
        raise ValueError(f"{name} must be 4-D [B, C, H, W], got shape {tuple(x.shape)}")


def _check_labels(labels: Tensor, batch: int, classes: int) -> None:
    if labels.shape != (batch, classes):
        raise ValueError(
            f"labels must be [B, C] = [{batch}, {classes}] to match the maps, "
            f"got shape {tuple(labels.shape)}"
        )


def _resize(
    x: Tensor, size: tuple[int, int], mode: str = "bilinear", antialias: bool = False
) -> Tensor:
    """Resize ``[B, K, h, w]`` to ``size`` (align_corners=False); a no-op when already there.

    Skipping the identity resize is exact (bilinear at scale 1 samples the pixel centres) and
    saves a copy of the largest map.
    """
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if mode in ("nearest", "area", "nearest-exact"):
        return F.interpolate(x, size=size, mode=mode)
    return F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=antialias)


def fuse_scales(
    maps: Sequence[Tensor],
    size: tuple[int, int],
    *,
    eps: float = 0.0,
    valid: Tensor | None = None,
) -> Tensor:
    """Fuse per-scale attention maps into one map in [0, 1] per class (Eq. 5-6).

    Eq. 6: ``M_k = sum_s resize(M_s^k)``; every map is resized bilinearly (align_corners=False,
    as the released code does for its upsampling) to ``size`` before the sum.
    Eq. 5: ``F^k = M_k / max(M_k)``: each (image, class) channel is divided by its own spatial
    maximum, so every channel with any activation peaks at exactly 1.

    An all-zero channel (a class no scale activates, or one zeroed by :func:`denoise`) stays
    all-zero rather than 0/0 = NaN. With the default ``eps=0`` nonzero channels are divided by
    their exact max; ``eps > 0`` divides by ``max + eps`` instead, which is what the released
    ``gen_fused_cam.py`` does (``+ 1e-5``) and is exposed only so the ``released`` preset can
    reproduce it bit for bit.

    Args:
        maps: non-empty list of non-negative maps ``[B, C, h_i, w_i]`` (softmax probabilities or
            ReLU CAMs), one per scale / flip, flipped ones already un-flipped. Batch size and
            channel count must agree; spatial sizes may differ.
        size: output ``(H, W)``, normally the original-scale map or image size.
        eps: added to the max in the denominator (0 = the paper's Eq. 5).
        valid: optional ``[B, 1, H, W]`` (or ``[B, H, W]``) mask of the pixels that show the
            image, at ``size`` (bool or 0/1). When given, the max of Eq. 5 is taken over the
            valid pixels only and the others are set to 0: a crop's padding (where the
            network's response is meaningless) can then neither set the max nor pass into
            the target. ``None``: every pixel counts (a whole image).

    Returns:
        ``[B, C, H, W]`` fused maps in [0, 1], dtype and device of ``maps[0]``.
    """
    if len(maps) == 0:
        raise ValueError("fuse_scales needs at least one map")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    size = (int(size[0]), int(size[1]))
    _check_4d("maps[0]", maps[0])
    b, c = maps[0].shape[:2]
    total: Tensor | None = None
    for i, m in enumerate(maps):
        _check_4d(f"maps[{i}]", m)
        if m.shape[:2] != (b, c):
            raise ValueError(
                f"maps[{i}] has batch/channels {tuple(m.shape[:2])}, expected {(b, c)} like maps[0]"
            )
        r = _resize(m, size)  # [B, C, H, W]
        # Out of place on the first term so the caller's tensor is never modified.
        total = r.clone() if total is None else total + r
    assert total is not None
    if valid is not None:
        mask = valid if valid.ndim == 4 else valid[:, None]
        if mask.shape != (b, 1, *size):
            raise ValueError(
                f"valid must be [B, 1, H, W] = {(b, 1, *size)}, got {tuple(valid.shape)}"
            )
        # Zero the padding before the max: the max is over the valid pixels only (the sum is
        # >= 0), and the padding stays 0 after the division.
        total = total * mask.to(dtype=total.dtype, device=total.device)
    peak = total.amax(dim=(-2, -1), keepdim=True)  # [B, C, 1, 1]
    if eps > 0:
        return total / (peak + eps)
    # Divide by the max only where it is positive; elsewhere the channel is all zero for
    # non-negative inputs and is returned as zeros (no NaN, no epsilon bias on the others).
    positive = peak > 0
    safe = torch.where(positive, peak, torch.ones_like(peak))
    return torch.where(positive, total / safe, torch.zeros_like(total))


def denoise(fused: Tensor, labels: Tensor) -> Tensor:
    """Inter-channel denoising (Sec. 3.3): zero the channels of classes absent from the label.

    Args:
        fused: ``[B, C, H, W]`` foreground maps (no background channel).
        labels: ``[B, C]`` image-level labels, nonzero = present (0/1 float, int or bool).

    Returns:
        ``[B, C, H, W]``: ``fused`` with absent classes' channels set to 0 (a new tensor).
    """
    _check_4d("fused", fused)
    _check_labels(labels, fused.shape[0], fused.shape[1])
    keep = (labels != 0).to(device=fused.device, dtype=fused.dtype)  # [B, C]
    return fused * keep[:, :, None, None]


def reactivate(fused: Tensor, thr: float) -> Tensor:
    """Reactivation (Eq. 8): prepend a constant background ``thr``, divide each pixel by its max.

    ``F'_i^k = F_i^k / max_k F_i^k`` over the C+1 channels, background included. A pixel where
    some class beats ``thr`` gets that class at 1 and the background at ``thr / max < 1``; a
    pixel where every class is below ``thr`` gets background 1 and its classes scaled up by
    ``1 / thr`` (the under-activated regions the paper wants to boost).

    Args:
        fused: ``[B, C, H, W]`` non-negative fused (and normally denoised) maps.
        thr: background value, > 0 so that the per-pixel max is never 0 (0.2 in the paper).

    Returns:
        ``[B, C+1, H, W]`` with background at channel 0, every pixel's max equal to 1.
    """
    _check_4d("fused", fused)
    if not thr > 0:  # also rejects NaN
        raise ValueError(f"thr must be > 0 (it is the background score), got {thr}")
    b, _, h, w = fused.shape
    bg = fused.new_full((b, 1, h, w), float(thr))  # [B, 1, H, W]
    with_bg = torch.cat([bg, fused], dim=1)  # [B, C+1, H, W]
    # max >= thr > 0 for non-negative inputs, so the division is always defined.
    return with_bg / with_bg.amax(dim=1, keepdim=True)


def undo_flip(maps: Tensor) -> Tensor:
    """Undo a horizontal flip of ``[..., H, W]`` maps (a flip is its own inverse)."""
    return maps.flip(-1)


def multiscale_maps(
    forward: Callable[[Tensor], Tensor],
    image: Tensor,
    scales: Sequence[float],
    flip: bool = True,
    *,
    mode: str = "bilinear",
    antialias: bool = False,
) -> list[Tensor]:
    """Run ``forward`` on rescaled (and h-flipped) copies of ``image``: the inputs of Eq. 6.

    For each scale ``s`` the image is resized to ``(round(H s), round(W s))`` (scale 1 is left
    untouched); with ``flip`` its horizontal mirror is concatenated to the batch so both go
    through one forward call, and the mirror's output is flipped back so all maps are aligned
    with the unflipped image. The maps stay at the network's output resolution; pass the list
    to :func:`fuse_scales` to bring them to a common size (bilinear resize with
    align_corners=False commutes with a horizontal flip, so the order does not matter).

    The released code resizes the PIL image with bicubic interpolation before normalisation;
    ``mode="bicubic", antialias=True`` is the closest tensor equivalent. The default is
    bilinear with align_corners=False.

    Args:
        forward: callable ``x [N, 3, h, w] -> [N, K, h', w']`` (e.g. a model's CAM head followed
            by softmax); called ``len(scales)`` times, in the caller's grad / eval mode.
        image: ``[B, 3, H, W]`` normalised image batch.
        scales: resize factors, e.g. ``(0.5, 1.0, 1.5, 2.0)``; each > 0.
        flip: also run the horizontally flipped image.
        mode, antialias: passed to :func:`torch.nn.functional.interpolate`.

    Returns:
        List of ``[B, K, h_s, w_s]`` maps, scale-major: ``[s0, s0-flipped, s1, ...]`` when
        ``flip`` else ``[s0, s1, ...]``.
    """
    _check_4d("image", image)
    if len(scales) == 0:
        raise ValueError("scales must not be empty")
    b, _, h, w = image.shape
    out: list[Tensor] = []
    for s in scales:
        if not s > 0:
            raise ValueError(f"every scale must be > 0, got {s}")
        size = (max(1, round(h * s)), max(1, round(w * s)))
        x = _resize(image, size, mode=mode, antialias=antialias)  # [B, 3, h_s, w_s]
        if flip:
            x = torch.cat([x, x.flip(-1)], dim=0)  # [2B, 3, h_s, w_s]: one forward for both
        y = forward(x)  # [B or 2B, K, h', w']
        if y.ndim != 4 or y.shape[0] != x.shape[0]:
            raise ValueError(
                f"forward must return [N, K, h, w] with N = {x.shape[0]}, got {tuple(y.shape)}"
            )
        if flip:
            out += [y[:b], undo_flip(y[b:])]
        else:
            out.append(y)
    return out

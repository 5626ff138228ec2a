"""Multi-scale class attention maps of a trained classifier (offline teacher and CAM seeds).

For one image: run the network at every scale (and its horizontal flip, batched with it),
turn the CAM logits into per-class attention (softmax over C+1 for heads with a background
channel, ReLU for the plain CAM head), resize every map to the image size, sum, normalise each
class by its maximum (Eq. 5–6) and zero the classes absent from the image label (denoising).
The released code computes both its teacher maps and its seeds exactly this way.

Seeds then prepend a constant background score ``thr`` at index 0 and take the argmax.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from smaf.fusion import denoise, fuse_scales, multiscale_maps
from smaf.models.build import Classifier
from smaf.settings import CAMConfig  # noqa: F401 - its home; re-exported for the stages
from smaf.transforms import normalize


def attention_maps(
    cam: torch.Tensor,
    has_background: bool,
    *,
    size: tuple[int, int] | None = None,
    keep_background: bool = False,
    normalize: bool = False,
    align_corners: bool = False,
) -> torch.Tensor:
    """Class-aware attention maps of CAM logits (Eq. 2: ``M = ReLU(f(I))``, scores in [0, 1]).

    Heads with a background channel (EPS, released SMAF) give their attention as the softmax
    over the C+1 channels (already in [0, 1]); the plain CAM head as the ReLU of the CAM,
    max-normalised per channel when ``normalize`` (the student; the teacher's maps are
    normalised after fusion, Eq. 5).

    Args:
        cam: CAM logits ``[B, C(+1), h, w]``.
        has_background: whether channel 0 of ``cam`` is the background.
        size: bilinearly resize the logits to ``(H, W)`` first (the student at target size).
        align_corners: of that resize (the released SMAF student: True).
        keep_background: keep the background channel (``[B, C+1, ...]``) instead of dropping it.
        normalize: divide the ReLU CAM by its per-channel max (+1e-5).

    Returns:
        ``[B, C, H, W]`` (or ``[B, C+1, H, W]`` with ``keep_background``), float32, >= 0.
    """
    cam = cam.float()
    if size is not None:
        cam = F.interpolate(cam, size=size, mode="bilinear", align_corners=align_corners)
    if has_background:
        att = torch.softmax(cam, dim=1)  # [B, C+1, h, w]
        return att if keep_background else att[:, 1:]
    att = F.relu(cam)  # [B, C, h, w]
    if normalize:
        att = att / (att.amax(dim=(2, 3), keepdim=True) + 1e-5)
    return att


def attention(model: Classifier, x: torch.Tensor) -> torch.Tensor:
    """``[B, 3, h, w]`` normalised images → non-negative class attention ``[B, C, h/8, w/8]``
    (:func:`attention_maps` of the model's CAM, background dropped)."""
    return attention_maps(model(x)["cam"], model.has_background)


def _scale_attention(
    model: Classifier, image: np.ndarray, labels: np.ndarray | torch.Tensor, cfg: CAMConfig
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The network's attention at every scale (and flip) of one image, and its labels.

    Returns:
        ``maps``: :func:`~smaf.fusion.multiscale_maps` of the image, scale-major
        ``[1, C, h_s, w_s]`` each (the flip right after its scale); ``labels`` ``[1, C]``.
    """
    device = next(model.parameters()).device
    x = normalize(image)[None].to(device)  # [1, 3, H, W]
    lab = torch.as_tensor(np.asarray(labels), dtype=torch.float32, device=device)[None]
    antialias = cfg.resize_mode == "bicubic"
    maps = multiscale_maps(
        lambda t: attention(model, t),
        x,
        cfg.scales,
        cfg.flip,
        mode=cfg.resize_mode,
        antialias=antialias,
    )
    return maps, lab


@torch.no_grad()
def class_maps(
    model: Classifier, image: np.ndarray, labels: np.ndarray | torch.Tensor, cfg: CAMConfig
) -> torch.Tensor:
    """Fused, denoised multi-scale attention of one image: float32 ``[C, H, W]`` in [0, 1].

    Args:
        model: the classifier, in eval mode, on the device the computation should use.
        image: uint8 ``[H, W, 3]`` RGB.
        labels: ``[C]`` 0/1 image-level labels.
    """
    maps, lab = _scale_attention(model, image, labels, cfg)
    fused = fuse_scales(maps, tuple(image.shape[:2]), eps=cfg.eps)  # [1, C, H, W]
    return denoise(fused, lab)[0]


@torch.no_grad()
def class_maps_per_scale(
    model: Classifier, image: np.ndarray, labels: np.ndarray | torch.Tensor, cfg: CAMConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`class_maps` of one image, and the same fusion applied to each scale alone.

    One forward pass per scale serves both, so the fused map is exactly :func:`class_maps`'s
    (the report's Fig. 1 and 4 show what the teacher and the seeds compute).

    Returns:
        ``per_scale`` float32 ``[S, C, H, W]``: each scale (with its flip) through Eq. 5-6
        alone (max-normalised per class), denoised; ``fused`` float32 ``[C, H, W]``: every
        scale, = :func:`class_maps`.
    """
    maps, lab = _scale_attention(model, image, labels, cfg)
    size = tuple(image.shape[:2])
    per = len(maps) // len(cfg.scales)  # 2 with flips: the scale and its mirror
    per_scale = [
        denoise(fuse_scales(maps[i * per : (i + 1) * per], size, eps=cfg.eps), lab)[0]
        for i in range(len(cfg.scales))
    ]  # S x [C, H, W]
    fused = denoise(fuse_scales(maps, size, eps=cfg.eps), lab)[0]  # [C, H, W]
    return torch.stack(per_scale), fused


def seed_labels(maps: torch.Tensor | np.ndarray, thr: float) -> np.ndarray:
    """CAM seeds (Eq. 4, ``P = argmax(M)``) with a constant background score:
    ``argmax([thr, maps])`` → uint8 ``[H, W]`` of 0 (background) .. C.

    ``maps`` is ``[C, H, W]`` fused attention (absent classes already zero).
    """
    maps = torch.as_tensor(maps, dtype=torch.float32)
    bg = torch.full((1, *maps.shape[1:]), float(thr), dtype=maps.dtype, device=maps.device)
    return torch.cat([bg, maps], dim=0).argmax(0).to(torch.uint8).cpu().numpy()

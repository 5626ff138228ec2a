"""Multi-scale class attention maps of a trained classifier (offline teacher and CAM seeds).

For one image: run the network at every scale (and its horizontal flip, batched with it),
turn the CAM logits into per-class attention (softmax over C+1 for heads with a background
channel, ReLU for the plain CAM head), resize every map to the image size, sum, normalise each
class by its maximum (Eq. 5–6) and zero the classes absent from the image label (denoising).
The released code computes both its teacher maps and its seeds exactly this way.

Seeds then prepend a constant background score ``thr`` at index 0 and take the argmax.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from smaf.fusion import denoise, fuse_scales, multiscale_maps
from smaf.io import atomic_write
from smaf.models.build import Classifier
from smaf.transforms import normalize


@dataclass
class CAMConfig:
    """Multi-scale inference settings (``seeds.*`` / ``self_train.teacher_*`` config keys)."""

    scales: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0)  # image scales (paper: 0.5/1/1.5/2)
    flip: bool = True  # add the horizontal flip of every scale
    # Image resize for each scale: 'bilinear' (default) or 'bicubic' (+antialias, close to the
    # released code's PIL bicubic resize).
    resize_mode: str = "bilinear"
    eps: float = 0.0  # added to each class max when normalising (released code: 1e-5)

    def __post_init__(self) -> None:
        self.scales = tuple(float(s) for s in self.scales)
        if not self.scales or any(s <= 0 for s in self.scales):
            raise ValueError(f"scales must be positive, got {self.scales}")
        if self.resize_mode not in ("bilinear", "bicubic"):
            raise ValueError(f"resize_mode must be bilinear or bicubic, got {self.resize_mode!r}")


def attention(model: Classifier, x: torch.Tensor) -> torch.Tensor:
    """``[B, 3, h, w]`` normalised images → non-negative class attention ``[B, C, h/8, w/8]``.

    Heads with a background channel: softmax over the C+1 channels, foreground kept (EPS,
    released SMAF). Plain CAM head: ReLU of the CAM (Eq. 2).
    """
    cam = model(x)["cam"].float()
    if model.has_background:
        return torch.softmax(cam, dim=1)[:, 1:]
    return F.relu(cam)


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
    fused = fuse_scales(maps, tuple(image.shape[:2]), eps=cfg.eps)  # [1, C, H, W]
    return denoise(fused, lab)[0]


def seed_labels(maps: torch.Tensor | np.ndarray, thr: float) -> np.ndarray:
    """CAM seeds: ``argmax([thr, maps])`` → uint8 ``[H, W]`` of 0 (background) .. C.

    ``maps`` is ``[C, H, W]`` fused attention (absent classes already zero).
    """
    maps = torch.as_tensor(maps, dtype=torch.float32)
    bg = torch.full((1, *maps.shape[1:]), float(thr), dtype=maps.dtype, device=maps.device)
    return torch.cat([bg, maps], dim=0).argmax(0).to(torch.uint8).cpu().numpy()


def save_maps(path, maps: torch.Tensor, labels: np.ndarray) -> None:
    """Store fused maps compactly: present classes only, float16, compressed ``.npz``.

    Keys: ``classes`` (int16 class indices 1..C of the stored channels), ``maps``
    (float16 ``[k, H, W]``), ``shape`` (``[C, H, W]``).
    """
    present = np.flatnonzero(np.asarray(labels) > 0)
    arr = maps.detach().cpu().numpy()
    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(
            f,
            classes=(present + 1).astype(np.int16),
            maps=arr[present].astype(np.float16),
            shape=np.asarray(arr.shape, dtype=np.int32),
        )


def load_maps(path) -> np.ndarray:
    """Inverse of :func:`save_maps`: float32 ``[C, H, W]`` with zeros for absent classes."""
    with np.load(path, allow_pickle=False) as z:
        out = np.zeros(tuple(z["shape"]), dtype=np.float32)
        out[z["classes"].astype(np.int64) - 1] = z["maps"].astype(np.float32)
    return out

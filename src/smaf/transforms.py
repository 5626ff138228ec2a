"""Training-time augmentation shared by every training stage, deterministic in a per-sample seed.

EPS/SMAF's recipe: colour jitter, random resize of the long side, horizontal flip, ImageNet
normalisation, random crop (padding with zeros when the image is smaller than the crop).
Everything that is spatially aligned with the image (saliency, offline teacher maps, masks)
gets the **same** geometric transform, with its own fill value for the padded area.

Interpolation is a setting because the released code's differs from ours: EPS and SMAF resize
the image and the saliency with PIL bicubic (``resize_mode: bicubic`` here: antialiased
bicubic, the tensor equivalent) and SMAF its offline teacher maps with bilinear
``align_corners=True`` (extras mode ``'bilinear_aligned'``).

All randomness comes from the ``numpy.random.Generator`` the caller passes in (the training
loop seeds it from the sample's position in the stream), so a resumed run sees exactly the
crops an uninterrupted run would have seen, whatever the number of DataLoader workers.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from smaf.io import IGNORE_INDEX
from smaf.settings import (  # noqa: F401 - their home; re-exported
    PAD_MODES,
    RESIZE_MODES,
    AugmentConfig,
    DeepLabAugment,
)

#: Per-channel mean of ImageNet RGB images scaled to [0, 1] (ImageNet-trained backbones expect it).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
#: Per-channel standard deviation of ImageNet RGB images scaled to [0, 1].
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


#: How an extra map follows the image's resize: ``nearest`` (label masks: the source pixel
#: under each output pixel's centre, PIL NEAREST / torch ``nearest-exact``), ``bilinear``
#: (align_corners=False), ``bilinear_aligned`` (align_corners=True, the released SMAF's teacher
#: maps), ``image`` (like the image: ``augment.resize_mode``; values in [0, 1], e.g. saliency).
EXTRA_MODES = ("nearest", "bilinear", "bilinear_aligned", "image")


def normalize(image: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 ``[H, W, 3]`` RGB → float32 ``[3, H, W]`` with ImageNet mean/std (RGB/255)."""
    t = torch.as_tensor(np.array(image)).permute(2, 0, 1).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (t - mean) / std


def color_jitter(image: torch.Tensor, rng: np.random.Generator, strength) -> torch.Tensor:
    """Colour jitter of a uint8 ``[3, H, W]`` tensor, factors drawn from ``rng`` in random order."""
    import torchvision.transforms.functional as TF  # 1-2 s to import: training jobs only

    b, c, s, h = strength
    ops = [
        (TF.adjust_brightness, rng.uniform(max(0.0, 1 - b), 1 + b)) if b > 0 else None,
        (TF.adjust_contrast, rng.uniform(max(0.0, 1 - c), 1 + c)) if c > 0 else None,
        (TF.adjust_saturation, rng.uniform(max(0.0, 1 - s), 1 + s)) if s > 0 else None,
        (TF.adjust_hue, rng.uniform(-h, h)) if h > 0 else None,
    ]
    ops = [op for op in ops if op is not None]
    for i in rng.permutation(len(ops)):
        fn, factor = ops[i]
        image = fn(image, float(factor))
    return image


class Augmented(NamedTuple):
    """One augmented training sample."""

    image: torch.Tensor  # float32 [3, S, S], normalised; zeros in the padded area
    extras: dict[str, torch.Tensor]  # each [K, S, S] (or [S, S]) in its own dtype
    valid: torch.Tensor  # bool [S, S]: True where the crop shows the image (not padding)


def _resize(
    t: torch.Tensor, size: tuple[int, int], mode: str, resize_mode: str = "bilinear"
) -> torch.Tensor:
    """Resize ``[K, H, W]`` (or ``[H, W]``) to ``size`` in extras mode ``mode``
    (:data:`EXTRA_MODES`); ``nearest`` keeps integer labels, ``image`` follows ``resize_mode``."""
    if mode not in EXTRA_MODES:
        raise ValueError(f"extras mode must be one of {', '.join(EXTRA_MODES)}, got {mode!r}")
    squeeze = t.dim() == 2
    x = t[None, None] if squeeze else t[None]
    dtype = x.dtype
    if mode == "nearest":
        # Pixel centres (PIL NEAREST, deeplab-pytorch's label resize), not torch's legacy
        # "nearest", which samples floor(i · in/out) and shifts the labels by half a pixel.
        out = F.interpolate(x.float(), size=size, mode="nearest-exact").to(dtype)
    elif mode == "image" and resize_mode == "bicubic":
        # PIL's bicubic on an 8-bit image saturates at its range: [0, 1] here, 0..255 for ints.
        out = F.interpolate(
            x.float(), size=size, mode="bicubic", align_corners=False, antialias=True
        )
        if dtype.is_floating_point:
            out = out.clamp(0, 1).to(dtype)
        else:
            out = out.round().clamp(0, 255).to(dtype)
    else:
        aligned = mode == "bilinear_aligned"
        out = F.interpolate(x.float(), size=size, mode="bilinear", align_corners=aligned)
        out = out.to(dtype) if dtype.is_floating_point else out.round().clamp(0, 255).to(dtype)
    return out[0, 0] if squeeze else out[0]


def resize_image(img: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """Resize a uint8 ``[3, H, W]`` image to ``size`` (antialiased, like PIL) with ``mode``
    (:data:`RESIZE_MODES`)."""
    import torchvision.transforms.functional as TF  # 1-2 s to import: training jobs only

    if mode == "bicubic":
        interpolation = TF.InterpolationMode.BICUBIC
    else:
        interpolation = TF.InterpolationMode.BILINEAR
    return TF.resize(img, list(size), interpolation=interpolation, antialias=True)


def train_augment(
    image: np.ndarray,
    rng: np.random.Generator,
    cfg: AugmentConfig,
    extras: dict[str, tuple[np.ndarray | torch.Tensor, str, float]] | None = None,
    *,
    pad: str = "random",
    scale: float | None = None,
) -> Augmented:
    """Augment one sample.

    Args:
        image: uint8 ``[H, W, 3]`` RGB.
        rng: the sample's random generator (all randomness comes from it).
        cfg: augmentation settings.
        extras: ``name -> (array, mode, fill)`` for maps aligned with the image: ``array`` is
            ``[H, W]`` or ``[K, H, W]``; ``mode`` is one of :data:`EXTRA_MODES`
            (``'image'`` or ``'bilinear'`` for saliency, ``'bilinear'`` /
            ``'bilinear_aligned'`` for attention maps, ``'nearest'`` for label masks);
            ``fill`` is the value of the padded area (0 for maps, 255 = ignore for masks).
        pad: where the padding of a side shorter than the crop goes (:data:`PAD_MODES`):
            ``random`` (the image at a random offset, EPS) or ``bottom_right`` (the image at
            the top-left, deeplab-pytorch).
        scale: resize each side to ``max(1, int(side · scale))`` (deeplab-pytorch's random
            scale) instead of drawing a long side from ``cfg.resize_long`` (which then draws
            no random number).

    Returns:
        The crop, the extras cropped the same way, and the mask of real (unpadded) pixels.
    """
    extras = extras or {}
    img = torch.tensor(image).permute(2, 0, 1)  # uint8 [3, H, W] (a copy: inputs may be read-only)
    if cfg.color_jitter is not None:
        img = color_jitter(img, rng, cfg.color_jitter)

    h, w = img.shape[1:]
    if scale is None:
        long_side = int(rng.integers(cfg.resize_long[0], cfg.resize_long[1] + 1))
        ratio = long_side / max(h, w)
        size = (max(1, round(h * ratio)), max(1, round(w * ratio)))
    else:
        size = (max(1, int(h * scale)), max(1, int(w * scale)))
    img = resize_image(img, size, cfg.resize_mode)  # uint8, antialiased like PIL
    maps = {
        k: _resize(torch.as_tensor(a), size, mode, cfg.resize_mode)
        for k, (a, mode, _) in extras.items()
    }

    if cfg.hflip and rng.random() < 0.5:
        img = img.flip(-1)
        maps = {k: m.flip(-1) for k, m in maps.items()}

    x = normalize(img.permute(1, 2, 0).numpy())  # [3, h, w]
    s = cfg.crop_size
    top_img, top_out, ch = _crop_offsets(size[0], s, rng, pad)
    left_img, left_out, cw = _crop_offsets(size[1], s, rng, pad)
    src = (slice(top_img, top_img + ch), slice(left_img, left_img + cw))
    dst = (slice(top_out, top_out + ch), slice(left_out, left_out + cw))

    out_img = torch.zeros(3, s, s)
    out_img[:, dst[0], dst[1]] = x[:, src[0], src[1]]
    valid = torch.zeros(s, s, dtype=torch.bool)
    valid[dst] = True
    out_maps = {}
    for k, m in maps.items():
        fill = extras[k][2]
        canvas = torch.full((*m.shape[:-2], s, s), fill, dtype=m.dtype)
        canvas[..., dst[0], dst[1]] = m[..., src[0], src[1]]
        out_maps[k] = canvas
    return Augmented(out_img, out_maps, valid)


def _crop_offsets(
    length: int, crop: int, rng: np.random.Generator, pad: str = "random"
) -> tuple[int, int, int]:
    """(offset in the image, offset in the crop, extent) along one axis.

    A longer image is cropped at a random offset; a shorter one is placed inside the padded
    crop at a random offset (``pad='random'``, EPS) or at 0, the padding after it
    (``'bottom_right'``: deeplab-pytorch pads bottom/right, then its random crop of the padded
    side can only start at 0). No random number is drawn for a ``bottom_right`` pad.
    """
    if pad not in PAD_MODES:
        raise ValueError(f"pad must be one of {', '.join(PAD_MODES)}, got {pad!r}")
    if length >= crop:
        return int(rng.integers(0, length - crop + 1)), 0, crop
    if pad == "bottom_right":
        return 0, 0, length
    return 0, int(rng.integers(0, crop - length + 1)), length


def augment_pair(
    image: np.ndarray, label: np.ndarray, rng: np.random.Generator, cfg: DeepLabAugment
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random scale, flip and crop of an image and its label map (the same geometry).

    Args:
        image: uint8 ``[H, W, 3]`` RGB.
        label: uint8 ``[H, W]`` labels 0..C or 255.
        rng: the sample's generator (all randomness comes from it).

    Returns:
        float32 ``[3, S, S]`` normalised image (0 = the mean in the padding) and int64
        ``[S, S]`` labels (255 in the padding).
    """
    scale = float(cfg.scales[int(rng.integers(len(cfg.scales)))])
    # Each side becomes int(side · scale), as deeplab-pytorch (libs/datasets/base.py:69):
    # 333×500 at 0.75 → 249×375 (rounding the long side and keeping the aspect gave 250×375).
    geometry = AugmentConfig(
        crop_size=cfg.crop_size,
        hflip=cfg.hflip,
        color_jitter=None,  # DeepLab uses none
    )
    # torch.tensor copies: masks read through PIL are read-only arrays.
    extras = {"label": (torch.tensor(label), "nearest", IGNORE_INDEX)}
    aug = train_augment(image, rng, geometry, extras, pad=cfg.pad, scale=scale)
    return aug.image, aug.extras["label"].long()

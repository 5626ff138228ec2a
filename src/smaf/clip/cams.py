"""Training-free CAMs of a CLIP ViT for the classes present in an image (CLIP-ES's method).

What CLIP-ES's ``generate_cams_voc12.py`` computes (Lin et al., CVPR 2023), per image and scale:

1. The image, resized (PIL bicubic) to the next multiple of the patch size, runs through all
   blocks but the last without gradients (:meth:`VisionTower.tokens`).
2. The last block runs with ``y = ln_1(x)`` kept; the image embedding (mean of the patch tokens)
   against the text features of [present classes, background words] gives a softmax; for each
   present class, Grad-CAM at ``y``: channel weights = spatial mean of ``d softmax_k / d y``,
   CAM = ReLU(sum of weighted channels), min-max normalised (twice, as pytorch-grad-cam does).
3. Class-aware attention affinity: the mean head-averaged attention of the last 8 blocks between
   patch tokens, column/row normalised three times, symmetrised and squared; for each class,
   only the columns inside the boxes of the CAM's 8-connected regions above 0.4 of its max keep
   their weight; refined CAM = affinity @ CAM, min-max normalised.
4. Both maps are resized bilinearly to the image size (in [0, 1]).

CLIP-ES's box detail is kept: a box ends one pixel short at the grid's last row/column
(``x1 = min(x + w, W - 1)``, used as an exclusive end).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage

from smaf.clip.model import Clip
from smaf.clip.settings import ClipCAMConfig
from smaf.clip.tokenizer import tokenize
from smaf.errors import DataError

#: CLIP's image normalisation (OpenAI).
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


@torch.no_grad()
def text_features(model: Clip, words: Sequence[str], template: str) -> torch.Tensor:
    """L2-normalised text features ``[N, E]`` of ``template.format(word)`` for each word."""
    tokens = tokenize([template.format(w) for w in words], model.arch.context_length)
    dev = model.logit_scale.device
    feats = model.encode_text(tokens.to(dev))
    feats = feats / feats.norm(dim=-1, keepdim=True)
    return feats / feats.norm(dim=-1, keepdim=True)  # CLIP-ES: mean over its one template


def grid_size(hw: tuple[int, int], scale: float, patch: int) -> tuple[int, int]:
    """Input size ``(H', W')`` of an ``hw`` image at ``scale``: up to a multiple of ``patch``."""
    return tuple(int(np.ceil(scale * s / patch) * patch) for s in hw)  # type: ignore[return-value]


def check_image_size(hw: tuple[int, int], patch: int, what: str = "image") -> None:
    """Raise a DataError when the image is smaller than one patch (nothing to attend to)."""
    if min(hw) < patch:
        raise DataError(
            f"{what} is {hw[0]}x{hw[1]} pixels, smaller than one {patch}x{patch} CLIP patch; "
            "remove it or use larger images."
        )


def preprocess(image: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """``[1, 3, H', W']`` CLIP input of a uint8 RGB ``[H, W, 3]`` image resized to ``size``
    (PIL bicubic, as torchvision's ``Resize`` on a PIL image)."""
    pil = Image.fromarray(np.ascontiguousarray(image)).resize(size[::-1], Image.BICUBIC)
    x = torch.from_numpy(np.asarray(pil, dtype=np.uint8).copy()).permute(2, 0, 1)
    x = x.float().div(255)
    mean = torch.tensor(MEAN).view(3, 1, 1)
    std = torch.tensor(STD).view(3, 1, 1)
    return ((x - mean) / std).unsqueeze(0)


def minmax(x: torch.Tensor) -> torch.Tensor:
    """pytorch-grad-cam's ``scale_cam_image``: ``(x - min) / (1e-7 + max(x - min))``."""
    x = x - x.min()
    return x / (1e-7 + x.max())


def box_mask(cam: torch.Tensor, thr: float) -> torch.Tensor:
    """``[h, w]`` float mask of the boxes around the 8-connected regions of ``cam`` above
    ``thr`` of its max, on CLIP-ES's 8-bit scale (its ``scoremap2bbox`` with OpenCV contours)."""
    u8 = (cam.cpu().numpy().astype(np.float32) * 255).astype(np.uint8)
    fg = u8 > int(thr * u8.max())
    labels, _ = ndimage.label(fg, structure=np.ones((3, 3), dtype=bool))
    h, w = fg.shape
    mask = torch.zeros(h, w, dtype=torch.float32)
    for rows, cols in ndimage.find_objects(labels):
        mask[rows.start : min(rows.stop, h - 1), cols.start : min(cols.stop, w - 1)] = 1
    return mask


def affinity(attns: Sequence[torch.Tensor], layers: int) -> torch.Tensor:
    """Patch affinity ``[n, n]`` from the blocks' attention ``[1, 1 + n, 1 + n]``: mean of the
    last ``layers``, normalised over columns then rows (three times), symmetrised, squared."""
    a = torch.stack([w[:, 1:, 1:] for w in attns], dim=0)[-layers:].mean(dim=0)[0].float()
    for _ in range(3):
        a = a / a.sum(dim=0, keepdim=True)
        a = a / a.sum(dim=1, keepdim=True)
    a = (a + a.t()) / 2
    return a @ a


@dataclass
class ScaleCAMs:
    """The maps of one forward pass, at the patch grid ``[K, h, w]`` (K present classes)."""

    cams: torch.Tensor  # Grad-CAM, normalised to [0, 1]
    refined: torch.Tensor  # after the class-aware affinity, normalised to [0, 1]


def grad_cams(
    model: Clip,
    image: torch.Tensor,
    text: torch.Tensor,
    present: int,
    cfg: ClipCAMConfig,
) -> ScaleCAMs:
    """CLIP-ES's CAMs and refined CAMs of one preprocessed image.

    Args:
        image: ``[1, 3, H', W']`` from :func:`preprocess` (multiples of the patch size).
        text: ``[K + B, E]`` normalised text features, the ``present`` = K classes first.
    """
    visual = model.visual
    with torch.no_grad():
        x, attns = visual.tokens(image, keep_attn=cfg.attn_layers - 1)  # [1 + n, 1, D]
    h, w = (s // visual.patch_size for s in image.shape[-2:])
    last = visual.transformer.resblocks[-1]
    with torch.enable_grad():
        y = last.ln_1(x).requires_grad_(True)  # Grad-CAM's target layer output [1 + n, 1, D]
        out, attn_last = last.mix(x, y)
        feat = visual.pool(out)
        feat = feat / feat.norm(dim=1, keepdim=True)
        txt = text / text.norm(dim=1, keepdim=True)
        probs = (model.logit_scale.exp() * feat @ txt.t()).softmax(dim=-1)  # [1, K + B]
        acts = y.detach()[1:, 0].reshape(h, w, -1)  # [h, w, D]
        cams = []
        for k in range(present):
            (grad,) = torch.autograd.grad(probs[0, k], y, retain_graph=k + 1 < present)
            weights = grad[1:, 0].reshape(h, w, -1).mean(dim=(0, 1))  # [D]
            cam = (acts * weights).sum(dim=-1).clamp(min=0)  # [h, w]
            cams.append(minmax(minmax(cam)))
    aff = affinity([*attns, attn_last.detach()], cfg.attn_layers)
    refined = []
    for cam in cams:
        mask = box_mask(cam, cfg.box_thr).reshape(1, -1).to(aff.device)
        refined.append(minmax((aff * mask) @ cam.reshape(-1, 1)).reshape(h, w))
    return ScaleCAMs(torch.stack(cams), torch.stack(refined))


def resize_maps(maps: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``[K, h, w]`` maps to ``hw`` (half-pixel centres, as cv2.resize)."""
    return F.interpolate(maps[None], size=hw, mode="bilinear", align_corners=False)[0]


@dataclass
class ImageCAMs:
    """CLIP maps of one image at its size ``[K, H, W]`` in [0, 1], for the present classes."""

    classes: np.ndarray  # int64 [K], 0-based class indices
    cams: torch.Tensor  # Grad-CAM
    refined: torch.Tensor  # class-aware affinity refined (CLIP-ES's pseudo-mask maps)


def image_cams(
    model: Clip,
    image: np.ndarray,
    classes: Sequence[int],
    class_text: torch.Tensor,
    background_text: torch.Tensor,
    cfg: ClipCAMConfig,
) -> ImageCAMs:
    """CLIP-ES CAMs of one image for its present classes, averaged over scales (and flips).

    Args:
        image: uint8 RGB ``[H, W, 3]``.
        classes: the image's present classes (0-based indices into ``class_text``); not empty.
        class_text: ``[C, E]`` features of every class's prompt (:func:`text_features`).
        background_text: ``[B, E]`` features of the background words.

    Raises:
        DataError: the image is smaller than one patch at the smallest scale.
    """
    # Grad-CAM needs autograd, also when a caller runs its stage under inference_mode.
    with torch.inference_mode(False):
        return _image_cams(model, image, classes, class_text, background_text, cfg)


def _image_cams(model, image, classes, class_text, background_text, cfg) -> ImageCAMs:
    hw = image.shape[:2]
    patch = model.visual.patch_size
    check_image_size(tuple(int(min(cfg.scales) * s) for s in hw), patch)
    idx = np.asarray(list(classes), dtype=np.int64)
    if not len(idx):
        raise ValueError("image_cams needs at least one present class")
    dev = model.logit_scale.device
    text = torch.cat([class_text[torch.from_numpy(idx).to(class_text.device)], background_text])
    text = text.clone()  # a normal tensor even if the features were made under inference_mode
    cams = torch.zeros(len(idx), *hw)
    refined = torch.zeros(len(idx), *hw)
    views = [(s, f) for s in cfg.scales for f in ((False, True) if cfg.flip else (False,))]
    for scale, flip in views:
        x = preprocess(image, grid_size(hw, scale, patch))
        x = (x.flip(-1) if flip else x).to(dev)
        out = grad_cams(model, x, text.to(dev), len(idx), cfg)
        c, r = resize_maps(out.cams.cpu(), hw), resize_maps(out.refined.cpu(), hw)
        cams += c.flip(-1) if flip else c
        refined += r.flip(-1) if flip else r
    return ImageCAMs(idx, cams / len(views), refined / len(views))

"""DeepLab inference on one image, shared by the DeepLab stage, its CRF and ``smaf predict``.

:func:`infer_logits` gives the MSC logits of a full image; :func:`upsampled_probs` turns
logits into the softmax at the image's size (what the argmax and DeepLab's CRF read).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from smaf.transforms import normalize

if TYPE_CHECKING:
    from smaf.models.deeplab import MSC


@torch.no_grad()
def infer_logits(
    model: MSC, image: np.ndarray, device: torch.device, flip: bool = False
) -> torch.Tensor:
    """MSC logits of one full image: float32 ``[C+1, ⌈H/8⌉, ⌈W/8⌉]`` on the CPU.

    ``model`` must be in eval mode (MSC then returns the max over scales). With ``flip`` the
    logits of the mirrored image are mirrored back and averaged with the plain ones.
    """
    x = normalize(image)[None].to(device)  # [1, 3, H, W]
    logits = model(x).float()  # [1, K, h, w]
    if flip:
        logits = 0.5 * (logits + model(x.flip(-1)).float().flip(-1))
    return logits[0].cpu()


def upsampled_probs(logits: Any, size: Sequence[int]) -> torch.Tensor:
    """Softmax of logits ``[K, h, w]`` (tensor or array) bilinearly upsampled to ``size`` →
    torch float32 ``[K, H, W]``."""
    lg = torch.as_tensor(logits, dtype=torch.float32)[None]
    lg = F.interpolate(lg, size=tuple(size), mode="bilinear", align_corners=False)
    return torch.softmax(lg[0], dim=0)

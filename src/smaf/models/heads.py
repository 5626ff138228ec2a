"""Classification heads that turn backbone features into class activation maps (CAMs).

Every head maps features ``[B, F, h, w]`` to CAM logits ``[B, K, h, w]``:

=========  ======  ==============================================================
head       K       channel order
=========  ======  ==============================================================
CAMHead    C       ``0..C-1`` = foreground classes (VOC labels 1..C)
EPSHead    C + 1   ``0`` = background, ``1..C`` = foreground (VOC labels 1..C)
SMAFHead   C + 1   ``0`` = background, ``1..C`` = foreground (VOC labels 1..C)
=========  ======  ==============================================================

With the background first, channel ``k`` of a C+1 map *is* VOC label ``k``, so an ``argmax``
over channels is directly a label map. The released EPS/SMAF code puts the background
**last** instead (channel ``C``); :func:`move_background_first` converts their ``fc8`` weights.

Layer names follow the reference (``fc8`` for the classifier conv, as in PSA/EPS); the SMAF
head's 4096→128 projection is ``proj`` here and ``cov_feat`` in the released code.
"""

from __future__ import annotations

import torch
from torch import nn

from smaf.models.resnet38d import FrozenBatchNorm, freeze_batchnorm

#: Width of the SMAF head's bottleneck (4096 → 128 → C+1), from the released code.
SMAF_HIDDEN_CHANNELS = 128


def _xavier_conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    """A bias-free 1×1 conv initialised with ``xavier_uniform_`` (EPS/SMAF's from-scratch init)."""
    conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
    nn.init.xavier_uniform_(conv.weight)
    return conv


def move_background_first(tensor: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Reorder a C+1 axis from the released code's ``[fg_1..fg_C, bg]`` to ours, ``[bg, fg...]``.

    Use it on a released EPS/SMAF ``fc8.weight`` (``[C+1, F_in, 1, 1]``, ``dim=0``) or on a
    released CAM (``[B, C+1, h, w]``, ``dim=1``).
    """
    return torch.roll(tensor, shifts=1, dims=dim)


class CAMHead(nn.Module):
    """Baseline CAM head: 1×1 conv ``F → C`` without bias, no background channel.

    Output channel ``k`` is foreground class ``k`` (VOC label ``k + 1``).
    """

    has_background = False

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.out_channels = num_classes
        self.fc8 = _xavier_conv(in_channels, num_classes)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        """``[B, F, h, w]`` → CAM logits ``[B, C, h, w]``."""
        return self.fc8(feat)


class EPSHead(nn.Module):
    """EPS head: 1×1 conv ``F → C+1`` without bias; channel 0 is the background.

    EPS (halbielee/EPS) puts the background channel last; this project keeps it at index 0
    everywhere (VOC label order), so channel ``k`` is VOC label ``k``.
    """

    has_background = True

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.out_channels = num_classes + 1
        self.fc8 = _xavier_conv(in_channels, num_classes + 1)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        """``[B, F, h, w]`` → CAM logits ``[B, C+1, h, w]`` (channel 0 = background)."""
        return self.fc8(feat)


class SMAFHead(FrozenBatchNorm):
    """SMAF's EPS head: 1×1 conv ``F → 128`` → BN(128) → ReLU → 1×1 conv ``128 → C+1``.

    Both convs are bias-free and xavier-initialised. Channel 0 of the output is the background
    (the released code puts it last). With ``freeze_bn`` the BN stays in eval mode with frozen
    affine parameters, as the released code does (its backbone's ``train()`` freezes every BN of
    the network, this one included, so it keeps its initial identity statistics).
    """

    has_background = True

    def __init__(self, in_channels: int, num_classes: int, freeze_bn: bool = True) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.out_channels = num_classes + 1
        self.freeze_bn = freeze_bn
        self.proj = _xavier_conv(in_channels, SMAF_HIDDEN_CHANNELS)
        self.bn = nn.BatchNorm2d(SMAF_HIDDEN_CHANNELS)
        self.relu = nn.ReLU(inplace=True)
        self.fc8 = _xavier_conv(SMAF_HIDDEN_CHANNELS, num_classes + 1)
        if freeze_bn:
            freeze_batchnorm(self)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        """``[B, F, h, w]`` → CAM logits ``[B, C+1, h, w]`` (channel 0 = background)."""
        x = self.relu(self.bn(self.proj(feat)))  # [B, 128, h, w]
        return self.fc8(x)

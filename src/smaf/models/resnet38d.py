"""ResNet38d ("model A1" of Wu et al., 2016) as used by PSA, EPS and SMAF.

A wide pre-activation ResNet: every block starts with BN + ReLU and the 1×1 projection shortcut
reads that BN-ReLU'd input; no convolution has a bias. Stages b5–b7 trade stride for dilation,
so the output stride is 8 (a 448×448 crop gives a 56×56 map of 4096 channels).

Parameter names follow ``jiwoon-ahn/psa``'s ``network/resnet38d.py`` exactly (``conv1a``,
``b2``, ``b2_1``, …, ``b4_5``, ``b5_2``, ``b6``, ``b7``, ``bn7``; inside a block
``bn_branch2a``, ``conv_branch2a``, ``bn_branch2b1``, ``conv_branch2b1``, ``conv_branch1`` and,
for the bottleneck blocks b6/b7, ``bn_branch2b2``, ``conv_branch2b2``), so the ImageNet weights
converted by :mod:`smaf.models.convert_mxnet` and released PSA/EPS/SMAF checkpoints load with
``strict=True``.

Images reach the model already normalised (RGB / 255, then :data:`IMAGENET_MEAN` /
:data:`IMAGENET_STD`) by the dataset transforms; the model does no normalisation itself.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: Input size / feature-map size of :class:`ResNet38d`.
OUTPUT_STRIDE = 8

#: Channel counts of the full model (width 1.0): conv1a, b2, b3, b4, b5, b6, b7.
BASE_CHANNELS: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048, 4096)

#: Names of the modules frozen by ``freeze_stem`` (PSA's ``not_training`` list in EPS/SMAF).
STEM_MODULES: tuple[str, ...] = ("conv1a", "b2", "b2_1", "b2_2")


def scaled_channels(channels: int, width: float) -> int:
    """``channels × width`` rounded to the nearest multiple of 8, at least 8."""
    return max(8, int(round(channels * width / 8.0)) * 8)


def freeze_batchnorm(module: nn.Module) -> None:
    """Put every BatchNorm inside ``module`` in eval mode and stop gradients to its affine params.

    Frozen BN keeps the ImageNet running statistics: with batches of 8 crops the batch statistics
    would be too noisy, which is why PSA/EPS/SMAF all freeze BN.
    """
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
            for p in m.parameters(recurse=False):
                p.requires_grad_(False)


class FrozenBatchNorm(nn.Module):
    """A module whose BatchNorm layers :func:`freeze_batchnorm` keeps frozen through every
    ``train()`` call when its ``freeze_bn`` attribute (set in ``__init__``) is true."""

    freeze_bn: bool = False

    def train(self, mode: bool = True) -> FrozenBatchNorm:
        """Set train/eval mode, then re-freeze BN (eval mode) if ``freeze_bn``."""
        super().train(mode)
        if self.freeze_bn:
            freeze_batchnorm(self)
        return self


class ResBlock(nn.Module):
    """Pre-activation basic block: BN-ReLU → 3×3 conv → BN-ReLU → 3×3 conv, plus shortcut.

    The shortcut is the identity when shapes match, else a 1×1 (strided) conv applied to the
    BN-ReLU'd input (not the raw input, as in the reference).
    """

    def __init__(
        self,
        in_channels: int,
        mid_channels: int,
        out_channels: int,
        stride: int = 1,
        first_dilation: int | None = None,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        self.same_shape = in_channels == out_channels and stride == 1
        if first_dilation is None:
            first_dilation = dilation
        self.bn_branch2a = nn.BatchNorm2d(in_channels)
        self.conv_branch2a = nn.Conv2d(
            in_channels,
            mid_channels,
            3,
            stride,
            padding=first_dilation,
            dilation=first_dilation,
            bias=False,
        )
        self.bn_branch2b1 = nn.BatchNorm2d(mid_channels)
        self.conv_branch2b1 = nn.Conv2d(
            mid_channels, out_channels, 3, padding=dilation, dilation=dilation, bias=False
        )
        if not self.same_shape:
            self.conv_branch1 = nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in, H, W] → [B, out, H/stride, W/stride]``."""
        x_bn_relu = F.relu(self.bn_branch2a(x))
        shortcut = x if self.same_shape else self.conv_branch1(x_bn_relu)
        branch2 = self.conv_branch2a(x_bn_relu)
        branch2 = self.conv_branch2b1(F.relu(self.bn_branch2b1(branch2)))
        return shortcut + branch2


class ResBlockBottleneck(nn.Module):
    """Pre-activation bottleneck: 1×1 (out/4) → 3×3 dilated (out/2) → 1×1 (out), with dropout.

    ``Dropout2d`` (whole channels) sits after the 2nd and 3rd BN-ReLU, as in the reference; it
    is active in train mode even when BN is frozen. The shortcut is always a 1×1 projection of
    the BN-ReLU'd input (b6 and b7 both change the channel count).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        dilation: int = 1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        quarter, half = out_channels // 4, out_channels // 2
        self.bn_branch2a = nn.BatchNorm2d(in_channels)
        self.conv_branch2a = nn.Conv2d(in_channels, quarter, 1, stride, bias=False)
        self.bn_branch2b1 = nn.BatchNorm2d(quarter)
        self.dropout_2b1 = nn.Dropout2d(dropout)
        self.conv_branch2b1 = nn.Conv2d(
            quarter, half, 3, padding=dilation, dilation=dilation, bias=False
        )
        self.bn_branch2b2 = nn.BatchNorm2d(half)
        self.dropout_2b2 = nn.Dropout2d(dropout)
        self.conv_branch2b2 = nn.Conv2d(half, out_channels, 1, bias=False)
        self.conv_branch1 = nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in, H, W] → [B, out, H/stride, W/stride]``."""
        x_bn_relu = F.relu(self.bn_branch2a(x))
        shortcut = self.conv_branch1(x_bn_relu)
        branch2 = self.conv_branch2a(x_bn_relu)
        branch2 = self.conv_branch2b1(self.dropout_2b1(F.relu(self.bn_branch2b1(branch2))))
        branch2 = self.conv_branch2b2(self.dropout_2b2(F.relu(self.bn_branch2b2(branch2))))
        return shortcut + branch2


class ResNet38d(nn.Module):
    """The ResNet38d backbone: ``[B, 3, H, W]`` normalised RGB → ``[B, 4096·width, H/8, W/8]``.

    Args:
        width: multiplier on every channel count (rounded to a multiple of 8, at least 8).
            1.0 is the real network (the only width the ImageNet weights fit); 0.125–0.25 give a
            backbone small enough to train on a CPU for the demo.
        freeze_bn: keep every BatchNorm in eval mode with frozen affine parameters (the paper).
        freeze_stem: freeze ``conv1a`` and ``b2``, ``b2_1``, ``b2_2`` (weights and BN
            statistics), as EPS and SMAF do.
    """

    def __init__(self, width: float = 1.0, freeze_bn: bool = True, freeze_stem: bool = True):
        super().__init__()
        if width <= 0:
            raise ValueError(f"width must be > 0, got {width}")
        c64, c128, c256, c512, c1024, c2048, c4096 = (
            scaled_channels(c, width) for c in BASE_CHANNELS
        )
        self.width = width
        self.freeze_bn = freeze_bn
        self.freeze_stem = freeze_stem
        self.out_channels = c4096

        self.conv1a = nn.Conv2d(3, c64, 3, padding=1, bias=False)  # stride 1

        self.b2 = ResBlock(c64, c128, c128, stride=2)  # stride 2
        self.b2_1 = ResBlock(c128, c128, c128)
        self.b2_2 = ResBlock(c128, c128, c128)

        self.b3 = ResBlock(c128, c256, c256, stride=2)  # stride 4
        self.b3_1 = ResBlock(c256, c256, c256)
        self.b3_2 = ResBlock(c256, c256, c256)

        self.b4 = ResBlock(c256, c512, c512, stride=2)  # stride 8
        self.b4_1 = ResBlock(c512, c512, c512)
        self.b4_2 = ResBlock(c512, c512, c512)
        self.b4_3 = ResBlock(c512, c512, c512)
        self.b4_4 = ResBlock(c512, c512, c512)
        self.b4_5 = ResBlock(c512, c512, c512)

        # From here on dilation replaces stride (output stride stays 8). b5's first conv still
        # uses dilation 1: its input comes from the undilated b4 stage.
        self.b5 = ResBlock(c512, c512, c1024, first_dilation=1, dilation=2)
        self.b5_1 = ResBlock(c1024, c512, c1024, dilation=2)
        self.b5_2 = ResBlock(c1024, c512, c1024, dilation=2)

        self.b6 = ResBlockBottleneck(c1024, c2048, dilation=4, dropout=0.3)
        self.b7 = ResBlockBottleneck(c2048, c4096, dilation=4, dropout=0.5)

        # Closes the last pre-activation block (its output is otherwise un-normalised).
        self.bn7 = nn.BatchNorm2d(c4096)

        self._init_weights()
        self._apply_freezing()

    def _init_weights(self) -> None:
        # He init suits the ReLU convs of a from-scratch demo backbone; with ImageNet weights
        # every value here is overwritten anyway. BN starts as the identity (weight 1, bias 0).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def stem(self) -> list[nn.Module]:
        """The modules frozen by ``freeze_stem``: ``conv1a``, ``b2``, ``b2_1``, ``b2_2``."""
        return [getattr(self, name) for name in STEM_MODULES]

    def _apply_freezing(self) -> None:
        if self.freeze_stem:
            for module in self.stem():
                for p in module.parameters():
                    p.requires_grad_(False)
                # A frozen stage must not drift through its BN running statistics either.
                freeze_batchnorm(module)
        if self.freeze_bn:
            freeze_batchnorm(self)

    def train(self, mode: bool = True) -> ResNet38d:
        """Set train/eval mode, then re-freeze BN (eval mode) and the stem as configured."""
        super().train(mode)
        self._apply_freezing()
        return self

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` normalised RGB → ``[B, out_channels, ⌈H/8⌉, ⌈W/8⌉]`` (ReLU'd)."""
        x = self.conv1a(x)  # [B, 64w, H, W]
        x = self.b2_2(self.b2_1(self.b2(x)))  # [B, 128w, H/2, W/2]
        x = self.b3_2(self.b3_1(self.b3(x)))  # [B, 256w, H/4, W/4]
        x = self.b4(x)  # [B, 512w, H/8, W/8]
        x = self.b4_5(self.b4_4(self.b4_3(self.b4_2(self.b4_1(x)))))
        x = self.b5_2(self.b5_1(self.b5(x)))  # [B, 1024w, H/8, W/8]
        x = self.b6(x)  # [B, 2048w, H/8, W/8]
        x = self.b7(x)  # [B, 4096w, H/8, W/8]
        return F.relu(self.bn7(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`forward_features`."""
        return self.forward_features(x)

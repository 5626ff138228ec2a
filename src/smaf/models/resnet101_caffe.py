"""The Caffe DeepLab-v2 ResNet-101 (``deeplab.backbone: resnet101_caffe``), as deeplab-pytorch has it.

The DeepLab authors' ResNet-101 (MSRA's Caffe ResNet, dilated) differs from torchvision's:

* the stride of a downsampling bottleneck sits in its first **1×1** conv (``reduce``), not in
  the 3×3 one, and the 3×3 conv of *every* block of a dilated stage uses the stage's dilation;
* the stem max-pool rounds up (``ceil_mode``): a side of ``n`` pixels gives
  ``n1 = ⌊(n-1)/2⌋+1`` after conv1, ``n2 = ⌈(n1-1)/2⌉+1`` after the pool and
  ``⌊(n2-1)/2⌋+1`` after layer3 (321 → 41; 47 → 7 where torchvision gives 6);
* BN is Caffe's ``BatchNorm`` (statistics) + ``Scale`` (affine) pair, frozen for DeepLab-v2
  training; here a ``BatchNorm2d`` (eps 1e-5) in eval mode without gradients;
* the input is **BGR, 0–255, minus the mean** (104.008, 116.669, 122.675) (deeplab-pytorch's
  ``configs/voc12.yaml``), not ImageNet-normalised RGB. :class:`ResNet101Caffe` keeps this
  project's input convention (``smaf.transforms.normalize``) and converts it exactly inside
  ``forward_features`` (undo mean/std, ×255, RGB→BGR, subtract the Caffe mean), so the
  published weights see what they were trained on.

Module and parameter names are deeplab-pytorch's (``libs/models/resnet.py``,
``deeplabv2.py``): ``layer1.conv1.{conv,bn}`` (stem), ``layer2``…``layer5`` with
``block1``…``blockN``, each ``reduce``/``conv3x3``/``increase`` (and ``shortcut`` in
``block1``) holding ``conv.weight`` and ``bn.{weight,bias,running_mean,running_var}``. Hence
this module's ``state_dict()`` is key for key the converted COCO init
``deeplabv1_resnet101-coco.pth`` without its ``fc.*`` classifier. Stages: layer2 (3 blocks,
256 ch, stride 4), layer3 (4, 512, stride 8), layer4 (23, 1024, dilation 2), layer5 (3, 2048,
dilation 4): output stride 8.

:func:`caffe_layer_module` maps the Caffe layer names of ``init.caffemodel`` /
``train2_iter_20000.caffemodel`` to these module paths, as deeplab-pytorch's ``convert.py``
does; :mod:`smaf.models.deeplab_weights` reads and loads those files.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from smaf.models.resnet38d import FrozenBatchNorm, freeze_batchnorm, scaled_channels
from smaf.transforms import IMAGENET_MEAN, IMAGENET_STD

#: Per-channel mean the Caffe DeepLab weights expect, **BGR** order, 0–255 scale.
CAFFE_MEAN_BGR: tuple[float, float, float] = (104.008, 116.669, 122.675)
#: Bottleneck blocks of layer2..layer5 (ResNet-101).
BLOCKS: tuple[int, int, int, int] = (3, 4, 23, 3)
#: BN epsilon of the Caffe model (``batch_norm_param.eps`` default) and of deeplab-pytorch.
BN_EPS = 1e-5


class ConvBN(nn.Module):
    """Bias-free conv → BN (→ ReLU): deeplab-pytorch's ``_ConvBnReLU`` (keys ``conv.*``, ``bn.*``)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        relu: bool = True,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, padding, dilation, bias=False
        )
        self.bn = nn.BatchNorm2d(out_channels, eps=BN_EPS)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in, H, W]`` → ``[B, out, H', W']``."""
        x = self.bn(self.conv(x))
        return torch.relu(x) if self.relu else x


class Bottleneck(nn.Module):
    """1×1 ``reduce`` (stride here) → 3×3 ``conv3x3`` (dilated) → 1×1 ``increase``, + shortcut.

    The shortcut is a 1×1 ``ConvBN`` (no ReLU) in the first block of a stage, else the input.
    """

    def __init__(
        self, in_channels: int, out_channels: int, stride: int, dilation: int, downsample: bool
    ) -> None:
        super().__init__()
        mid = out_channels // 4
        self.reduce = ConvBN(in_channels, mid, 1, stride)
        self.conv3x3 = ConvBN(mid, mid, 3, 1, dilation, dilation)
        self.increase = ConvBN(mid, out_channels, 1, relu=False)
        self.shortcut = (
            ConvBN(in_channels, out_channels, 1, stride, relu=False) if downsample else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in, H, W]`` → ``[B, out, H/stride, W/stride]``."""
        h = self.increase(self.conv3x3(self.reduce(x)))
        return torch.relu(h + (x if self.shortcut is None else self.shortcut(x)))


class ResLayer(nn.Sequential):
    """``n`` bottlenecks named ``block1``…``blockn``; only ``block1`` strides and projects."""

    def __init__(
        self, n: int, in_channels: int, out_channels: int, stride: int, dilation: int
    ) -> None:
        super().__init__()
        for i in range(n):
            self.add_module(
                f"block{i + 1}",
                Bottleneck(
                    in_channels if i == 0 else out_channels,
                    out_channels,
                    stride if i == 0 else 1,
                    dilation,
                    downsample=i == 0,
                ),
            )


class Stem(nn.Sequential):
    """7×7/2 conv + BN + ReLU (``conv1``), then 3×3/2 max-pool rounding up (``pool``)."""

    def __init__(self, out_channels: int) -> None:
        super().__init__()
        self.add_module("conv1", ConvBN(3, out_channels, 7, 2, 3))
        self.add_module("pool", nn.MaxPool2d(3, 2, 1, ceil_mode=True))


class ResNet101Caffe(FrozenBatchNorm):
    """The backbone: ``[B, 3, H, W]`` normalised RGB → ``[B, 2048·width, h, w]``, stride 8.

    Args:
        width: channel multiplier (rounded to multiples of 8); 1.0 is the network the published
            weights fit, smaller widths only make tests cheap.
        freeze_bn: BN in eval mode with frozen affine parameters (DeepLab-v2).
    """

    def __init__(self, width: float = 1.0, freeze_bn: bool = True) -> None:
        super().__init__()
        if width <= 0:
            raise ValueError(f"width must be > 0, got {width}")
        c64, c256, c512, c1024, c2048 = (
            scaled_channels(c, width) for c in (64, 256, 512, 1024, 2048)
        )
        self.width = width
        self.freeze_bn = freeze_bn
        self.out_channels = c2048
        self.layer1 = Stem(c64)
        self.layer2 = ResLayer(BLOCKS[0], c64, c256, stride=1, dilation=1)
        self.layer3 = ResLayer(BLOCKS[1], c256, c512, stride=2, dilation=1)
        self.layer4 = ResLayer(BLOCKS[2], c512, c1024, stride=1, dilation=2)
        self.layer5 = ResLayer(BLOCKS[3], c1024, c2048, stride=1, dilation=4)
        # normalised RGB → Caffe input: flip to BGR, then x·(255·std) + (255·mean − caffe mean).
        # Not persistent: the state dict stays key for key the published one.
        std_bgr = torch.tensor(IMAGENET_STD[::-1]).view(1, 3, 1, 1)
        mean_bgr = torch.tensor(IMAGENET_MEAN[::-1]).view(1, 3, 1, 1)
        caffe_mean = torch.tensor(CAFFE_MEAN_BGR).view(1, 3, 1, 1)
        self.register_buffer("input_scale", 255.0 * std_bgr, persistent=False)
        self.register_buffer("input_shift", 255.0 * mean_bgr - caffe_mean, persistent=False)
        if freeze_bn:
            freeze_batchnorm(self)

    def to_caffe_input(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet-normalised RGB ``[B, 3, H, W]`` → Caffe BGR 0–255 minus the mean."""
        return x.flip(1) * self.input_scale + self.input_shift

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` normalised RGB → ``[B, 2048·width, h, w]`` (see module doc for h, w)."""
        x = self.layer2(self.layer1(self.to_caffe_input(x)))  # [B, 256w, H/4, W/4]
        x = self.layer3(x)  # [B, 512w, H/8, W/8]
        return self.layer5(self.layer4(x))  # dilated 2 and 4: [B, 2048w, H/8, W/8]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`forward_features`."""
        return self.forward_features(x)


_BRANCH = {"1": "shortcut", "2a": "reduce", "2b": "conv3x3", "2c": "increase"}
# res4b22_branch2a, bn2a_branch1, scale5c_branch2c: kind, stage, block, branch.
_BLOCK_LAYER = re.compile(r"^(res|bn|scale)([2-5])([a-z])(\d*)_branch(1|2a|2b|2c)$")
_ASPP_LAYER = re.compile(r"^fc\w*_c(\d+)$")


def caffe_layer_module(name: str) -> str | None:
    """deeplab-pytorch module path of a Caffe DeepLab-v2 ResNet-101 layer with weights.

    ``conv1`` → ``layer1.conv1.conv``; ``bn_conv1``/``scale_conv1`` → ``layer1.conv1.bn``;
    ``res{S}{B}_branch{X}`` → ``layer{S}.block{n}.{m}.conv`` and ``bn…``/``scale…`` →
    ``….bn``, where stage S ∈ 2..5, block ``a``/``b``/``c`` → 1/2/3 and ``b{k}`` → k+1
    (``res4b22`` is ``block23``), branch ``1``/``2a``/``2b``/``2c`` → ``shortcut``/``reduce``/
    ``conv3x3``/``increase``; ``fc…_c{k}`` (``fc1_voc12_c0``) → ``aspp.c{k}``; any other
    ``fc…`` (the COCO init's 1×1 classifier) → ``fc``. Returns ``None`` for the copies of the
    MSC branches (names containing ``res075`` / ``res05``, which share the main weights) and
    for names that are not part of the network.
    """
    if "res075" in name or "res05" in name:
        return None
    if name == "conv1":
        return "layer1.conv1.conv"
    if name in ("bn_conv1", "scale_conv1"):
        return "layer1.conv1.bn"
    if m := _BLOCK_LAYER.match(name):
        kind, stage, letter, number, branch = m.groups()
        if number:
            if letter != "b":
                return None
            block = int(number) + 1
        elif letter in "abc":
            block = "abc".index(letter) + 1
        else:
            return None
        part = "conv" if kind == "res" else "bn"
        return f"layer{stage}.block{block}.{_BRANCH[branch]}.{part}"
    if m := _ASPP_LAYER.match(name):
        return f"aspp.c{m.group(1)}"
    if name.startswith("fc"):
        return "fc"
    return None


__all__ = [
    "BLOCKS",
    "BN_EPS",
    "CAFFE_MEAN_BGR",
    "Bottleneck",
    "ConvBN",
    "ResLayer",
    "ResNet101Caffe",
    "Stem",
    "caffe_layer_module",
]

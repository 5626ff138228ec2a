"""DeepLab-v2 (ASPP) with multi-scale inputs (MSC): the segmentation network of stage 6.

DeepLab-v2 (Chen et al., TPAMI 2018) as trained by deeplab-pytorch and the WSSS papers that
follow it (PSA, EPS, SMAF): a dilated ResNet with output stride 8, then ASPP — four parallel
3×3 convolutions ``F → C+1`` with dilations 6, 12, 18, 24 whose outputs are **summed** (v2;
v3 concatenates). :class:`MSC` runs the network on the image at scales 1, 0.75 and 0.5 and
takes the pixel-wise max of the (upsampled) logits; training puts the loss on every scale and
on the max.

Backbones (``DeepLabConfig.backbone``):

* ``resnet101`` — the paper's. torchvision's ResNet-101 with
  ``replace_stride_with_dilation=[False, True, True]``: layer3 ("conv4") dilation 2, layer4
  ("conv5") dilation 4, output stride 8. Initialised from the torchvision ImageNet weights
  (``resnet101-63fe2227.pth``), the downloadable stand-in for the COCO-pretrained caffemodel.
  Two known differences from the Caffe DeepLab ResNet: torchvision puts the stride in the 3×3
  conv of a bottleneck (v1.5), and the first block of a dilated stage keeps the previous
  stage's dilation in its 3×3 conv.
* ``resnet101_caffe`` — the DeepLab authors' Caffe ResNet-101 layout
  (:class:`~smaf.models.resnet101_caffe.ResNet101Caffe`: stride in the first 1×1 conv,
  ceil-mode stem pool, frozen BN, BGR/mean input converted inside), the layout of the
  COCO-pretrained init that deeplab-pytorch, and EPS/SMAF after it, start from
  (``init.caffemodel`` or its conversion ``deeplabv1_resnet101-coco.pth``; loaded by
  :func:`~smaf.models.deeplab_weights.load_caffe_backbone`). Has a width multiplier for tests.
* ``resnet50`` — the same with 50 layers (faster; ``resnet50-0676ba61.pth``).
* ``resnet38d`` — :class:`~smaf.models.resnet38d.ResNet38d`, which is already output stride 8
  (dilated b5–b7) and has a width multiplier. At ``width`` 0.125 it is the CPU demo backbone:
  torchvision cannot dilate its small BasicBlock ResNets (18/34), and a thinned ResNet-50
  still ends in 2048 channels, so the demo reuses the project's own small dilated network
  instead of inventing a new one (without the classifier's b6/b7 dropout, see
  :func:`build_deeplab`). Its ImageNet weights (width 1.0) load as for the classifier.

The background is label / channel 0, so ``argmax`` over the C+1 channels is the VOC label map.
Images arrive normalised with ImageNet mean/std on RGB/255 (:func:`smaf.transforms.normalize`),
which is what the torchvision weights expect (``resnet101_caffe`` converts them to its Caffe
BGR/mean input itself).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from smaf.errors import ConfigError, SmafError
from smaf.io import atomic_write
from smaf.models.checkpoint import check_num_classes, read_model_file
from smaf.models.convert_mxnet import (
    load_imagenet_weights,
    load_state_dict_checked,
    read_state_dict,
)
from smaf.models.deeplab_weights import load_caffe_backbone
from smaf.models.resnet38d import OUTPUT_STRIDE, FrozenBatchNorm, ResNet38d, freeze_batchnorm
from smaf.models.resnet101_caffe import ResNet101Caffe
from smaf.settings import BACKBONES, WIDTH_BACKBONES, DeepLabConfig  # noqa: F401 - re-exported


class ResNetBackbone(FrozenBatchNorm):
    """torchvision ResNet-50/101 without ``avgpool``/``fc``, dilated to output stride 8.

    Parameter names are torchvision's (``conv1``, ``bn1``, ``layer1.0.conv1``, …), so the
    ImageNet state dicts load strictly once their ``fc.*`` entries are dropped.
    """

    def __init__(self, depth: int = 101, freeze_bn: bool = True) -> None:
        super().__init__()
        from torchvision.models import resnet50, resnet101  # heavy import: only when built

        ctor = {50: resnet50, 101: resnet101}.get(depth)
        if ctor is None:
            raise ConfigError(f"ResNet depth must be 50 or 101, got {depth}")
        net = ctor(weights=None, replace_stride_with_dilation=[False, True, True])
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            net.layer1,
            net.layer2,
            net.layer3,
            net.layer4,
        )
        self.out_channels = 2048
        self.freeze_bn = freeze_bn
        if freeze_bn:
            freeze_batchnorm(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` normalised RGB → ``[B, 2048, ⌈H/8⌉, ⌈W/8⌉]``."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # [B, 64, H/4, W/4]
        x = self.layer2(self.layer1(x))  # [B, 512, H/8, W/8]
        return self.layer4(self.layer3(x))  # dilated 2 and 4: [B, 2048, H/8, W/8]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`forward_features`."""
        return self.forward_features(x)


def load_torchvision_weights(backbone: ResNetBackbone, path: str | os.PathLike[str]) -> None:
    """Load a torchvision ImageNet ResNet state dict (``fc.*`` dropped) strictly into ``backbone``."""
    state = {k: v for k, v in read_state_dict(path).items() if not k.startswith("fc.")}
    load_state_dict_checked(backbone, state, path)


class ASPP(nn.Module):
    """DeepLab-v2 ASPP: parallel 3×3 convs ``F → K`` at several dilations, outputs summed.

    Each branch has a bias and starts from ``N(0, 0.01²)`` weights and zero bias (the
    Caffe prototxt's init for the from-scratch classifier layers).
    """

    def __init__(self, in_channels: int, out_channels: int, rates: Sequence[int]) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(in_channels, out_channels, 3, padding=r, dilation=r, bias=True) for r in rates
        )
        for conv in self.convs:
            nn.init.normal_(conv.weight, mean=0.0, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        """``[B, F, h, w]`` → ``[B, K, h, w]`` = Σ over dilations of conv_r(feat)."""
        out = self.convs[0](feat)
        for conv in self.convs[1:]:
            out = out + conv(feat)
        return out


class DeepLabV2(nn.Module):
    """Backbone + ASPP at one scale: ``[B, 3, H, W]`` → logits ``[B, C+1, ⌈H/8⌉, ⌈W/8⌉]``."""

    def __init__(self, backbone: nn.Module, num_classes: int, rates: Sequence[int]) -> None:
        super().__init__()
        self.backbone = backbone
        self.aspp = ASPP(backbone.out_channels, num_classes + 1, rates)
        self.num_classes = num_classes

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` → backbone features ``[B, F, H/8, W/8]``."""
        return self.backbone.forward_features(x)

    def forward_head(self, feat: torch.Tensor) -> torch.Tensor:
        """``[B, F, h, w]`` → logits ``[B, C+1, h, w]`` (channel 0 = background)."""
        return self.aspp(feat)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` → logits ``[B, C+1, ⌈H/8⌉, ⌈W/8⌉]``."""
        return self.forward_head(self.forward_features(x))


def scale_input(x: torch.Tensor, s: float) -> torch.Tensor:
    """``[B, 3, H, W]`` resized by the factor ``s`` for MSC: ``⌊s·H⌋ × ⌊s·W⌋`` (bilinear,
    ``align_corners=False``, coordinates mapped with ``s`` itself, deeplab-pytorch's
    ``F.interpolate(x, scale_factor=p)``); ``x`` itself at ``s = 1``. A side that would
    vanish is kept at one pixel (resized to that size)."""
    if s == 1.0:
        return x
    size = [int(d * s) for d in x.shape[-2:]]
    if min(size) < 1:
        return F.interpolate(x, size=[max(1, d) for d in size], mode="bilinear")
    return F.interpolate(
        x, scale_factor=s, mode="bilinear", align_corners=False, recompute_scale_factor=False
    )


class MSC(nn.Module):
    """Multi-scale inputs with a pixel-wise max (deeplab-pytorch's ``MSC``).

    For each scale ``s`` the image is resized by the scale factor ``s`` (bilinear,
    ``align_corners=False``, as deeplab-pytorch's ``libs/models/msc.py``: ``⌊s·H⌋ × ⌊s·W⌋``
    pixels, sampled at ``(i + ½)/s − ½``, not at ``(i + ½)·H/⌊s·H⌋ − ½`` as a resize to that
    size would) and run through ``base``; every scale's logits are then resized (bilinear) to
    the size of the first scale's logits and combined by an element-wise max.

    ``forward`` returns, in training mode, the list ``[logits at each scale (own size)…, max]``
    (the loss goes on all of them); in eval mode only the max ``[B, C+1, h, w]``.
    """

    def __init__(self, base: DeepLabV2, scales: Sequence[float] = (1.0, 0.75, 0.5)) -> None:
        super().__init__()
        if not scales:
            raise ValueError("MSC needs at least one scale")
        self.base = base
        self.scales = tuple(float(s) for s in scales)

    @property
    def num_classes(self) -> int:
        """Foreground classes C (the logits have C+1 channels)."""
        return self.base.num_classes

    def forward_scales(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """``[B, 3, H, W]`` → (logits of every scale at its own size, their max ``[B, K, h, w]``)."""
        logits = []
        for s in self.scales:
            logits.append(self.base(scale_input(x, s)))  # [B, K, ~H·s/8, ~W·s/8]
        ref = logits[0].shape[-2:]
        aligned = [
            lg
            if lg.shape[-2:] == ref
            else F.interpolate(lg, size=ref, mode="bilinear", align_corners=False)
            for lg in logits
        ]
        return logits, torch.stack(aligned).amax(dim=0)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor] | torch.Tensor:
        """Training: ``[logits_s…, max]``; eval: ``max`` ``[B, C+1, h, w]`` (see class doc)."""
        logits, best = self.forward_scales(x)
        if self.training:
            return [*logits, best]
        return best

    def param_groups(self) -> list[dict[str, Any]]:
        """Parameter groups of the DeepLab-v2 solver (trainable parameters only).

        In order (each ``{'name', 'params', 'lr_mult', 'weight_decay_mult'}``):

        0. backbone weights: lr × 1, weight decay;
        1. other backbone parameters (BN affine, only when BN is not frozen): lr × 1, no decay;
        2. ASPP weights: lr × 10, weight decay;
        3. ASPP biases: lr × 20, no weight decay.

        deeplab-pytorch's ``get_params`` (``main.py``): "1x" = the convs of the backbone
        (bias-free), "10x" = ASPP weights, "20x" = ASPP biases with weight decay 0; its BN
        parameters are in no group (frozen), so there is no ×2 group.
        """
        groups: list[dict[str, Any]] = [
            {"name": "backbone_weight", "params": [], "lr_mult": 1.0, "weight_decay_mult": 1.0},
            {"name": "backbone_other", "params": [], "lr_mult": 1.0, "weight_decay_mult": 0.0},
            {"name": "aspp_weight", "params": [], "lr_mult": 10.0, "weight_decay_mult": 1.0},
            {"name": "aspp_bias", "params": [], "lr_mult": 20.0, "weight_decay_mult": 0.0},
        ]
        for module in self.base.backbone.modules():
            for name, p in module.named_parameters(recurse=False):
                if p.requires_grad:
                    is_conv_weight = isinstance(module, nn.Conv2d) and name == "weight"
                    groups[0 if is_conv_weight else 1]["params"].append(p)
        for name, p in self.base.aspp.named_parameters():
            if p.requires_grad:
                groups[3 if name.endswith("bias") else 2]["params"].append(p)
        return groups


def build_deeplab(cfg: DeepLabConfig) -> MSC:
    """Build ``MSC(DeepLabV2)`` of ``cfg``; loads the backbone's ImageNet weights if given."""
    if cfg.backbone == "resnet38d":
        # freeze_stem=False: DeepLab trains every backbone layer.
        backbone: nn.Module = ResNet38d(width=cfg.width, freeze_bn=cfg.freeze_bn, freeze_stem=False)
        # b6/b7's channel dropout belongs to the PSA classifier recipe; DeepLab's backbones
        # have none (nor do torchvision's), and on the thin demo network it halves the
        # features b7 passes on (measured: val mIoU 0.34 → 0.40 after 150 demo iterations).
        for block in (backbone.b6, backbone.b7):
            block.dropout_2b1 = nn.Identity()
            block.dropout_2b2 = nn.Identity()
        if cfg.pretrained is not None:
            load_imagenet_weights(backbone, cfg.pretrained)
    elif cfg.backbone == "resnet101_caffe":
        backbone = ResNet101Caffe(width=cfg.width, freeze_bn=cfg.freeze_bn)
        if cfg.pretrained is not None:
            load_caffe_backbone(backbone, cfg.pretrained)
    else:
        depth = 101 if cfg.backbone == "resnet101" else 50
        backbone = ResNetBackbone(depth, freeze_bn=cfg.freeze_bn)
        if cfg.pretrained is not None:
            load_torchvision_weights(backbone, cfg.pretrained)
    model = MSC(DeepLabV2(backbone, cfg.num_classes, cfg.atrous_rates), cfg.msc_scales)
    model.config = cfg  # what built it: saved with the weights
    return model


def load_classifier_backbone(model: MSC, path: str | os.PathLike[str]) -> None:
    """Initialise ``model``'s backbone from the backbone of the classifier saved at ``path``.

    The stand-in for ImageNet weights when there are none (the CPU demo): the EPS / SMAF
    classifier was trained on the same images with image-level labels only, so starting
    DeepLab from its features adds no supervision. The classifier must be a ResNet38d of the
    same width as DeepLab's ``resnet38d`` backbone (the dropout that DeepLab drops has no
    weights, so the state dicts match key for key).

    Raises:
        SmafError: ``path`` is not a classifier model file, or its backbone does not fit.
    """
    cfg = model.config
    if cfg.backbone != "resnet38d":
        raise ConfigError(
            f"deeplab.init_from needs deeplab.backbone: resnet38d (the classifier's), got "
            f"{cfg.backbone!r}; use deeplab.pretrained for ImageNet weights instead."
        )
    state = read_model_file(path, "the classifier's training rule")
    trained = state["model_config"]
    if trained.get("backbone") != "resnet38d" or float(trained.get("width", -1)) != cfg.width:
        raise SmafError(
            f"{path}: a {trained.get('backbone')} of width {trained.get('width')} cannot "
            f"initialise DeepLab's resnet38d of width {cfg.width}; set deeplab.width to "
            "model.width or drop deeplab.init_from."
        )
    prefix = "backbone."
    weights = {k[len(prefix) :]: v for k, v in state["model"].items() if k.startswith(prefix)}
    load_state_dict_checked(model.base.backbone, weights, path)


def save_deeplab(path: str | os.PathLike[str], model: MSC, meta: dict[str, Any]) -> None:
    """Write ``{'model': state_dict, 'model_config': DeepLabConfig fields, 'meta'}`` atomically.

    ``model`` must come from :func:`build_deeplab` (it carries ``model.config``).
    """
    config = asdict(model.config)
    config["pretrained"] = None  # the weights are in the file; do not reload ImageNet ones
    config["atrous_rates"] = list(config["atrous_rates"])
    config["msc_scales"] = list(config["msc_scales"])
    state = {"model": model.state_dict(), "model_config": config, "meta": dict(meta)}
    with atomic_write(path) as tmp:
        torch.save(state, tmp)


def load_deeplab(
    path: str | os.PathLike[str], *, num_classes: int | None = None
) -> tuple[MSC, dict[str, Any]]:
    """Rebuild the DeepLab model saved at ``path``; return ``(model on the CPU, meta)``.

    Read with ``weights_only=True``: a file holding arbitrary pickled objects is refused.

    Args:
        num_classes: if given, the file must be for this many foreground classes.
    """
    state = read_model_file(path, "the deeplab_train rule")
    known = {f.name for f in fields(DeepLabConfig)}
    if state["model_config"].get("backbone") not in BACKBONES or set(state["model_config"]) - known:
        raise SmafError(
            f"{path} is not a DeepLab model (its model_config is {state['model_config']}); "
            "a classifier's model file?"
        )
    cfg = DeepLabConfig(**state["model_config"])
    check_num_classes(path, cfg.num_classes, num_classes)
    model = build_deeplab(cfg)
    load_state_dict_checked(model, state["model"], path)
    return model, dict(state.get("meta", {}))


__all__ = [
    "ASPP",
    "BACKBONES",
    "DeepLabConfig",
    "DeepLabV2",
    "MSC",
    "OUTPUT_STRIDE",
    "ResNetBackbone",
    "WIDTH_BACKBONES",
    "build_deeplab",
    "scale_input",
    "load_classifier_backbone",
    "load_deeplab",
    "load_torchvision_weights",
    "save_deeplab",
]

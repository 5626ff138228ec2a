"""Build the classification network of each stage from a :class:`ModelConfig`.

``Classifier = backbone (ResNet38d, or a timm model: ``timm/<name>``) + head``; the CAM lives
between ``forward_features`` and ``forward_head``. The image-level logits are the global average
of the foreground CAM channels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from smaf.errors import ConfigError
from smaf.models.convert_mxnet import load_imagenet_weights
from smaf.models.heads import CAMHead, EPSHead, SMAFHead
from smaf.models.resnet38d import ResNet38d
from smaf.models.timm_backbone import PREFIX as TIMM_PREFIX
from smaf.models.timm_backbone import TimmBackbone, is_timm

#: Backbone constructors by name: ``(width, freeze_bn, freeze_stem) -> module``.
BACKBONES: dict[str, Callable[..., nn.Module]] = {"resnet38d": ResNet38d}


def _cam_head(in_channels: int, num_classes: int, freeze_bn: bool) -> nn.Module:
    return CAMHead(in_channels, num_classes)


def _eps_head(in_channels: int, num_classes: int, freeze_bn: bool) -> nn.Module:
    return EPSHead(in_channels, num_classes)


def _smaf_head(in_channels: int, num_classes: int, freeze_bn: bool) -> nn.Module:
    return SMAFHead(in_channels, num_classes, freeze_bn=freeze_bn)


#: Head constructors by name: ``(in_channels, num_classes, freeze_bn) -> module``.
HEADS: dict[str, Callable[[int, int, bool], nn.Module]] = {
    "cam": _cam_head,  # baseline CAM: C channels, no background
    "eps": _eps_head,  # EPS: C+1 channels, background at index 0
    "smaf": _smaf_head,  # SMAF's EPS head (4096→128→BN→ReLU→C+1), background at index 0
}


@dataclass
class ModelConfig:
    """What to build; every stage that trains or runs the classifier takes one."""

    backbone: str = "resnet38d"  # PSA/EPS/SMAF's; or timm/<name>: any timm model
    width: float = 1.0  # resnet38d's channel multiplier (1.0 = real, 0.125 = CPU demo); timm: 1.0
    head: str = "smaf"  # 'cam' (baseline) | 'eps' (EPS paper) | 'smaf' (released SMAF code)
    num_classes: int = 20  # foreground classes C (20 for VOC); the EPS/SMAF heads add 1 bg
    freeze_bn: bool = True  # BN in eval mode, no grad (PSA/EPS/SMAF: batches of 8 are too small)
    freeze_stem: bool = True  # conv1a + b2* frozen, as EPS/SMAF do
    # Backbone weights: the ImageNet ResNet38d .params file or a .pth state dict (whose width
    # must match `width`; the ImageNet weights are width 1.0); for timm/<name> that timm
    # model's state dict (.pth / .safetensors). None = random init (demo).
    pretrained: str | None = None

    def __post_init__(self) -> None:
        if is_timm(self.backbone):
            if self.width != 1.0:
                raise ConfigError(
                    f"model.width is resnet38d's channel multiplier; {self.backbone} has its "
                    f"own widths: set model.width: 1.0 (got {self.width!r})."
                )
        elif self.backbone not in BACKBONES:
            raise ConfigError(
                f"model.backbone must be one of {sorted(BACKBONES)} or {TIMM_PREFIX}<name> "
                f"(a timm model), got {self.backbone!r}"
            )
        if self.head not in HEADS:
            raise ConfigError(f"model.head must be one of {sorted(HEADS)}, got {self.head!r}")
        if not self.width > 0:
            raise ConfigError(f"model.width must be > 0, got {self.width!r}")
        if not isinstance(self.num_classes, int) or self.num_classes < 1:
            raise ConfigError(f"model.num_classes must be an int >= 1, got {self.num_classes!r}")


def cam_to_logits(cam: torch.Tensor, has_background: bool) -> torch.Tensor:
    """Image-level class scores: global average pooling of the foreground CAM channels.

    ``cam`` is ``[B, C+1, h, w]`` with the background at channel 0 when ``has_background``,
    else ``[B, C, h, w]``; returns ``[B, C]`` (EPS's ``pred[:, :C]`` in our channel order).
    """
    fg = cam[:, 1:] if has_background else cam  # [B, C, h, w]
    return fg.mean(dim=(2, 3))


class Classifier(nn.Module):
    """Backbone + CAM head: ``[B, 3, H, W]`` → ``{'cam': [B, K, H/8, W/8], 'logits': [B, C]}``.

    ``K = C + 1`` (background at channel 0) for the 'eps' and 'smaf' heads, ``K = C`` for 'cam'.
    The stride is 8 for ResNet38d; a timm backbone's is its ``output_stride`` (8, 16 or the
    ViT's patch size).
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.num_classes = num_classes

    @property
    def has_background(self) -> bool:
        """Whether channel 0 of the CAM is a background channel."""
        return bool(self.head.has_background)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` normalised RGB → backbone features ``[B, F, H/8, W/8]``."""
        return self.backbone.forward_features(x)

    def forward_head(self, feat: torch.Tensor) -> torch.Tensor:
        """Backbone features ``[B, F, h, w]`` → CAM logits ``[B, K, h, w]``."""
        return self.head(feat)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{'cam': [B, K, H/8, W/8] CAM logits, 'logits': [B, C] GAP of foreground cam}``."""
        cam = self.forward_head(self.forward_features(x))
        return {"cam": cam, "logits": cam_to_logits(cam, self.has_background)}

    def param_groups(self) -> list[dict[str, Any]]:
        """The four PolyOptimizer parameter groups of PSA/EPS/SMAF, trainable params only.

        Returns, in this order (each ``{'name', 'params', 'lr_mult', 'weight_decay_mult'}``):

        0. backbone conv (and linear) weights: lr × 1, weight decay;
        1. other backbone params (BN / LayerNorm affine when not frozen, biases; ResNet38d has
           no conv biases): lr × 2, no weight decay — Caffe's bias convention, as in the
           reference;
        2. head conv weights (trained from scratch): lr × 10, weight decay;
        3. other head params (biases, BN affine when not frozen): lr × 20, no weight decay.

        Groups can be empty (kept so indices stay fixed). Frozen params are left out.
        """
        groups: list[dict[str, Any]] = [
            {"name": "backbone_weight", "params": [], "lr_mult": 1.0, "weight_decay_mult": 1.0},
            {"name": "backbone_other", "params": [], "lr_mult": 2.0, "weight_decay_mult": 0.0},
            {"name": "head_weight", "params": [], "lr_mult": 10.0, "weight_decay_mult": 1.0},
            {"name": "head_other", "params": [], "lr_mult": 20.0, "weight_decay_mult": 0.0},
        ]
        for offset, part in ((0, self.backbone), (2, self.head)):
            for module in part.modules():
                for name, p in module.named_parameters(recurse=False):
                    if not p.requires_grad:
                        continue
                    # Conv / linear weights (timm's backbones have linear layers too).
                    is_weight = name == "weight" and p.ndim > 1
                    groups[offset + (0 if is_weight else 1)]["params"].append(p)
        return groups


def build_classifier(cfg: ModelConfig) -> Classifier:
    """Build the classifier of ``cfg``; loads the backbone weights if ``pretrained``."""
    if is_timm(cfg.backbone):
        backbone: nn.Module = TimmBackbone(
            cfg.backbone[len(TIMM_PREFIX) :], freeze_bn=cfg.freeze_bn, freeze_stem=cfg.freeze_stem
        )
        if cfg.pretrained is not None:
            backbone.load_weights(cfg.pretrained)
    else:
        backbone = BACKBONES[cfg.backbone](
            width=cfg.width, freeze_bn=cfg.freeze_bn, freeze_stem=cfg.freeze_stem
        )
        if cfg.pretrained is not None:
            load_imagenet_weights(backbone, cfg.pretrained)
    head = HEADS[cfg.head](backbone.out_channels, cfg.num_classes, cfg.freeze_bn)
    model = Classifier(backbone, head, cfg.num_classes)
    model.config = cfg  # what built it: saved with the weights (smaf.models.checkpoint)
    return model

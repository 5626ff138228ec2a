"""A timm backbone for the classifier: ``model.backbone: timm/<name>`` (issue 22 §2).

Any model of ``timm.list_models()`` becomes the classifier's feature extractor, built with
``timm.create_model(name, pretrained=False, num_classes=0, global_pool="")`` (never a hub
download: weights come from ``model.pretrained``, a local file). The CAM lives between
``forward_features`` and the head, so the features must keep some resolution:

* CNNs are built with timm's ``output_stride=8`` (dilated last stages, as ResNet38d's
  stride 8), else 16 where the model allows only that;
* ViT-style models (patch tokens) with ``dynamic_img_size`` (any input size, padded to the
  patch size); their tokens, prefix tokens dropped, are reshaped to the patch grid (stride =
  the patch size, 16 for ``*_patch16_*``);
* a model that takes neither is refused (its CAMs would be 1/32 of the image).

``model.freeze_bn`` keeps its BatchNorms in eval mode; ``model.freeze_stem`` freezes the
modules of timm's own ``group_matcher()['stem']``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from smaf.config import did_you_mean
from smaf.errors import ConfigError, SmafError
from smaf.models.convert_mxnet import load_state_dict_checked, read_state_dict
from smaf.models.resnet38d import FrozenBatchNorm, freeze_batchnorm

#: ``model.backbone`` values naming a timm model: ``timm/<name>``.
PREFIX = "timm/"
#: What installs timm (the extra that also holds the CLIP base's dependencies).
INSTALL = "pip install 'smaf[clip]'"
#: Largest feature stride accepted: the CAM needs resolution.
MAX_STRIDE = 16
#: timm keyword arguments tried in order: dilated CNN at stride 8, at 16, a ViT at any size.
_BUILDS = (
    {"output_stride": 8},
    {"output_stride": 16},
    {"dynamic_img_size": True, "dynamic_img_pad": True},
)
_FIND_NAMES = "python -c \"import timm; print(timm.list_models('*resnet*'))\""


def is_timm(backbone: str) -> bool:
    """Whether ``model.backbone`` names a timm model."""
    return str(backbone).startswith(PREFIX)


def import_timm() -> Any:
    """The timm module, or a one-line SmafError saying how to install it."""
    try:
        import timm
    except ImportError:
        raise SmafError(f"model.backbone timm/... needs timm: {INSTALL}") from None
    return timm


def _create(timm: Any, name: str) -> nn.Module:
    """``timm.create_model`` with the first of :data:`_BUILDS` the model accepts."""
    for kwargs in _BUILDS:
        try:
            return timm.create_model(
                name, pretrained=False, num_classes=0, global_pool="", **kwargs
            )
        except (TypeError, AssertionError, ValueError, NotImplementedError):
            continue  # the model has no such option (or not that value): try the next
    raise ConfigError(
        f"model.backbone {PREFIX}{name}: the model takes neither timm's output_stride (8 or 16) "
        "nor dynamic_img_size (a ViT), so its CAMs would be 1/32 of the image. Pick a CNN "
        "with output_stride (resnet*, convnext*, efficientnet*, ...) or a timm ViT."
    )


class TimmBackbone(FrozenBatchNorm):
    """A timm model as a classifier backbone: ``[B, 3, H, W]`` → ``[B, F, ⌈H/s⌉, ⌈W/s⌉]``.

    ``s`` (:attr:`output_stride`) is 8 for CNNs with timm's ``output_stride`` option (16 where
    only that is allowed) and the patch size for ViTs. ``F`` = :attr:`out_channels`.
    """

    def __init__(self, name: str, freeze_bn: bool = True, freeze_stem: bool = True) -> None:
        super().__init__()
        timm = import_timm()
        if not timm.is_model(name):
            near = did_you_mean(name, timm.list_models())
            raise ConfigError(
                f"model.backbone {PREFIX}{name}: timm {timm.__version__} has no model "
                f"{name!r}{near}. List the names with {_FIND_NAMES} (any name of "
                "timm.list_models(), e.g. timm/resnet50, timm/convnext_tiny)."
            )
        self.name = name
        self.net = _create(timm, name)
        self.out_channels = int(self.net.num_features)
        self.freeze_bn = freeze_bn
        self.freeze_stem = freeze_stem
        self.prefix_tokens = int(getattr(self.net, "num_prefix_tokens", 0))
        self.output_stride = self._probe_stride()
        stem = self.net.group_matcher(coarse=True).get("stem", [])
        patterns = [stem] if isinstance(stem, str) else [p for p, *_ in stem]
        self._stem = [re.compile(p) for p in patterns]
        if freeze_stem:
            for name_, p in self.net.named_parameters():
                if self._in_stem(name_):
                    p.requires_grad_(False)
        self.train()

    def _in_stem(self, name: str) -> bool:
        return any(p.match(name) for p in self._stem)

    def _probe_stride(self) -> int:
        """The feature stride, measured on a 64×64 input (refused above :data:`MAX_STRIDE`)."""
        self.net.eval()
        with torch.no_grad():
            h = self.forward_features(torch.zeros(1, 3, 64, 64)).shape[-2]
        stride = 64 // h
        if stride > MAX_STRIDE:
            raise ConfigError(
                f"model.backbone {PREFIX}{self.name}: its features are 1/{stride} of the image "
                f"(more than 1/{MAX_STRIDE}): too coarse for CAMs. Pick a model with timm's "
                "output_stride option or a ViT with 16-pixel patches."
            )
        return stride

    def train(self, mode: bool = True) -> TimmBackbone:
        """Set train/eval mode; re-freeze BN (``freeze_bn``) and the stem's BN (``freeze_stem``)."""
        super().train(mode)
        if self.freeze_stem:
            for name, module in self.net.named_modules():
                if name and self._in_stem(name):
                    freeze_batchnorm(module)
        return self

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` normalised RGB → ``[B, F, h, w]`` (ViT tokens on the patch grid)."""
        feat = self.net.forward_features(x)
        if feat.ndim == 3:  # [B, prefix + h*w, F] tokens of a ViT, padded to whole patches
            ph, pw = self.net.patch_embed.patch_size
            h, w = -(-x.shape[-2] // ph), -(-x.shape[-1] // pw)
            feat = feat[:, self.prefix_tokens :].transpose(1, 2)  # [B, F, h*w]
            feat = feat.reshape(feat.shape[0], feat.shape[1], h, w)
        return feat

    def load_weights(self, path: str | os.PathLike[str]) -> None:
        """Load ``model.pretrained``: a timm / torch state dict (``.pth``, ``.bin``, or
        ``.safetensors``; possibly under ``model`` / ``state_dict``) of this timm model.

        The ImageNet classifier's keys (timm's ``pretrained_cfg['classifier']``) are dropped:
        the CAM head replaces it. Every other key must match (strict), else a SmafError
        naming the file and the keys.
        """
        state = _read(path)
        heads = self.net.pretrained_cfg.get("classifier") or ()
        heads = (heads,) if isinstance(heads, str) else tuple(heads)
        state = {k: v for k, v in state.items() if not k.startswith(tuple(f"{h}." for h in heads))}
        try:
            load_state_dict_checked(self.net, state, path)
        except SmafError as exc:
            raise SmafError(
                f"{exc} model.pretrained must be the weights of timm's {self.name!r} (as saved "
                "by timm: torch.save(model.state_dict()) or the hub's model.safetensors)."
            ) from None


def _read(path: str | os.PathLike[str]) -> Mapping[str, torch.Tensor]:
    """A state dict from a ``.safetensors`` file, or a torch file (:func:`read_state_dict`)."""
    if Path(path).suffix != ".safetensors":
        return read_state_dict(path)
    if not Path(path).is_file():
        raise SmafError(f"weights file not found: {path}.")
    from safetensors.torch import load_file  # a dependency of timm

    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for a bad file
        raise SmafError(f"cannot read weights file {path} ({type(exc).__name__}: {exc}).") from None

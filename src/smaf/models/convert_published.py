"""Start from published checkpoints: the authors' models as this project's model files.

Classifiers (instead of EPS pretraining, or to compare CAMs with the authors'):

* **halbielee/EPS** ``checkpoint_cls.pth``: ``torch.save(model.module.state_dict())`` of
  ``network/resnet38_eps.py`` ``Net(21)`` — ResNet38d keys exactly as this project's
  (``conv1a.weight``, ``b2.bn_branch2a.*``, …, ``bn7.*``) plus ``fc8.weight``
  ``[C+1, 4096, 1, 1]`` with the **background last**. The baseline ``resnet38_cls``
  checkpoint has ``fc8.weight`` ``[C, 4096, 1, 1]`` (no background) → head ``cam``.
* **bupt-ai-cz/SMAF** ``checkpoint_cls_finally.pth``: ``{'Net': {'model_state': state_dict,
  'objective_vectors': [21, 128]}, 'iter': n}`` (``train.py``), the state dict of
  ``models/EPS.py`` ``Net(21)``: the same backbone plus ``cov_feat.weight`` ``[128, 4096, 1, 1]``,
  ``bn.*`` (128) and ``fc8.weight`` ``[C+1, 128, 1, 1]``, background last → head ``smaf``
  (``cov_feat`` is our ``proj``). The prototypes (``objective_vectors``) are not part of the
  network and are dropped.

The background channel is moved first (:func:`~smaf.models.heads.move_background_first`, a
roll of ``fc8``'s output axis), so the converted CAM is the authors' with channels
``[bg, fg_1..fg_C]``. A DataParallel ``module.`` prefix is removed.

DeepLab (evaluation only): deeplab-pytorch's ``deeplabv2_resnet101_msc-vocaug-20000.pth`` or
the authors' ``train2_iter_20000.caffemodel`` → an MSC of backbone ``resnet101_caffe``
(:func:`~smaf.models.deeplab_weights.load_deeplab_pytorch_model`).

Every converted file records ``meta['source']`` (the publishing repository),
``meta['original_file']`` (name) and ``meta['original_sha256']``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from smaf.download import file_digest
from smaf.errors import ConfigError, DataError, SmafError
from smaf.models.build import Classifier, ModelConfig, build_classifier
from smaf.models.checkpoint import save_model
from smaf.models.convert_mxnet import load_state_dict_checked
from smaf.models.deeplab import MSC, DeepLabConfig, build_deeplab, save_deeplab
from smaf.models.deeplab_weights import load_deeplab_pytorch_model, read_deeplab_weights
from smaf.models.heads import move_background_first
from smaf.models.resnet38d import BASE_CHANNELS
from smaf.models.torch_files import load_torch_file

#: Publishing repository of each checkpoint format.
SOURCES = {
    "eps": "halbielee/EPS",
    "smaf": "bupt-ai-cz/SMAF",
    "deeplab": "kazuto1011/deeplab-pytorch",
}

# Released SMAF head names → this project's SMAFHead names (fc8 is reordered separately).
_SMAF_HEAD = {"cov_feat.weight": "head.proj.weight"}
_SMAF_BN = "bn."


def _strip_module(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module.") :]: v for k, v in state.items()}
    return state


def read_published_classifier(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], str]:
    """The released state dict (authors' key names) and its format, ``'eps'`` or ``'smaf'``.

    Read with ``weights_only=True``. The format is SMAF's when the file is ``{'Net':
    {'model_state': …}}`` or the state dict has ``cov_feat.weight``; EPS's otherwise.
    """
    obj = load_torch_file(
        path,
        missing=f"checkpoint not found: {path}.",
        unreadable="Expected the EPS checkpoint_cls.pth or SMAF checkpoint_cls_finally.pth from "
        "the authors' links.",
        error=DataError,
    )
    if isinstance(obj, Mapping) and isinstance(obj.get("Net"), Mapping):
        obj = obj["Net"].get("model_state")
    if not isinstance(obj, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise DataError(f"{path} holds no state dict (a mapping of names to tensors).")
    state = _strip_module(dict(obj))
    if "fc8.weight" not in state or "conv1a.weight" not in state:
        raise DataError(
            f"{path} is not a ResNet38d classifier of EPS/SMAF (no conv1a.weight / fc8.weight)."
        )
    return state, "smaf" if "cov_feat.weight" in state else "eps"


def published_to_classifier_state(
    state: Mapping[str, torch.Tensor], num_classes: int
) -> tuple[dict[str, torch.Tensor], str]:
    """Rename an EPS/SMAF state dict to :class:`~smaf.models.build.Classifier` keys.

    Returns ``(state, head)`` with head ``'smaf'`` (``cov_feat`` present), ``'eps'``
    (``fc8`` has C+1 rows) or ``'cam'`` (C rows); ``fc8`` is reordered background-first.
    """
    rows = int(state["fc8.weight"].shape[0])
    if "cov_feat.weight" in state:
        head = "smaf"
    elif rows == num_classes + 1:
        head = "eps"
    elif rows == num_classes:
        head = "cam"
    else:
        raise DataError(
            f"the checkpoint's fc8 has {rows} outputs; {num_classes} classes need "
            f"{num_classes + 1} (EPS/SMAF, with background) or {num_classes} (baseline CAM). "
            "Use a checkpoint trained on this dataset."
        )
    if head == "smaf" and rows != num_classes + 1:
        raise DataError(
            f"the SMAF checkpoint's fc8 has {rows} outputs, {num_classes} classes need "
            f"{num_classes + 1}; use a checkpoint trained on this dataset."
        )
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key == "fc8.weight":
            out["head.fc8.weight"] = move_background_first(value) if head != "cam" else value
        elif head == "smaf" and key in _SMAF_HEAD:
            out[_SMAF_HEAD[key]] = value
        elif head == "smaf" and key.startswith(_SMAF_BN):
            out[f"head.{key}"] = value
        else:
            out[f"backbone.{key}"] = value
    return out, head


def convert_classifier_checkpoint(
    path: str | os.PathLike[str],
    num_classes: int,
    *,
    expect_head: str | None = None,
    freeze_bn: bool = True,
    freeze_stem: bool = True,
) -> tuple[Classifier, str]:
    """Build the :class:`Classifier` of a released EPS/SMAF checkpoint and load it strictly.

    The width comes from ``bn7`` (4096·width channels; the released models are 1.0).

    Args:
        expect_head: the configured ``model.head``; a checkpoint of another head raises a
            ConfigError naming both.

    Returns:
        ``(model, fmt)`` with ``fmt`` ``'eps'`` or ``'smaf'`` (the checkpoint format).
    """
    state, fmt = read_published_classifier(path)
    renamed, head = published_to_classifier_state(state, num_classes)
    if expect_head is not None and expect_head != head:
        raise ConfigError(
            f"{path} is a {SOURCES[fmt]} model with a '{head}' head but model.head is "
            f"'{expect_head}'; set model.head: {head} or use a checkpoint of that head."
        )
    bn7 = renamed.get("backbone.bn7.weight")
    if bn7 is None:
        raise DataError(f"{path} has no bn7.weight: not a ResNet38d of EPS/SMAF.")
    cfg = ModelConfig(
        width=bn7.shape[0] / BASE_CHANNELS[-1],
        head=head,
        num_classes=num_classes,
        freeze_bn=freeze_bn,
        freeze_stem=freeze_stem,
    )
    model = build_classifier(cfg)
    try:
        load_state_dict_checked(model, renamed, path)
    except SmafError as exc:
        raise DataError(
            f"{exc} The file is not a released {SOURCES[fmt]} ResNet38d model; use the "
            "checkpoint from the authors' README link, unmodified."
        ) from None
    return model, fmt


def _origin(path: str | os.PathLike[str], fmt: str) -> dict[str, Any]:
    return {
        "source": SOURCES[fmt],
        "original_file": Path(path).name,
        "original_sha256": file_digest(path, "sha256"),
    }


def write_converted_classifier(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    num_classes: int,
    meta: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> Classifier:
    """Convert (:func:`convert_classifier_checkpoint`) and save as a model file at ``out``.

    ``meta`` (e.g. ``stage``, ``class_names``) is stored with the source fields.
    """
    model, fmt = convert_classifier_checkpoint(path, num_classes, **kwargs)
    save_model(out, model, {**dict(meta or {}), **_origin(path, fmt), "head": model.config.head})
    return model


def convert_deeplab_checkpoint(
    path: str | os.PathLike[str],
    num_classes: int | None = None,
    msc_scales: tuple[float, ...] = (1.0, 0.75, 0.5),
) -> MSC:
    """A trained DeepLab-v2 ResNet-101 (deeplab-pytorch ``.pth`` or ``train2`` caffemodel) → MSC.

    ``num_classes`` (foreground) defaults to the file's ASPP outputs − 1; ASPP rates are
    deeplab-pytorch's (6, 12, 18, 24); a ``.caffemodel`` is checked against them.
    """
    state, _ = read_deeplab_weights(path)
    aspp = state.get("aspp.c0.weight")
    if aspp is None:
        raise DataError(
            f"{path} has no ASPP (aspp.c0.weight / fc1_*_c0): it is an init, not a trained "
            "DeepLab-v2; use it as deeplab.pretrained."
        )
    classes = int(aspp.shape[0]) - 1 if num_classes is None else num_classes
    width = state["layer1.conv1.conv.weight"].shape[0] / 64
    cfg = DeepLabConfig(
        backbone="resnet101_caffe", width=width, num_classes=classes, msc_scales=msc_scales
    )
    model = build_deeplab(cfg)
    load_deeplab_pytorch_model(model, path)
    return model


def write_converted_deeplab(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    num_classes: int | None = None,
    meta: Mapping[str, Any] | None = None,
) -> MSC:
    """Convert (:func:`convert_deeplab_checkpoint`) and save with :func:`save_deeplab`."""
    model = convert_deeplab_checkpoint(path, num_classes)
    save_deeplab(out, model, {**dict(meta or {}), **_origin(path, "deeplab")})
    return model


__all__ = [
    "SOURCES",
    "convert_classifier_checkpoint",
    "convert_deeplab_checkpoint",
    "published_to_classifier_state",
    "read_published_classifier",
    "write_converted_classifier",
    "write_converted_deeplab",
]

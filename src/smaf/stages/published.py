"""Start from a trained model instead of training: ``pretrain.init_checkpoint`` and
``deeplab.init_checkpoint``.

Either a published checkpoint, converted to this project's model file
(:mod:`smaf.models.convert_published`: key mapping, background channel first, strict load),
or a model file of this project (``model.pt`` of any run), checked by loading it
(:func:`~smaf.models.checkpoint.load_model` / :func:`~smaf.models.deeplab.load_deeplab`) and
copied unchanged. The stage's ``history.csv`` then has one row saying where the model came
from (no loss: nothing was trained).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from smaf.data.index import DatasetIndex, read_index
from smaf.errors import ConfigError, DataError
from smaf.io import atomic_write
from smaf.models.checkpoint import load_model
from smaf.models.convert_published import write_converted_classifier, write_converted_deeplab
from smaf.models.deeplab import load_deeplab
from smaf.stages.common import write_history

log = logging.getLogger(__name__)

#: The history column that says where an untrained stage's model came from.
NOTE_COLUMN = "note"


def is_project_model(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a model file of this project (``{'model', 'model_config', ...}``).

    Read with ``weights_only=True``; a file torch cannot read counts as not ours (the
    converters then say what they expected).

    Raises:
        DataError: the file does not exist.
    """
    if not Path(path).is_file():
        raise DataError(f"checkpoint not found: {path}. Fix the init_checkpoint path.")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return False
    return isinstance(obj, dict) and {"model", "model_config"} <= set(obj)


def _copy(src: str | os.PathLike[str], dest: str | os.PathLike[str]) -> None:
    with atomic_write(dest) as tmp:
        shutil.copyfile(src, tmp)


def _note(out_history: str | os.PathLike[str], text: str) -> None:
    write_history(out_history, [{"step": 0, NOTE_COLUMN: text}])


def adopt_classifier(
    checkpoint: str | os.PathLike[str],
    index: DatasetIndex | str | os.PathLike[str],
    model: Mapping[str, Any],
    out_model: str | os.PathLike[str],
    out_history: str | os.PathLike[str],
) -> dict[str, Any]:
    """Rule ``pretrain`` with ``pretrain.init_checkpoint``: the pretrained classifier from a file.

    Args:
        checkpoint: a published EPS / SMAF classifier or a model file of this project.
        index: the dataset index (its class count and names).
        model: the ``model:`` config section; the checkpoint must have its ``head`` and
            ``width`` (a published EPS model has the ``eps`` head, width 1.0); its
            ``freeze_bn`` / ``freeze_stem`` are given to a converted model.

    Returns:
        The written model's meta.

    Raises:
        ConfigError: the checkpoint's head or width differ from ``model:``.
        DataError: unreadable file, wrong classes, keys or shapes.
    """
    index = read_index(index)
    head, width = model.get("head"), float(model.get("width", 1.0))
    if is_project_model(checkpoint):
        net, meta = load_model(checkpoint, num_classes=index.num_classes)  # validates it
        if net.config.head != head:
            raise ConfigError(
                f"{checkpoint} has the '{net.config.head}' head but model.head is '{head}'; "
                f"set model.head: {net.config.head} or use a model with the '{head}' head."
            )
        if float(net.config.width) != width:
            raise ConfigError(
                f"{checkpoint} has width {net.config.width} but model.width is {width}; set "
                f"model.width: {net.config.width}."
            )
        _copy(checkpoint, out_model)
        note = f"copied from {checkpoint} (a model of this project; not trained here)"
    else:
        meta = {
            "stage": "pretrain",
            "method": "checkpoint",
            "class_names": index.class_names,
            "iterations": 0,
        }
        net = write_converted_classifier(
            checkpoint,
            out_model,
            index.num_classes,
            meta=meta,
            expect_head=head,
            freeze_bn=bool(model.get("freeze_bn", True)),
            freeze_stem=bool(model.get("freeze_stem", True)),
        )
        if float(net.config.width) != width:
            Path(out_model).unlink()  # not left looking complete
            raise ConfigError(
                f"{checkpoint} is a ResNet38d of width {net.config.width:g} but model.width is "
                f"{width:g}; set model.width: {net.config.width:g}."
            )
        note = f"converted from {checkpoint} (published; not trained here)"
    _note(out_history, note)
    log.info("pretrain: %s -> %s", note, out_model)
    return dict(meta)


def adopt_deeplab(
    checkpoint: str | os.PathLike[str],
    index: DatasetIndex | str | os.PathLike[str],
    out_model: str | os.PathLike[str],
    out_history: str | os.PathLike[str],
) -> dict[str, Any]:
    """Rule ``deeplab_train`` with ``deeplab.init_checkpoint`` (evaluation only).

    ``checkpoint`` is deeplab-pytorch's trained ``.pth``, the authors' ``train2`` caffemodel
    (converted to a ``resnet101_caffe`` MSC with deeplab-pytorch's ASPP rates and MSC scales)
    or a DeepLab model file of this project (copied after loading it).

    Raises:
        DataError: the file is no DeepLab, or for another number of classes.
    """
    index = read_index(index)
    if Path(checkpoint).suffix != ".caffemodel" and is_project_model(checkpoint):
        _, meta = load_deeplab(checkpoint, num_classes=index.num_classes)  # validates it
        _copy(checkpoint, out_model)
        note = f"copied from {checkpoint} (a DeepLab of this project; not trained here)"
    else:
        meta = {
            "stage": "deeplab",
            "method": "checkpoint",
            "class_names": index.class_names,
            "iterations": 0,
        }
        write_converted_deeplab(checkpoint, out_model, index.num_classes, meta=meta)
        note = f"converted from {checkpoint} (published; not trained here)"
    _note(out_history, note)
    log.info("deeplab: %s -> %s", note, out_model)
    return dict(meta)

"""Load the DeepLab authors' Caffe ResNet-101 weights into ``resnet101_caffe`` DeepLab models.

Two kinds of files, either as the original ``.caffemodel`` (read with protobuf, see
:mod:`smaf.models.caffemodel`) or as deeplab-pytorch's ``convert.py`` output (``.pth``):

* the **COCO init** — ``init.caffemodel`` from the DeepLab-v2 ResNet-101 release, converted by
  deeplab-pytorch to ``deeplabv1_resnet101-coco.pth`` (its ``DeepLabV1``: the backbone plus a
  1×1 ``fc`` conv to 91 COCO classes). It initialises the backbone (``deeplab.pretrained``);
  the ``fc`` classifier, like deeplab-pytorch's ``strict=False`` load, is left out and ASPP
  keeps its ``N(0, 0.01²)`` init. :func:`load_caffe_backbone`.
* a **trained DeepLab-v2 MSC model** — deeplab-pytorch's ``deeplabv2_resnet101_msc-*.pth``
  (keys ``base.layer…``, ``base.aspp.c0…c3``) or the authors' ``train2_iter_20000.caffemodel``
  (``fc1_voc12_c0…c3``). Loaded whole, for evaluation. :func:`load_deeplab_pytorch_model`.

Names in a file are first brought to deeplab-pytorch's (``layer1.conv1.conv.weight``,
``aspp.c0.bias``, ``fc.weight``; :func:`read_deeplab_weights`); this project's MSC model names
the same tensors ``base.backbone.layer1.conv1.conv.weight`` and ``base.aspp.convs.0.bias``
(:func:`to_msc_keys`). Caffe ``BatchNorm`` blobs are (mean·s, var·s, s): the statistics are
divided by the scale factor ``s`` (0 when ``s`` is 0, as Caffe does); the ``Scale`` layer of the
same name (``scale…`` for ``bn…``) gives the BN weight and bias. Every load is strict and
checks shapes and, for a ``.caffemodel``, each convolution's stride, padding and dilation.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from smaf.errors import DataError, SmafError
from smaf.models.caffemodel import CaffeLayer, ConvGeometry, read_caffemodel
from smaf.models.convert_mxnet import load_state_dict_checked, read_state_dict
from smaf.models.resnet101_caffe import BN_EPS, ResNet101Caffe, caffe_layer_module

log = logging.getLogger(__name__)

WEIGHTS_HINT = (
    "deeplab.backbone resnet101_caffe (deeplab.width 1.0) takes the DeepLab authors' "
    "init.caffemodel or deeplab-pytorch's deeplabv1_resnet101-coco.pth / "
    "deeplabv2_resnet101_msc-*.pth; torchvision ResNet weights need deeplab.backbone resnet101."
)


def _first(keys: list[str], limit: int = 6) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def caffemodel_to_state_dict(
    layers: list[CaffeLayer], source: str | os.PathLike[str] = "caffemodel"
) -> tuple[dict[str, torch.Tensor], dict[str, ConvGeometry]]:
    """Caffe layers → (deeplab-pytorch state dict, convolution geometry by module path).

    Layers without blobs (ReLU, Pooling, Eltwise, Interp, losses) are skipped, as are the MSC
    branch copies. A layer with blobs that :func:`caffe_layer_module` does not know, a blob
    count that does not fit its type, or a BN ``eps`` other than 1e-5 raises a DataError.
    """
    state: dict[str, torch.Tensor] = {}
    geometry: dict[str, ConvGeometry] = {}
    unknown: list[str] = []

    def put(key: str, array: np.ndarray) -> None:
        if key in state:
            raise DataError(f"{source}: two Caffe layers map onto {key!r}. {WEIGHTS_HINT}")
        state[key] = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))

    for layer in layers:
        if not layer.blobs:
            continue
        module = caffe_layer_module(layer.name)
        if module is None:
            if "res075" not in layer.name and "res05" not in layer.name:
                unknown.append(f"{layer.name} ({layer.type})")
            continue
        n = len(layer.blobs)
        if module == "fc":  # an init's own classifier (COCO): kept only to be left out on load
            put("fc.weight", layer.blobs[0])
            if n > 1:
                put("fc.bias", layer.blobs[1].reshape(-1))
        elif layer.conv is not None:
            if n not in (1, 2):
                raise DataError(f"{source}: convolution {layer.name!r} has {n} blobs, not 1 or 2.")
            put(f"{module}.weight", layer.blobs[0])
            if n == 2:
                put(f"{module}.bias", layer.blobs[1].reshape(-1))
            geometry[module] = layer.conv
        elif layer.type == "BatchNorm":
            if n != 3:
                raise DataError(f"{source}: BatchNorm {layer.name!r} has {n} blobs, not 3.")
            if layer.bn_eps is not None and abs(layer.bn_eps - BN_EPS) > 1e-9:
                raise DataError(
                    f"{source}: BatchNorm {layer.name!r} has eps {layer.bn_eps}, the network "
                    f"uses {BN_EPS}; this is not the DeepLab ResNet-101. {WEIGHTS_HINT}"
                )
            s = float(layer.blobs[2].reshape(-1)[0])
            factor = 0.0 if s == 0 else 1.0 / s  # Caffe's BatchNormLayer does the same
            put(f"{module}.running_mean", layer.blobs[0].reshape(-1) * factor)
            put(f"{module}.running_var", layer.blobs[1].reshape(-1) * factor)
            state[f"{module}.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
        elif layer.type == "Scale":
            if n != 2:
                raise DataError(
                    f"{source}: Scale {layer.name!r} has {n} blobs; the BN affine needs a scale "
                    "and a bias (bias_term: true)."
                )
            put(f"{module}.weight", layer.blobs[0].reshape(-1))
            put(f"{module}.bias", layer.blobs[1].reshape(-1))
        else:
            unknown.append(f"{layer.name} ({layer.type})")
    if unknown:
        raise DataError(
            f"{source}: Caffe layers with weights that are not part of the DeepLab-v2 "
            f"ResNet-101: {_first(unknown)}. {WEIGHTS_HINT}"
        )
    return state, geometry


def _strip_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items()}
    return state


def read_deeplab_weights(
    path: str | os.PathLike[str],
) -> tuple[dict[str, torch.Tensor], dict[str, ConvGeometry]]:
    """A ``.caffemodel`` or deeplab-pytorch ``.pth`` → (deeplab-pytorch keys, conv geometry).

    Keys come without the MSC ``base.`` (and DataParallel ``module.``) prefix:
    ``layer1.conv1.conv.weight``, ``aspp.c0.weight``, ``fc.weight``. The geometry (stride,
    padding, dilation of each conv) is only known for a ``.caffemodel``; for a ``.pth`` it is
    empty.
    """
    if Path(path).suffix == ".caffemodel":
        return caffemodel_to_state_dict(read_caffemodel(path), path)
    state = _strip_prefix(_strip_prefix(read_state_dict(path), "module."), "base.")
    return state, {}


def msc_module_path(path: str) -> str:
    """deeplab-pytorch module path → this project's MSC path (``aspp.c0`` → ``base.aspp.convs.0``)."""
    if path.startswith("aspp.c"):
        return "base.aspp.convs." + path[len("aspp.c") :]
    return "base.backbone." + path


def to_msc_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """deeplab-pytorch keys → this project's MSC keys (``aspp.c0.w`` → ``base.aspp.convs.0.w``)."""
    out = {}
    for key, value in state.items():
        module, param = key.rsplit(".", 1)
        out[f"{msc_module_path(module)}.{param}"] = value
    return out


def _drop_leading_ones(shape: torch.Size) -> tuple[int, ...]:
    dims = tuple(shape)
    while dims and dims[0] == 1:
        dims = dims[1:]
    return dims


def _fit_shapes(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Reshape tensors stored with extra leading 1s (Caffe's legacy 4-D blobs) to the model's."""
    expected = model.state_dict()
    fitted = dict(state)
    for key, value in state.items():
        want = expected.get(key)
        if want is None or value.shape == want.shape:
            continue
        if _drop_leading_ones(value.shape) == _drop_leading_ones(want.shape):
            fitted[key] = value.reshape(want.shape)
    return fitted


def _check_geometry(
    geometry: Mapping[str, ConvGeometry], module_of: dict[str, nn.Module], source: object
) -> None:
    """Each Caffe convolution must have the kernel, stride, padding and dilation of its module."""
    bad = []
    for path, geo in geometry.items():
        conv = module_of.get(path)
        if not isinstance(conv, nn.Conv2d):
            continue
        have = (tuple(conv.kernel_size), tuple(conv.stride), tuple(conv.padding))
        have += (tuple(conv.dilation), conv.groups)
        want = (geo.kernel, geo.stride, geo.pad, geo.dilation, geo.group)
        if have != want:
            bad.append(f"{path} (kernel, stride, pad, dilation, group) {want} vs model {have}")
    if bad:
        raise DataError(
            f"{source}: convolutions laid out unlike the DeepLab-v2 ResNet-101: {_first(bad, 3)}. "
            f"{WEIGHTS_HINT}"
        )


def _load(model: nn.Module, state: dict[str, torch.Tensor], source: object) -> None:
    try:
        load_state_dict_checked(model, _fit_shapes(state, model), source)
    except SmafError as exc:
        raise DataError(f"{exc} {WEIGHTS_HINT}") from None


def load_caffe_backbone(backbone: ResNet101Caffe, path: str | os.PathLike[str]) -> None:
    """Initialise ``backbone`` from the COCO init (or any DeepLab ResNet-101 weights) strictly.

    Every backbone tensor must be in the file with its shape; the file's classifier (``fc.*``)
    and ASPP (``aspp.*``) are left out (logged); any other key is an error.

    Raises:
        DataError: missing, extra or misshapen tensors, or a conv laid out differently.
    """
    state, geometry = read_deeplab_weights(path)
    skipped = sorted({k.split(".")[0] for k in state if k.startswith(("fc.", "aspp."))})
    state = {k: v for k, v in state.items() if not k.startswith(("fc.", "aspp."))}
    modules = dict(backbone.named_modules())
    _check_geometry(geometry, {p: modules.get(p) for p in geometry}, path)
    _load(backbone, state, path)
    if skipped:
        log.info("%s: backbone loaded; left out the file's %s", path, ", ".join(skipped))


def load_deeplab_pytorch_model(model: nn.Module, path: str | os.PathLike[str]) -> None:
    """Load a whole trained DeepLab-v2 (backbone + ASPP) into ``model`` (an MSC) strictly.

    ``model`` is :func:`smaf.models.deeplab.build_deeplab` of a ``resnet101_caffe`` config with
    the file's number of classes (VOC: 20, i.e. 21 ASPP outputs with background at 0, the order
    of deeplab-pytorch and of this project).

    Raises:
        DataError: the file's class count, keys, shapes or conv layout do not fit.
    """
    state, geometry = read_deeplab_weights(path)
    classes = state.get("aspp.c0.weight")
    want = model.base.aspp.convs[0].weight.shape[0]
    if classes is not None and classes.shape[0] != want:
        raise DataError(
            f"{path} has {classes.shape[0]} output channels (classes + background) but the "
            f"model has {want}; use a checkpoint trained on this dataset."
        )
    if "fc.weight" in state:
        raise DataError(
            f"{path} is a DeepLab init (its 'fc' classifier, no ASPP), not a trained DeepLab-v2; "
            "use it as deeplab.pretrained instead."
        )
    modules = dict(model.named_modules())
    module_of = {p: modules.get(msc_module_path(p)) for p in geometry}
    _check_geometry(geometry, module_of, path)
    _load(model, to_msc_keys(state), path)


__all__ = [
    "WEIGHTS_HINT",
    "caffemodel_to_state_dict",
    "load_caffe_backbone",
    "load_deeplab_pytorch_model",
    "msc_module_path",
    "read_deeplab_weights",
    "to_msc_keys",
]

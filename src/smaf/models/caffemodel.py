"""Read and write Caffe ``.caffemodel`` weight files with the ``protobuf`` package, no Caffe.

A ``.caffemodel`` is one serialised ``caffe.NetParameter`` message. Only the handful of fields
that carry weights and layer geometry are declared here (field numbers and types as in Caffe's
``caffe.proto``, which the DeepLab-v2 fork shares); protobuf skips every other field while
parsing, so the subset reads complete files:

=======================  ============================================================
message                  fields used (number)
=======================  ============================================================
``NetParameter``         ``name`` (1), ``layer`` (100), legacy V1 ``layers`` (2)
``LayerParameter``       ``name`` (1), ``type`` (2), ``blobs`` (7),
                         ``convolution_param`` (106), ``batch_norm_param`` (139),
                         ``scale_param`` (142)
``BlobProto``            ``shape`` (7), ``data`` (5, float), ``double_data`` (8),
                         legacy 4-D ``num/channels/height/width`` (1–4)
``BlobShape``            ``dim`` (1, int64)
``ConvolutionParameter`` ``num_output`` (1), ``bias_term`` (2), ``pad`` (3),
                         ``kernel_size`` (4), ``stride`` (6), ``dilation`` (18),
                         ``pad_h/pad_w`` (9/10), ``kernel_h/kernel_w`` (11/12),
                         ``stride_h/stride_w`` (13/14), ``group`` (5)
``BatchNormParameter``   ``use_global_stats`` (1), ``moving_average_fraction`` (2),
                         ``eps`` (3, default 1e-5)
``ScaleParameter``       ``bias_term`` (4)
=======================  ============================================================

The message classes are built at run time from a ``FileDescriptorProto`` in a private
descriptor pool (:func:`caffe_messages`), so no ``protoc`` and no generated ``_pb2`` module
are needed. :func:`read_caffemodel` returns the layers with their blobs as numpy arrays;
:func:`write_caffemodel` writes such a list back (tests build tiny files with it).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

from smaf.errors import DataError
from smaf.io import atomic_write

_F = descriptor_pb2.FieldDescriptorProto
_PACKAGE = "smaf_caffe_subset"

# (message, [(field, number, type, label, message type or None, default or None, packed)])
_SCHEMA: list[tuple[str, list[tuple[str, int, int, int, str | None, str | None, bool]]]] = [
    ("BlobShape", [("dim", 1, _F.TYPE_INT64, _F.LABEL_REPEATED, None, None, True)]),
    (
        "BlobProto",
        [
            ("num", 1, _F.TYPE_INT32, _F.LABEL_OPTIONAL, None, "0", False),
            ("channels", 2, _F.TYPE_INT32, _F.LABEL_OPTIONAL, None, "0", False),
            ("height", 3, _F.TYPE_INT32, _F.LABEL_OPTIONAL, None, "0", False),
            ("width", 4, _F.TYPE_INT32, _F.LABEL_OPTIONAL, None, "0", False),
            ("data", 5, _F.TYPE_FLOAT, _F.LABEL_REPEATED, None, None, True),
            ("shape", 7, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, "BlobShape", None, False),
            ("double_data", 8, _F.TYPE_DOUBLE, _F.LABEL_REPEATED, None, None, True),
        ],
    ),
    (
        "ConvolutionParameter",
        [
            ("num_output", 1, _F.TYPE_UINT32, _F.LABEL_OPTIONAL, None, None, False),
            ("bias_term", 2, _F.TYPE_BOOL, _F.LABEL_OPTIONAL, None, "true", False),
            ("pad", 3, _F.TYPE_UINT32, _F.LABEL_REPEATED, None, None, False),
            ("kernel_size", 4, _F.TYPE_UINT32, _F.LABEL_REPEATED, None, None, False),
            ("group", 5, _F.TYPE_UINT32, _F.LABEL_OPTIONAL, None, "1", False),
            ("stride", 6, _F.TYPE_UINT32, _F.LABEL_REPEATED, None, None, False),
            ("pad_h", 9, _F.TYPE_UINT32, _F.LABEL_OPTIONAL, None, "0", False),
            ("pad_w", 10, _F.TYPE_UINT32, _F.LABEL_OPTIONAL, None, "0", False),
            ("kernel_h", 11, _F.TYPE_UINT32, _F.LABEL_OPTIONAL, None, None, False),
            ("kernel_w", 12, _F.TYPE_UINT32, _F.LABEL_OPTIONAL, None, None, False),
            ("stride_h", 13, _F.TYPE_UINT32, _F.LABEL_OPTIONAL, None, None, False),
            ("stride_w", 14, _F.TYPE_UINT32, _F.LABEL_OPTIONAL, None, None, False),
            ("dilation", 18, _F.TYPE_UINT32, _F.LABEL_REPEATED, None, None, False),
        ],
    ),
    (
        "BatchNormParameter",
        [
            ("use_global_stats", 1, _F.TYPE_BOOL, _F.LABEL_OPTIONAL, None, None, False),
            ("moving_average_fraction", 2, _F.TYPE_FLOAT, _F.LABEL_OPTIONAL, None, "0.999", False),
            ("eps", 3, _F.TYPE_FLOAT, _F.LABEL_OPTIONAL, None, "1e-05", False),
        ],
    ),
    ("ScaleParameter", [("bias_term", 4, _F.TYPE_BOOL, _F.LABEL_OPTIONAL, None, "false", False)]),
    (
        "LayerParameter",
        [
            ("name", 1, _F.TYPE_STRING, _F.LABEL_OPTIONAL, None, None, False),
            ("type", 2, _F.TYPE_STRING, _F.LABEL_OPTIONAL, None, None, False),
            ("blobs", 7, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, "BlobProto", None, False),
            (
                "convolution_param",
                106,
                _F.TYPE_MESSAGE,
                _F.LABEL_OPTIONAL,
                "ConvolutionParameter",
                None,
                False,
            ),
            (
                "batch_norm_param",
                139,
                _F.TYPE_MESSAGE,
                _F.LABEL_OPTIONAL,
                "BatchNormParameter",
                None,
                False,
            ),
            ("scale_param", 142, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, "ScaleParameter", None, False),
        ],
    ),
    # The pre-2015 layer format; declared only to recognise (and refuse) such files.
    ("V1LayerParameter", [("name", 4, _F.TYPE_STRING, _F.LABEL_OPTIONAL, None, None, False)]),
    (
        "NetParameter",
        [
            ("name", 1, _F.TYPE_STRING, _F.LABEL_OPTIONAL, None, None, False),
            ("layers", 2, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, "V1LayerParameter", None, False),
            ("layer", 100, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, "LayerParameter", None, False),
        ],
    ),
]


@functools.cache
def caffe_messages() -> dict[str, type]:
    """The message classes of the Caffe subset above, by message name (``'NetParameter'``, …)."""
    proto = descriptor_pb2.FileDescriptorProto(
        name=f"{_PACKAGE}.proto", package=_PACKAGE, syntax="proto2"
    )
    for message_name, fields in _SCHEMA:
        message = proto.message_type.add(name=message_name)
        for name, number, ftype, label, type_name, default, packed in fields:
            f = message.field.add(name=name, number=number, type=ftype, label=label)
            if type_name is not None:
                f.type_name = f".{_PACKAGE}.{type_name}"
            if default is not None:
                f.default_value = default
            if packed:
                f.options.packed = True
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{name}"))
        for name, _ in _SCHEMA
    }


@dataclass
class ConvGeometry:
    """Kernel, stride, padding and dilation of a Caffe convolution, each as ``(h, w)``."""

    kernel: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    pad: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    group: int = 1


@dataclass
class CaffeLayer:
    """One layer of a ``.caffemodel``: its name, type, weight blobs and (some) parameters.

    ``conv`` is set for convolution layers, ``bn_eps`` for BatchNorm layers,
    ``scale_bias_term`` for Scale layers; blobs keep the shape stored in the file.
    """

    name: str
    type: str
    blobs: list[np.ndarray] = field(default_factory=list)
    conv: ConvGeometry | None = None
    bn_eps: float | None = None
    scale_bias_term: bool | None = None


def _pair(values: Any, h: int | None, w: int | None, default: int) -> tuple[int, int]:
    """Caffe's spatial parameter: explicit ``_h``/``_w``, else one or two repeated values."""
    if h is not None and w is not None:
        return int(h), int(w)
    values = [int(v) for v in values]
    if not values:
        return default, default
    return (values[0], values[0]) if len(values) == 1 else (values[0], values[1])


def _conv_geometry(cp: Any) -> ConvGeometry:
    """``ConvolutionParameter`` → :class:`ConvGeometry` (Caffe's defaults where unset)."""

    def opt(name: str) -> int | None:
        return getattr(cp, name) if cp.HasField(name) else None

    return ConvGeometry(
        kernel=_pair(cp.kernel_size, opt("kernel_h"), opt("kernel_w"), 1),
        stride=_pair(cp.stride, opt("stride_h"), opt("stride_w"), 1),
        pad=_pair(cp.pad, opt("pad_h"), opt("pad_w"), 0),
        dilation=_pair(cp.dilation, None, None, 1),
        group=int(cp.group),
    )


def _blob_array(blob: Any, where: str) -> np.ndarray:
    """A ``BlobProto`` as a float32 array of its stored shape (``shape.dim`` or legacy 4-D)."""
    if len(blob.shape.dim):
        shape = tuple(int(d) for d in blob.shape.dim)
    else:
        shape = (blob.num, blob.channels, blob.height, blob.width)
    if len(blob.data):
        values = np.array(blob.data, dtype=np.float32)
    else:
        values = np.array(blob.double_data, dtype=np.float64).astype(np.float32)
    if values.size != int(np.prod(shape, dtype=np.int64)):
        raise DataError(
            f"{where}: blob of shape {shape} holds {values.size} values; the .caffemodel is "
            "truncated or corrupt, download it again."
        )
    return values.reshape(shape)


def read_caffemodel(path: str | os.PathLike[str]) -> list[CaffeLayer]:
    """Parse a ``.caffemodel`` into its layers, in file order (layers without blobs included).

    Raises:
        DataError: missing, unparsable or pre-2015 (V1 ``layers``) file.
    """
    path = Path(path)
    net = caffe_messages()["NetParameter"]()
    try:
        net.ParseFromString(path.read_bytes())
    except FileNotFoundError:
        raise DataError(f"caffemodel not found: {path}.") from None
    except DecodeError as exc:
        raise DataError(
            f"{path} is not a Caffe .caffemodel (protobuf: {exc}); download it again."
        ) from None
    if len(net.layers) and not len(net.layer):
        raise DataError(
            f"{path} uses Caffe's pre-2015 V1 layer format; upgrade it with Caffe's "
            "upgrade_net_proto_binary tool or use the converted .pth instead."
        )
    layers = []
    for lp in net.layer:
        where = f"{path} layer {lp.name!r}"
        layer = CaffeLayer(
            name=lp.name, type=lp.type, blobs=[_blob_array(b, where) for b in lp.blobs]
        )
        if lp.HasField("convolution_param") or "Convolution" in lp.type:
            layer.conv = _conv_geometry(lp.convolution_param)
        if lp.type == "BatchNorm":
            layer.bn_eps = float(lp.batch_norm_param.eps)
        if lp.type == "Scale":
            layer.scale_bias_term = bool(lp.scale_param.bias_term)
        layers.append(layer)
    return layers


def write_caffemodel(
    path: str | os.PathLike[str], layers: list[CaffeLayer], name: str = "net"
) -> None:
    """Write ``layers`` as a ``.caffemodel`` (blobs with ``shape``, float data)."""
    messages = caffe_messages()
    net = messages["NetParameter"](name=name)
    for layer in layers:
        lp = net.layer.add(name=layer.name, type=layer.type)
        for array in layer.blobs:
            blob = lp.blobs.add()
            blob.shape.dim.extend(int(d) for d in array.shape)
            blob.data.extend(np.asarray(array, dtype=np.float32).ravel().tolist())
        if layer.conv is not None:
            cp = lp.convolution_param
            cp.num_output = int(layer.blobs[0].shape[0]) if layer.blobs else 0
            cp.bias_term = len(layer.blobs) > 1
            g = layer.conv
            for values, repeated, h_field, w_field in (
                (g.kernel, cp.kernel_size, "kernel_h", "kernel_w"),
                (g.stride, cp.stride, "stride_h", "stride_w"),
                (g.pad, cp.pad, "pad_h", "pad_w"),
            ):
                if values[0] == values[1]:
                    repeated.append(values[0])
                else:
                    setattr(cp, h_field, values[0])
                    setattr(cp, w_field, values[1])
            cp.dilation.extend(g.dilation[:1] if g.dilation[0] == g.dilation[1] else g.dilation)
            cp.group = g.group
        if layer.bn_eps is not None:
            lp.batch_norm_param.use_global_stats = True
            lp.batch_norm_param.eps = layer.bn_eps
        if layer.scale_bias_term is not None:
            lp.scale_param.bias_term = layer.scale_bias_term
    with atomic_write(path) as tmp:
        Path(tmp).write_bytes(net.SerializeToString())


__all__ = ["CaffeLayer", "ConvGeometry", "caffe_messages", "read_caffemodel", "write_caffemodel"]

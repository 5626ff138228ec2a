"""Load the ImageNet weights of ResNet38d from the MXNet file, without MXNet.

The weights PSA/EPS/SMAF start from are ademxapp's model A1,
``ilsvrc-cls_rna-a1_cls1000_ep-0001.params``: an MXNet NDArray list. MXNet does not install on
Python 3.11, so :func:`load_mxnet_params` reads the binary format directly:

- header: ``uint64`` magic ``0x112``, ``uint64`` reserved, ``uint64`` array count;
- per array, one of three layouts, told apart by the leading ``uint32``:

  - V2/V3 (``0xF993FAC9`` / ``0xF993FACA``): ``int32`` storage type (0 = dense), shape as
    ``int32`` ndim + ``int64`` dims, context (``int32`` dev_type, ``int32`` dev_id),
    ``int32`` type flag, raw little-endian data;
  - V1 (``0xF993FAC8``): shape as ``uint32`` ndim + ``int64`` dims, context, type flag, data;
  - legacy (no magic): the leading ``uint32`` *is* ndim, then ``uint32`` dims, context,
    type flag, data;

- then ``uint64`` name count and each name as ``uint64`` length + bytes (``arg:``/``aux:``
  prefixes for parameters and auxiliary states such as BN running statistics).

:func:`mxnet_to_resnet38d_state_dict` renames the arrays to the torch names of
:class:`~smaf.models.resnet38d.ResNet38d` (as PSA's ``convert_mxnet_to_torch`` does) and drops
the ImageNet classifier ``linear1000``. :func:`load_imagenet_weights` accepts that ``.params``
file or a torch ``.pth`` converted from it.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from torch import nn

from smaf.errors import SmafError
from smaf.models.torch_files import load_torch_file

#: Magic number of an MXNet NDArray list file (``kMXAPINDArrayListMagic``).
NDARRAY_LIST_MAGIC = 0x112
NDARRAY_V1_MAGIC = 0xF993FAC8
NDARRAY_V2_MAGIC = 0xF993FAC9
NDARRAY_V3_MAGIC = 0xF993FACA

#: MXNet ``type_flag`` → numpy dtype (little-endian, as MXNet writes on x86).
MXNET_DTYPES: dict[int, np.dtype] = {
    0: np.dtype("<f4"),
    1: np.dtype("<f8"),
    2: np.dtype("<f2"),
    3: np.dtype("u1"),
    4: np.dtype("<i4"),
    5: np.dtype("i1"),
    6: np.dtype("<i8"),
    7: np.dtype("?"),
}

#: MXNet BatchNorm parameter suffix → torch BatchNorm2d attribute.
_BN_SUFFIX = {
    "gamma": "weight",
    "beta": "bias",
    "moving_mean": "running_mean",
    "moving_var": "running_var",
}

_WEIGHTS_HINT = (
    "Use the ResNet38d ImageNet weights 'ilsvrc-cls_rna-a1_cls1000_ep-0001.params' (ademxapp "
    "model A1) or a torch state dict converted from it, with backbone width 1.0."
)


class _Reader:
    """Little-endian struct reads from a binary file that fail with a SmafError at EOF."""

    def __init__(self, f: BinaryIO, path: Path) -> None:
        self.f = f
        self.path = path

    def read(self, n: int) -> bytes:
        data = self.f.read(n)
        if len(data) != n:
            raise SmafError(
                f"{self.path}: unexpected end of file (wanted {n} bytes, got {len(data)}). "
                "The MXNet .params file is truncated: download it again."
            )
        return data

    def unpack(self, fmt: str) -> tuple:
        return struct.unpack("<" + fmt, self.read(struct.calcsize("<" + fmt)))


def _read_ndarray(r: _Reader, index: int) -> np.ndarray:
    """Read one NDArray (any of the V3/V2/V1/legacy layouts) as a numpy array."""
    (magic,) = r.unpack("I")
    if magic in (NDARRAY_V2_MAGIC, NDARRAY_V3_MAGIC):
        (stype,) = r.unpack("i")
        if stype != 0:
            raise SmafError(
                f"{r.path}: array #{index} uses MXNet sparse storage (type {stype}); only dense "
                f"arrays are supported. {_WEIGHTS_HINT}"
            )
        (ndim,) = r.unpack("i")
        # V2 marks "no array" with ndim 0, V3 (numpy semantics) with ndim -1.
        if ndim < 0 or (ndim == 0 and magic == NDARRAY_V2_MAGIC):
            return np.empty((0,), dtype=np.float32)
        shape = r.unpack(f"{ndim}q")
    elif magic == NDARRAY_V1_MAGIC:
        (ndim,) = r.unpack("I")
        if ndim == 0:
            return np.empty((0,), dtype=np.float32)
        shape = r.unpack(f"{ndim}q")
    else:
        # Legacy files have no magic: the first uint32 is ndim and the dims are uint32.
        ndim = magic
        if ndim > 32:
            raise SmafError(
                f"{r.path}: array #{index} has an unknown header ({magic:#x}); this is not an "
                f"MXNet NDArray file this reader understands. {_WEIGHTS_HINT}"
            )
        if ndim == 0:
            return np.empty((0,), dtype=np.float32)
        shape = r.unpack(f"{ndim}I")
    r.unpack("ii")  # context (dev_type, dev_id): always loaded to CPU here
    (type_flag,) = r.unpack("i")
    if type_flag not in MXNET_DTYPES:
        raise SmafError(f"{r.path}: array #{index} has unsupported MXNet dtype flag {type_flag}.")
    dtype = MXNET_DTYPES[type_flag]
    count = int(np.prod(shape, dtype=np.int64))
    data = r.read(count * dtype.itemsize)
    return np.frombuffer(data, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def load_mxnet_params(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read an MXNet NDArray list (``.params``) into ``{name: array}``, names as stored.

    Names keep their ``arg:``/``aux:`` prefix (``'arg:conv1a_weight'``,
    ``'aux:bn2a_branch2a_moving_mean'``). Raises :class:`SmafError` for a missing, truncated or
    foreign file.
    """
    path = Path(path)
    try:
        f = path.open("rb")
    except FileNotFoundError:
        raise SmafError(f"MXNet weights not found: {path}. {_WEIGHTS_HINT}") from None
    with f:
        r = _Reader(f, path)
        header, _reserved = r.unpack("QQ")
        if header != NDARRAY_LIST_MAGIC:
            raise SmafError(
                f"{path} is not an MXNet NDArray list (header {header:#x}, expected "
                f"{NDARRAY_LIST_MAGIC:#x}). {_WEIGHTS_HINT}"
            )
        (num_arrays,) = r.unpack("Q")
        arrays = [_read_ndarray(r, i) for i in range(num_arrays)]
        (num_names,) = r.unpack("Q")
        names = []
        for _ in range(num_names):
            (length,) = r.unpack("Q")
            names.append(r.read(length).decode("utf-8"))
        if num_names != num_arrays:
            raise SmafError(
                f"{path}: {num_arrays} arrays but {num_names} names; a weights file must name "
                f"every array. {_WEIGHTS_HINT}"
            )
    return dict(zip(names, arrays, strict=True))


# 'res4b5_branch2b1_weight', 'bn2a_branch2a_gamma', 'bn7a_branch2b2_moving_var', ...
_BLOCK_RE = re.compile(
    r"^(?P<kind>res|bn)(?P<stage>[2-7])(?P<block>a|b\d+)_(?P<branch>branch\w+?)_"
    r"(?P<param>weight|gamma|beta|moving_mean|moving_var)$"
)
_BN7_RE = re.compile(r"^bn7_(?P<param>gamma|beta|moving_mean|moving_var)$")


def mxnet_name_to_torch(name: str) -> str | None:
    """Torch state-dict key for an MXNet ResNet38d array name; ``None`` for ``linear1000``.

    ``'arg:conv1a_weight'`` → ``'conv1a.weight'``; ``'arg:res2a_branch2a_weight'`` →
    ``'b2.conv_branch2a.weight'``; ``'aux:bn4b5_branch2b1_moving_mean'`` →
    ``'b4_5.bn_branch2b1.running_mean'``; ``'arg:bn7_gamma'`` → ``'bn7.weight'``. Raises
    :class:`SmafError` for a name that is not part of ResNet38d.
    """
    bare = name.split(":", 1)[1] if name.startswith(("arg:", "aux:")) else name
    if bare.startswith("linear1000"):
        return None  # the ImageNet classifier: not part of the backbone
    if bare == "conv1a_weight":
        return "conv1a.weight"
    if m := _BN7_RE.match(bare):
        return f"bn7.{_BN_SUFFIX[m['param']]}"
    if m := _BLOCK_RE.match(bare):
        block = f"b{m['stage']}" if m["block"] == "a" else f"b{m['stage']}_{m['block'][1:]}"
        if m["kind"] == "res":
            if m["param"] != "weight":
                raise SmafError(f"unexpected MXNet parameter {name!r}: convs have only weights.")
            return f"{block}.conv_{m['branch']}.weight"
        if m["param"] == "weight":
            raise SmafError(f"unexpected MXNet parameter {name!r}: BN has gamma/beta, not weight.")
        return f"{block}.bn_{m['branch']}.{_BN_SUFFIX[m['param']]}"
    raise SmafError(f"MXNet array {name!r} is not part of ResNet38d. {_WEIGHTS_HINT}")


def mxnet_to_resnet38d_state_dict(params: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Rename MXNet arrays (from :func:`load_mxnet_params`) to a ResNet38d torch state dict.

    Drops ``linear1000``; adds ``num_batches_tracked = 0`` for every BN so the result is a
    complete state dict. Values are copied unchanged (same dtype and shape).
    """
    state: dict[str, torch.Tensor] = {}
    for name, array in params.items():
        key = mxnet_name_to_torch(name)
        if key is None:
            continue
        if key in state:
            raise SmafError(f"MXNet arrays map twice onto {key!r} (last: {name!r}).")
        state[key] = torch.from_numpy(np.array(array, copy=True))
        if key.endswith(".running_mean"):
            bn = key.rsplit(".", 1)[0]
            state[f"{bn}.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    return state


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read weights from an MXNet ``.params`` file (converted) or a torch ``.pth``/``.pt``.

    A torch file may hold a bare state dict or a checkpoint dict with the state dict under
    ``'model'`` or ``'state_dict'``. Only tensors are loaded (``torch.load(weights_only=True)``).
    """
    path = Path(path)
    if path.suffix == ".params":
        return mxnet_to_resnet38d_state_dict(load_mxnet_params(path))
    obj = load_torch_file(
        path,
        missing=f"weights file not found: {path}.",
        unreadable="Expected a torch state dict saved with torch.save, or an MXNet .params file.",
    )
    if isinstance(obj, Mapping) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in ("model", "state_dict"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise SmafError(
            f"{path} does not hold a state dict (a mapping of names to tensors, possibly under "
            "'model' or 'state_dict')."
        )
    return dict(obj)


def _format_keys(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def load_state_dict_checked(
    model: nn.Module, state: Mapping[str, torch.Tensor], source: str | os.PathLike[str]
) -> None:
    """``model.load_state_dict(state, strict=True)`` with a readable :class:`SmafError`.

    Missing BN ``num_batches_tracked`` counters are filled with 0 (files converted by PSA's
    script lack them). Any other missing key, unexpected key or shape mismatch raises a
    SmafError naming ``source`` and listing the offending keys, before anything is copied.
    """
    expected = model.state_dict()
    state = dict(state)
    for key, value in expected.items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros_like(value)
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or mismatched:
        problems = []
        if mismatched:
            problems.append(f"shape mismatch: {_format_keys(mismatched)}")
        if missing:
            problems.append(f"missing: {_format_keys(missing)}")
        if unexpected:
            problems.append(f"unexpected: {_format_keys(unexpected)}")
        raise SmafError(
            f"weights in {source} do not fit the {type(model).__name__} "
            f"({'; '.join(problems)}). Check that the file was made for this model: same "
            "backbone width, same head type and same number of classes."
        )
    model.load_state_dict(state, strict=True)


def load_state_dict_file(model: nn.Module, path: str | os.PathLike[str]) -> None:
    """Load a weights file (:func:`read_state_dict`) into ``model`` strictly, with clear errors."""
    load_state_dict_checked(model, read_state_dict(path), path)


def load_imagenet_weights(model: nn.Module, path: str | os.PathLike[str]) -> None:
    """Load ResNet38d ImageNet weights (MXNet ``.params`` or converted ``.pth``) into ``model``.

    ``model`` is a :class:`~smaf.models.resnet38d.ResNet38d`, or anything with such a
    ``.backbone`` attribute (the weights then go to the backbone; the head keeps its init).
    Every backbone tensor must be present with the right shape (the ImageNet weights fit only
    width 1.0); anything else raises a :class:`SmafError` naming the file and the keys.
    """
    target = getattr(model, "backbone", model)
    state = read_state_dict(path)
    try:
        load_state_dict_checked(target, state, path)
    except SmafError as exc:
        raise SmafError(f"{exc} {_WEIGHTS_HINT}") from None

"""Key names, shapes and Caffe layer names of deeplab-pytorch's DeepLab-v2 ResNet-101.

Written out from reading deeplab-pytorch's model code (``libs/models/resnet.py``: ``_Stem`` →
``layer1.conv1.{conv,bn}``, ``_ResLayer`` → ``block1..N``, ``_Bottleneck`` →
``reduce``/``conv3x3``/``increase``/``shortcut``, each a ``_ConvBnReLU`` with ``conv`` and
``bn``; ``deeplabv1.py``: a 1×1 ``fc`` to 91 COCO classes) and from the Caffe layer names of
the DeepLab-v2 ResNet-101 that its ``convert.py`` translates (``res4b22_branch2a``,
``bn_conv1``, ``scale5c_branch2c``, …): an independent spec of what the model must match.
"""

from __future__ import annotations

import numpy as np
import torch

from smaf.models.caffemodel import CaffeLayer, ConvGeometry

# stage → (blocks, in, out, stride of block1, dilation); channels at width 1.
STAGES = {
    2: (3, 64, 256, 1, 1),
    3: (4, 256, 512, 2, 1),
    4: (23, 512, 1024, 1, 2),
    5: (3, 1024, 2048, 1, 4),
}
BRANCHES = {"2a": "reduce", "2b": "conv3x3", "2c": "increase", "1": "shortcut"}


def caffe_block_name(stage: int, i: int) -> str:
    """MSRA/DeepLab block names: res2a/b/c, res3a, res3b1..b3, res4a, res4b1..b22, res5a/b/c."""
    if stage in (2, 5):
        return "abc"[i]
    return "a" if i == 0 else f"b{i}"


def convs(width: float = 1.0):
    """``(caffe conv name, caffe bn suffix, torch module, [out, in, k, k], stride, pad, dilation)``."""
    c = lambda n: int(n * width)  # noqa: E731  (width 1/8 keeps every count a whole number)
    yield "conv1", "_conv1", "layer1.conv1", (c(64), 3, 7, 7), 2, 3, 1
    for stage, (n, cin, cout, stride, dil) in STAGES.items():
        for i in range(n):
            inc, mid = (cin if i == 0 else cout), cout // 4
            block = f"{stage}{caffe_block_name(stage, i)}"
            prefix = f"layer{stage}.block{i + 1}"
            s = stride if i == 0 else 1
            yield (
                f"res{block}_branch2a",
                f"{block}_branch2a",
                f"{prefix}.reduce",
                (c(mid), c(inc), 1, 1),
                s,
                0,
                1,
            )
            yield (
                f"res{block}_branch2b",
                f"{block}_branch2b",
                f"{prefix}.conv3x3",
                (c(mid), c(mid), 3, 3),
                1,
                dil,
                dil,
            )
            yield (
                f"res{block}_branch2c",
                f"{block}_branch2c",
                f"{prefix}.increase",
                (c(cout), c(mid), 1, 1),
                1,
                0,
                1,
            )
            if i == 0:
                yield (
                    f"res{block}_branch1",
                    f"{block}_branch1",
                    f"{prefix}.shortcut",
                    (c(cout), c(inc), 1, 1),
                    s,
                    0,
                    1,
                )


def coco_init_shapes(width: float = 1.0) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of deeplab-pytorch's ``deeplabv1_resnet101-coco.pth`` (width 1)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for _, _, module, shape, *_ in convs(width):
        shapes[f"{module}.conv.weight"] = shape
        for p in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{module}.bn.{p}"] = (shape[0],)
        shapes[f"{module}.bn.num_batches_tracked"] = ()
    shapes["fc.weight"] = (91, int(2048 * width), 1, 1)
    shapes["fc.bias"] = (91,)
    return shapes


def random_state(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(0)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=g) + 0.5
        else:
            state[key] = torch.randn(shape, generator=g) * 0.05
    return state


def caffe_out(n: int) -> int:
    """Output side of the Caffe ResNet: conv1 /2 (floor), ceil-mode pool /2, layer3 /2 (floor)."""
    n = (n - 1) // 2 + 1  # 7×7, stride 2, pad 3
    n = -(-(n - 1) // 2) + 1  # 3×3, stride 2, pad 1, ceil_mode
    return (n - 1) // 2 + 1  # 1×1, stride 2


def caffe_layers(width: float, state: dict[str, torch.Tensor], scale: float = 999.98):
    """A DeepLab-style layer list: conv / BatchNorm (stats × ``scale``) / Scale / ReLU per conv."""
    layers = []
    for name, bn, module, _, stride, pad, dil in convs(width):
        k = state[f"{module}.conv.weight"].shape[-1]
        geo = ConvGeometry((k, k), (stride, stride), (pad, pad), (dil, dil))
        layers.append(
            CaffeLayer(name, "Convolution", [state[f"{module}.conv.weight"].numpy()], geo)
        )
        stats = [
            state[f"{module}.bn.running_mean"] * scale,
            state[f"{module}.bn.running_var"] * scale,
        ]
        blobs = [s.numpy() for s in stats] + [np.array([scale], np.float32)]
        layers.append(CaffeLayer(f"bn{bn}", "BatchNorm", blobs, bn_eps=1e-5))
        affine = [state[f"{module}.bn.weight"].numpy(), state[f"{module}.bn.bias"].numpy()]
        layers.append(CaffeLayer(f"scale{bn}", "Scale", affine, scale_bias_term=True))
        layers.append(CaffeLayer(f"{name}_relu", "ReLU"))
    layers.insert(4, CaffeLayer("pool1", "Pooling"))
    return layers

"""The Caffe DeepLab-v2 ResNet-101 (``resnet101_caffe``) and its published weights.

Key names, shapes and Caffe layer names come from :mod:`deeplab_layouts`, written out from
reading deeplab-pytorch's model code and ``convert.py``: a spec of what the model must match,
not a copy of the model.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from deeplab_layouts import (
    STAGES,
    caffe_layers,
    caffe_out,
    coco_init_shapes,
    convs,
    random_state,
)

from smaf.errors import ConfigError, DataError
from smaf.models.caffemodel import CaffeLayer, ConvGeometry, read_caffemodel, write_caffemodel
from smaf.models.deeplab import DeepLabConfig, build_deeplab
from smaf.models.resnet101_caffe import CAFFE_MEAN_BGR, caffe_layer_module
from smaf.train import OptimConfig, build_optimizer
from smaf.transforms import normalize

#: Tiny networks: one torch thread (the machine is shared).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(**kw):
    torch.manual_seed(0)
    return build_deeplab(
        DeepLabConfig(backbone="resnet101_caffe", width=0.125, num_classes=4, **kw)
    )


# --------------------------------------------------------------------------- the network


def test_state_dict_is_deeplab_pytorch_key_for_key():
    with torch.device("meta"):  # full size, no memory
        model = build_deeplab(DeepLabConfig(backbone="resnet101_caffe", num_classes=20))
    got = {k: tuple(v.shape) for k, v in model.base.backbone.state_dict().items()}
    want = {k: v for k, v in coco_init_shapes().items() if not k.startswith("fc.")}
    assert got == want
    assert [tuple(c.weight.shape) for c in model.base.aspp.convs] == [(21, 2048, 3, 3)] * 4
    assert [c.dilation for c in model.base.aspp.convs] == [(6, 6), (12, 12), (18, 18), (24, 24)]
    modules = dict(model.base.backbone.named_modules())
    for _, _, module, _, stride, pad, dil in convs():
        conv = modules[f"{module}.conv"]
        assert (conv.stride, conv.padding, conv.dilation) == ((stride,) * 2, (pad,) * 2, (dil,) * 2)


def test_output_stride_8_and_msc_shapes():
    model = tiny().eval()
    with torch.no_grad():
        for h, w in ((321, 321), (65, 47), (33, 41)):
            out = model(torch.randn(1, 3, h, w))
            assert tuple(out.shape) == (1, 5, caffe_out(h), caffe_out(w))
    assert caffe_out(321) == 41 and caffe_out(513) == 65  # deeplab-pytorch's train/test sizes
    model.train()
    outs = model(torch.randn(2, 3, 64, 64))  # scales 1, 0.75, 0.5 → 64, 48, 32 px, then the max
    sizes = [caffe_out(64), caffe_out(48), caffe_out(32), caffe_out(64)]
    assert [tuple(o.shape) for o in outs] == [(2, 5, s, s) for s in sizes]


def test_input_is_converted_to_caffe_bgr_minus_mean():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)  # RGB
    model = tiny()
    got = model.base.backbone.to_caffe_input(normalize(image)[None])[0]
    want = torch.from_numpy(image[..., ::-1].astype(np.float32) - np.array(CAFFE_MEAN_BGR))
    torch.testing.assert_close(got, want.permute(2, 0, 1).float(), atol=1e-3, rtol=0)


def test_bn_frozen_and_param_groups_as_deeplab_pytorch():
    model = tiny().train()
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(not m.training for m in bns)
    assert not any(p.requires_grad for m in bns for p in m.parameters())
    groups = {g["name"]: g for g in model.param_groups()}
    n_convs = len(list(convs()))
    assert len(groups["backbone_weight"]["params"]) == n_convs  # every conv weight, × 1
    assert groups["backbone_other"]["params"] == []
    opt = build_optimizer(model.param_groups(), OptimConfig(lr=2.5e-4, weight_decay=5e-4))
    got = {g["name"]: (g["lr"], g["weight_decay"]) for g in opt.param_groups}
    assert got["aspp_weight"] == pytest.approx((2.5e-3, 5e-4))
    assert got["aspp_bias"] == pytest.approx((5e-3, 0.0))


def test_width_is_only_for_width_backbones():
    with pytest.raises(ConfigError, match="width"):
        DeepLabConfig(backbone="resnet101", width=0.5)
    DeepLabConfig(backbone="resnet101_caffe", width=0.5)


# --------------------------------------------------------------------------- the COCO init


def test_converted_coco_init_loads_strictly(tmp_path):
    """The full-size ``deeplabv1_resnet101-coco.pth`` layout (incl. the COCO ``fc``) loads."""
    state = random_state(coco_init_shapes())
    torch.save(state, tmp_path / "deeplabv1_resnet101-coco.pth")
    model = build_deeplab(
        DeepLabConfig(
            backbone="resnet101_caffe",
            num_classes=20,
            pretrained=str(tmp_path / "deeplabv1_resnet101-coco.pth"),
        )
    )
    loaded = model.base.backbone.state_dict()
    for key in ("layer1.conv1.conv.weight", "layer4.block23.conv3x3.bn.running_var"):
        assert torch.equal(loaded[key], state[key])
    # ASPP keeps its N(0, 0.01²) / zero init: the COCO classifier is not used.
    assert float(model.base.aspp.convs[0].bias.detach().abs().max()) == 0.0


def test_wrong_init_files_are_clear_errors(tmp_path):
    state = random_state(coco_init_shapes(0.125))
    missing = {k: v for k, v in state.items() if "layer5.block3.increase" not in k}
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(DataError, match=r"missing: layer5\.block3\.increase\.conv\.weight"):
        tiny(pretrained=str(tmp_path / "missing.pth"))
    torch.save({**state, "layer6.conv.weight": torch.zeros(1)}, tmp_path / "extra.pth")
    with pytest.raises(DataError, match=r"unexpected: layer6\.conv\.weight"):
        tiny(pretrained=str(tmp_path / "extra.pth"))
    from torchvision.models import resnet50

    torch.save(resnet50().state_dict(), tmp_path / "torchvision.pth")
    with pytest.raises(
        DataError, match="torchvision ResNet weights need deeplab.backbone resnet101"
    ):
        tiny(pretrained=str(tmp_path / "torchvision.pth"))


# --------------------------------------------------------------------------- .caffemodel


def test_layer_names_map_like_convert_py():
    assert caffe_layer_module("res4b22_branch2b") == "layer4.block23.conv3x3.conv"
    assert caffe_layer_module("bn3b1_branch2a") == "layer3.block2.reduce.bn"
    assert caffe_layer_module("scale5c_branch2c") == "layer5.block3.increase.bn"
    assert caffe_layer_module("res2a_branch1") == "layer2.block1.shortcut.conv"
    assert caffe_layer_module("bn_conv1") == caffe_layer_module("scale_conv1") == "layer1.conv1.bn"
    assert caffe_layer_module("fc1_voc12_c3") == "aspp.c3"
    assert caffe_layer_module("fc1") == "fc"
    assert caffe_layer_module("res4b22_branch2b_res05") is None  # MSC copy: shared weights
    assert caffe_layer_module("data") is None


def test_caffemodel_init_loads_with_bn_folded_from_batchnorm_and_scale(tmp_path):
    state = random_state(coco_init_shapes(0.125), seed=1)
    layers = caffe_layers(0.125, state)
    fc = np.zeros((91, 256, 1, 1), np.float32)
    # The COCO classifier (whatever its layer type) is read, then left out like ASPP.
    layers.append(CaffeLayer("fc1", "InnerProduct", [fc[:, :, 0, 0], np.zeros(91, np.float32)]))
    layers.append(
        CaffeLayer(
            "res2a_branch2a_res05", "Convolution", [np.zeros(3, np.float32)], ConvGeometry((1, 1))
        )
    )
    write_caffemodel(tmp_path / "init.caffemodel", layers)
    model = tiny(pretrained=str(tmp_path / "init.caffemodel"))
    loaded = model.base.backbone.state_dict()
    for key, value in state.items():
        if not key.startswith("fc."):
            torch.testing.assert_close(loaded[key], value, rtol=1e-5, atol=1e-6, msg=key)

    # A conv laid out like torchvision's (stride in the 3×3) is refused, naming the layer.
    bad = caffe_layers(0.125, state)
    for layer in bad:
        if layer.name == "res3a_branch2a":
            layer.conv.stride = (1, 1)
        if layer.name == "res3a_branch2b":
            layer.conv.stride = (2, 2)
    write_caffemodel(tmp_path / "bad.caffemodel", bad)
    with pytest.raises(DataError, match=r"laid out unlike .*: layer3\.block1\.reduce\.conv \("):
        tiny(pretrained=str(tmp_path / "bad.caffemodel"))
    extra = CaffeLayer("res6a_branch2a", "Convolution", [fc], ConvGeometry((1, 1)))
    unknown = [*caffe_layers(0.125, state), extra]
    write_caffemodel(tmp_path / "unknown.caffemodel", unknown)
    with pytest.raises(DataError, match=r"not part of .*: res6a_branch2a \(Convolution\)"):
        tiny(pretrained=str(tmp_path / "unknown.caffemodel"))


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, wire: int, payload: bytes) -> bytes:
    key = _varint(number << 3 | wire)
    return key + (_varint(len(payload)) + payload if wire == 2 else payload)


def test_caffemodel_reader_follows_caffe_proto_field_numbers(tmp_path):
    """Bytes encoded by hand from caffe.proto's field numbers (not via our message classes)."""
    weights = np.arange(2 * 3 * 1 * 1, dtype=np.float32)
    shape = _field(1, 2, b"".join(_varint(d) for d in (2, 3, 1, 1)))  # BlobShape.dim, packed
    blob = _field(7, 2, shape) + _field(5, 2, weights.tobytes())  # BlobProto.shape, .data
    conv_param = (
        _field(1, 0, _varint(2))  # num_output
        + _field(4, 0, _varint(1))  # kernel_size
        + _field(6, 0, _varint(2))  # stride
        + _field(3, 0, _varint(0))  # pad
        + _field(18, 0, _varint(4))  # dilation
    )
    conv = (
        _field(1, 2, b"res3a_branch1")
        + _field(2, 2, b"Convolution")
        + _field(3, 2, b"res2c")  # bottom: a field the reader does not declare
        + _field(7, 2, blob)
        + _field(106, 2, conv_param)
    )
    legacy = _field(1, 0, _varint(1)) + _field(2, 0, _varint(1)) + _field(3, 0, _varint(1))
    legacy += _field(4, 0, _varint(2)) + _field(8, 2, struct.pack("<2d", 0.25, 0.5))
    bn = (
        _field(1, 2, b"bn3a_branch1")
        + _field(2, 2, b"BatchNorm")
        + _field(7, 2, legacy)  # legacy num/channels/height/width + double_data
        + _field(139, 2, _field(3, 5, struct.pack("<f", 1e-3)))  # batch_norm_param.eps
    )
    net = _field(1, 2, b"deeplab") + _field(100, 2, conv) + _field(100, 2, bn)
    (tmp_path / "hand.caffemodel").write_bytes(net)
    layers = read_caffemodel(tmp_path / "hand.caffemodel")
    assert [(la.name, la.type) for la in layers] == [
        ("res3a_branch1", "Convolution"),
        ("bn3a_branch1", "BatchNorm"),
    ]
    np.testing.assert_array_equal(layers[0].blobs[0], weights.reshape(2, 3, 1, 1))
    assert layers[0].conv == ConvGeometry((1, 1), (2, 2), (0, 0), (4, 4))
    np.testing.assert_array_equal(layers[1].blobs[0], np.array([[[[0.25, 0.5]]]], np.float32))
    assert layers[1].bn_eps == pytest.approx(1e-3)

    (tmp_path / "junk.caffemodel").write_bytes(b"\xff\xff\xff")
    with pytest.raises(DataError, match="not a Caffe"):
        read_caffemodel(tmp_path / "junk.caffemodel")


def test_caffemodel_with_other_bn_eps_is_refused(tmp_path):
    state = random_state(coco_init_shapes(0.125))
    layers = caffe_layers(0.125, state)
    layers[1].bn_eps = 1e-3
    write_caffemodel(tmp_path / "eps.caffemodel", layers)
    with pytest.raises(DataError, match="eps 0.001"):
        tiny(pretrained=str(tmp_path / "eps.caffemodel"))


def test_zero_scale_factor_gives_zero_statistics_like_caffe(tmp_path):
    state = random_state(coco_init_shapes(0.125))
    layers = caffe_layers(0.125, state)
    layers[1].blobs[2] = np.array([0.0], np.float32)  # bn_conv1 never accumulated
    write_caffemodel(tmp_path / "zero.caffemodel", layers)
    bn = tiny(pretrained=str(tmp_path / "zero.caffemodel")).base.backbone.layer1.conv1.bn
    assert float(bn.running_mean.abs().max()) == 0.0 and float(bn.running_var.abs().max()) == 0.0


def test_full_model_matches_a_reference_forward_of_the_published_layout(tmp_path):
    """Conv-by-conv reference of deeplab-pytorch's forward (F.* calls on the state dict)."""
    state = random_state(coco_init_shapes(0.125), seed=2)
    torch.save(state, tmp_path / "init.pth")
    model = tiny(pretrained=str(tmp_path / "init.pth")).eval()
    image = torch.randn(1, 3, 37, 45)

    def convbn(x, module, stride, pad, dil, relu=True):
        x = F.conv2d(x, state[f"{module}.conv.weight"], None, stride, pad, dil)
        x = F.batch_norm(
            x,
            state[f"{module}.bn.running_mean"],
            state[f"{module}.bn.running_var"],
            state[f"{module}.bn.weight"],
            state[f"{module}.bn.bias"],
            False,
            0.0,
            1e-5,
        )
        return F.relu(x) if relu else x

    x = model.base.backbone.to_caffe_input(image)
    x = F.max_pool2d(convbn(x, "layer1.conv1", 2, 3, 1), 3, 2, 1, ceil_mode=True)
    for stage, (n, _, _, stride, dil) in STAGES.items():
        for i in range(n):
            p = f"layer{stage}.block{i + 1}"
            s = stride if i == 0 else 1
            h = convbn(x, f"{p}.reduce", s, 0, 1)
            h = convbn(h, f"{p}.conv3x3", 1, dil, dil)
            h = convbn(h, f"{p}.increase", 1, 0, 1, relu=False)
            x = F.relu(h + (convbn(x, f"{p}.shortcut", s, 0, 1, relu=False) if i == 0 else x))
    with torch.no_grad():
        torch.testing.assert_close(model.base.backbone(image), x, rtol=1e-4, atol=1e-5)

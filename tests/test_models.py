"""ResNet38d, the CAM/EPS/SMAF heads, the classifier wrapper and the MXNet weight loader."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from smaf.errors import ConfigError, SmafError
from smaf.models import (
    CAMHead,
    EPSHead,
    ModelConfig,
    ResNet38d,
    SMAFHead,
    build_classifier,
    cam_to_logits,
    load_imagenet_weights,
    load_mxnet_params,
    load_state_dict_file,
    move_background_first,
    mxnet_to_resnet38d_state_dict,
)

TINY = 0.125  # width of the test backbones: 8 … 512 channels


@pytest.fixture(scope="module")
def full_backbone() -> ResNet38d:
    """The real-size ResNet38d (built once: ~105 M parameters)."""
    torch.manual_seed(0)
    return ResNet38d(width=1.0)


def _bn_modules(model: nn.Module) -> list[nn.BatchNorm2d]:
    return [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]


# --------------------------------------------------------------------------------- backbone


def test_full_width_output_stride_and_channels(full_backbone: ResNet38d) -> None:
    assert full_backbone.out_channels == 4096
    full_backbone.eval()
    with torch.no_grad():
        feat = full_backbone.forward_features(torch.randn(1, 3, 64, 64))
    assert feat.shape == (1, 4096, 8, 8)
    assert feat.min() >= 0  # bn7 + ReLU closes the network


def test_reduced_width_shapes() -> None:
    model = ResNet38d(width=0.25).eval()
    assert model.out_channels == 1024
    with torch.no_grad():
        assert model(torch.randn(2, 3, 96, 96)).shape == (2, 1024, 12, 12)
        # Odd sizes round up at every stride-2 conv, like the reference.
        assert model(torch.randn(1, 3, 100, 75)).shape == (1, 1024, 13, 10)


def test_width_rounds_channels_to_multiples_of_8() -> None:
    model = ResNet38d(width=0.1)
    assert model.conv1a.out_channels == 8  # 6.4 → 8 (minimum)
    assert model.b7.conv_branch2b2.out_channels == model.out_channels == 408  # 409.6 → 408
    # Every stage width (the projection shortcuts' outputs) is a multiple of 8.
    stage_widths = [m.out_channels for n, m in model.named_modules() if n.endswith("branch1")]
    assert stage_widths == [16, 24, 48, 104, 208, 408]


def test_reference_parameter_names_and_shapes(full_backbone: ResNet38d) -> None:
    shapes = {k: tuple(v.shape) for k, v in full_backbone.state_dict().items()}
    expected = {
        "conv1a.weight": (64, 3, 3, 3),
        "b2.bn_branch2a.weight": (64,),
        "b2.conv_branch2a.weight": (128, 64, 3, 3),
        "b2.conv_branch1.weight": (128, 64, 1, 1),
        "b2_2.conv_branch2b1.weight": (128, 128, 3, 3),
        "b3.conv_branch1.weight": (256, 128, 1, 1),
        "b4_5.conv_branch2b1.weight": (512, 512, 3, 3),
        "b5.conv_branch2a.weight": (512, 512, 3, 3),
        "b5.conv_branch2b1.weight": (1024, 512, 3, 3),
        "b5.conv_branch1.weight": (1024, 512, 1, 1),
        "b5_2.bn_branch2b1.running_var": (512,),
        "b6.conv_branch2a.weight": (512, 1024, 1, 1),
        "b6.conv_branch2b1.weight": (1024, 512, 3, 3),
        "b6.bn_branch2b2.weight": (1024,),
        "b6.conv_branch2b2.weight": (2048, 1024, 1, 1),
        "b6.conv_branch1.weight": (2048, 1024, 1, 1),
        "b7.conv_branch2a.weight": (1024, 2048, 1, 1),
        "b7.conv_branch2b1.weight": (2048, 1024, 3, 3),
        "b7.conv_branch2b2.weight": (4096, 2048, 1, 1),
        "b7.conv_branch1.weight": (4096, 2048, 1, 1),
        "bn7.running_mean": (4096,),
    }
    for key, shape in expected.items():
        assert shapes.get(key) == shape, key
    # Same-shape blocks use the identity shortcut: no projection weights.
    for block in ("b2_1", "b3_2", "b4_1", "b5_1"):
        assert f"{block}.conv_branch1.weight" not in shapes
    blocks = {k.split(".")[0] for k in shapes}
    assert blocks == {"conv1a", "bn7", "b6", "b7"} | {
        f"b{s}{'' if i == 0 else f'_{i}'}"
        for s, n in ((2, 3), (3, 3), (4, 6), (5, 3))
        for i in range(n)
    }
    assert len(shapes) == 228  # as in jiwoon-ahn/psa's Net().state_dict()
    convs = [m for m in full_backbone.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.bias is None for c in convs)
    # b5 enters with dilation 1, then dilation 2; b6/b7 use 4 on their 3×3.
    assert full_backbone.b5.conv_branch2a.dilation == (1, 1)
    assert full_backbone.b5.conv_branch2b1.dilation == (2, 2)
    assert full_backbone.b5_1.conv_branch2a.dilation == (2, 2)
    assert full_backbone.b7.conv_branch2b1.dilation == (4, 4)
    assert (full_backbone.b6.dropout_2b1.p, full_backbone.b7.dropout_2b2.p) == (0.3, 0.5)


def test_frozen_bn_stays_in_eval_and_gets_no_grad() -> None:
    torch.manual_seed(0)
    model = ResNet38d(width=TINY, freeze_bn=True, freeze_stem=False)
    model.train()
    bns = _bn_modules(model)
    assert bns and all(not bn.training for bn in bns)
    assert all(not p.requires_grad for bn in bns for p in bn.parameters())
    before = [bn.running_mean.clone() for bn in bns]
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    assert all(p.grad is None for bn in bns for p in bn.parameters())
    assert all(torch.equal(b, bn.running_mean) for b, bn in zip(before, bns, strict=True))
    assert model.b3.conv_branch2a.weight.grad is not None
    # eval() → train() again keeps them frozen.
    model.eval().train()
    assert all(not bn.training for bn in bns)


def test_unfrozen_bn_trains() -> None:
    model = ResNet38d(width=TINY, freeze_bn=False, freeze_stem=False).train()
    bns = _bn_modules(model)
    assert all(bn.training and bn.weight.requires_grad for bn in bns)
    before = bns[-1].running_mean.clone()
    model(torch.randn(2, 3, 32, 32))
    assert not torch.equal(before, bns[-1].running_mean)


def test_freeze_stem() -> None:
    model = ResNet38d(width=TINY, freeze_bn=False, freeze_stem=True).train()
    for name, p in model.named_parameters():
        in_stem = name.split(".")[0] in ("conv1a", "b2", "b2_1", "b2_2")
        assert p.requires_grad is not in_stem, name
    # The frozen stem's BN statistics do not drift either; the rest of the BN trains.
    assert not model.b2_1.bn_branch2a.training and model.b3.bn_branch2a.training
    model = ResNet38d(width=TINY, freeze_bn=False, freeze_stem=False)
    assert all(p.requires_grad for p in model.parameters())


def test_dropout_active_only_in_train_mode() -> None:
    torch.manual_seed(0)
    model = ResNet38d(width=TINY)  # BN frozen: dropout is the only randomness
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        model.train()
        assert not torch.equal(model(x), model(x))
        model.eval()
        assert torch.equal(model(x), model(x))


# ------------------------------------------------------------------------------------ heads


def test_head_output_channels() -> None:
    feat = torch.randn(2, 64, 5, 7)
    for head, k, bg in (
        (CAMHead(64, 20), 20, False),
        (EPSHead(64, 20), 21, True),
        (SMAFHead(64, 20), 21, True),
    ):
        assert head(feat).shape == (2, k, 5, 7)
        assert head.out_channels == k and head.has_background is bg


def test_smaf_head_structure_at_full_width() -> None:
    head = SMAFHead(4096, 20, freeze_bn=True)
    shapes = {k: tuple(p.shape) for k, p in head.named_parameters()}
    assert shapes == {
        "proj.weight": (128, 4096, 1, 1),
        "bn.weight": (128,),
        "bn.bias": (128,),
        "fc8.weight": (21, 128, 1, 1),
    }
    layers = list(head.children())
    assert [type(m) for m in layers] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.Conv2d]
    head.train()
    assert not head.bn.training and not head.bn.weight.requires_grad
    assert head.proj.weight.requires_grad and head.fc8.weight.requires_grad
    unfrozen = SMAFHead(4096, 20, freeze_bn=False).train()
    assert unfrozen.bn.training and unfrozen.bn.weight.requires_grad
    assert tuple(CAMHead(4096, 20).fc8.weight.shape) == (20, 4096, 1, 1)
    assert tuple(EPSHead(4096, 20).fc8.weight.shape) == (21, 4096, 1, 1)


def test_move_background_first() -> None:
    released = torch.tensor([10.0, 11.0, 12.0, -1.0])  # [fg1, fg2, fg3, bg]
    assert move_background_first(released).tolist() == [-1.0, 10.0, 11.0, 12.0]
    cam = torch.arange(8.0).view(1, 4, 1, 2)
    assert move_background_first(cam, dim=1)[0, 0].tolist() == [[6.0, 7.0]]


# ------------------------------------------------------------------------------- classifier


def test_logits_are_gap_of_foreground_channels() -> None:
    cam = torch.tensor(
        [[[[100.0, -100.0], [0.0, 0.0]], [[1.0, 2.0], [3.0, 6.0]], [[-4.0, 0.0], [0.0, 0.0]]]]
    )  # [1, 3, 2, 2]: bg, class 1, class 2
    assert cam_to_logits(cam, has_background=True).tolist() == [[3.0, -1.0]]
    assert cam_to_logits(cam, has_background=False).tolist() == [[0.0, 3.0, -1.0]]


@pytest.mark.parametrize(("head", "k"), [("cam", 5), ("eps", 6), ("smaf", 6)])
def test_classifier_forward(head: str, k: int) -> None:
    torch.manual_seed(0)
    model = build_classifier(ModelConfig(width=TINY, head=head, num_classes=5)).eval()
    x = torch.randn(2, 3, 48, 40)
    with torch.no_grad():
        out = model(x)
        feat = model.forward_features(x)
        cam = model.forward_head(feat)
    assert feat.shape == (2, 512, 6, 5)
    assert out["cam"].shape == (2, k, 6, 5) and torch.equal(out["cam"], cam)
    assert out["logits"].shape == (2, 5)
    assert model.has_background is (head != "cam")
    fg = cam[:, 1:] if model.has_background else cam
    torch.testing.assert_close(out["logits"], fg.mean(dim=(2, 3)))


@pytest.mark.parametrize("freeze", [True, False])
def test_param_groups_cover_trainable_params_once(freeze: bool) -> None:
    cfg = ModelConfig(width=TINY, head="smaf", num_classes=5, freeze_bn=freeze, freeze_stem=freeze)
    model = build_classifier(cfg).train()
    # Classifier.train() reaches the backbone's and the head's own train() overrides.
    assert all(bn.training is not freeze for bn in _bn_modules(model.backbone.b3))
    assert model.head.bn.training is not freeze
    groups = model.param_groups()
    assert [(g["lr_mult"], g["weight_decay_mult"]) for g in groups] == [
        (1.0, 1.0),
        (2.0, 0.0),
        (10.0, 1.0),
        (20.0, 0.0),
    ]
    grouped = [id(p) for g in groups for p in g["params"]]
    trainable = [id(p) for p in model.parameters() if p.requires_grad]
    assert len(grouped) == len(set(grouped))
    assert set(grouped) == set(trainable)

    def ids(*params: torch.Tensor) -> set[int]:
        return {id(p) for p in params}

    head = model.head
    assert {id(p) for p in groups[2]["params"]} == ids(head.proj.weight, head.fc8.weight)
    assert id(model.backbone.b3.conv_branch2a.weight) in {id(p) for p in groups[0]["params"]}
    if freeze:
        assert groups[1]["params"] == [] and groups[3]["params"] == []
        assert id(model.backbone.conv1a.weight) not in grouped
    else:
        assert ids(head.bn.weight, head.bn.bias) == {id(p) for p in groups[3]["params"]}
        assert id(model.backbone.bn7.weight) in {id(p) for p in groups[1]["params"]}
    # The groups feed torch optimisers as they are.
    torch.optim.SGD(groups, lr=0.01)


def test_model_config_validation() -> None:
    with pytest.raises(ConfigError, match="head"):
        ModelConfig(head="deeplab")
    with pytest.raises(ConfigError, match="backbone"):
        ModelConfig(backbone="resnet50")
    with pytest.raises(ConfigError, match="width"):
        ModelConfig(width=0)
    with pytest.raises(ConfigError, match="num_classes"):
        ModelConfig(num_classes=0)


# ------------------------------------------------------------------- MXNet weights (loader)


def _torch_key_to_mxnet(key: str) -> str:
    """Inverse of the PSA renaming, written independently: torch key → MXNet array name."""
    bn_names = {
        "weight": "gamma",
        "bias": "beta",
        "running_mean": "moving_mean",
        "running_var": "moving_var",
    }
    parts = key.split(".")
    if key == "conv1a.weight":
        return "arg:conv1a_weight"
    if parts[0] == "bn7":
        prefix = "aux" if parts[1].startswith("running") else "arg"
        return f"{prefix}:bn7_{bn_names[parts[1]]}"
    block, layer, param = parts
    stage, _, index = block[1:].partition("_")
    suffix = "a" if not index else f"b{index}"
    kind, branch = layer.split("_", 1)  # 'conv'|'bn', 'branch2b1'
    if kind == "conv":
        return f"arg:res{stage}{suffix}_{branch}_weight"
    prefix = "aux" if param.startswith("running") else "arg"
    return f"{prefix}:bn{stage}{suffix}_{branch}_{bn_names[param]}"


_DTYPE_FLAGS = {np.dtype("float32"): 0, np.dtype("float64"): 1, np.dtype("int64"): 6}


def _write_mxnet_params(path: Path, arrays: dict[str, np.ndarray], layout: str) -> None:
    """Write an MXNet NDArray list (.params) in the 'v2', 'v1' or 'legacy' array layout."""
    out = [struct.pack("<QQQ", 0x112, 0, len(arrays))]
    for array in arrays.values():
        a = np.ascontiguousarray(array)
        if layout == "v2":
            out.append(struct.pack("<Iii", 0xF993FAC9, 0, a.ndim))
            out.append(struct.pack(f"<{a.ndim}q", *a.shape))
        elif layout == "v1":
            out.append(struct.pack("<II", 0xF993FAC8, a.ndim))
            out.append(struct.pack(f"<{a.ndim}q", *a.shape))
        else:
            out.append(struct.pack(f"<I{a.ndim}I", a.ndim, *a.shape))
        out.append(struct.pack("<iii", 2, 0, _DTYPE_FLAGS[a.dtype]))  # saved from gpu(0)
        out.append(a.astype(a.dtype.newbyteorder("<")).tobytes())
    out.append(struct.pack("<Q", len(arrays)))
    for name in arrays:
        raw = name.encode()
        out.append(struct.pack("<Q", len(raw)) + raw)
    path.write_bytes(b"".join(out))


def _fake_imagenet_arrays(width: float, seed: int = 0) -> dict[str, np.ndarray]:
    """Random MXNet-named arrays for every tensor of a ResNet38d of ``width``, + linear1000."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for key, value in ResNet38d(width=width).state_dict().items():
        if key.endswith("num_batches_tracked"):
            continue  # MXNet has no such counter
        arrays[_torch_key_to_mxnet(key)] = rng.standard_normal(tuple(value.shape), np.float32)
    arrays["arg:linear1000_weight"] = rng.standard_normal((1000, 8), np.float32)
    arrays["arg:linear1000_bias"] = np.zeros(1000, np.float64)
    return arrays


@pytest.mark.parametrize("layout", ["v2", "v1", "legacy"])
def test_mxnet_params_round_trip(tmp_path: Path, layout: str) -> None:
    arrays = _fake_imagenet_arrays(TINY)
    path = tmp_path / "ilsvrc-cls_rna-a1_cls1000_ep-0001.params"
    _write_mxnet_params(path, arrays, layout)

    params = load_mxnet_params(path)
    assert list(params) == list(arrays)
    for name, value in arrays.items():
        assert params[name].dtype == value.dtype and np.array_equal(params[name], value), name

    state = mxnet_to_resnet38d_state_dict(params)
    assert not any("linear1000" in k for k in state)
    assert state["b2.bn_branch2a.running_mean"].numpy().tolist() == (
        arrays["aux:bn2a_branch2a_moving_mean"].tolist()
    )
    model = ResNet38d(width=TINY)
    model.load_state_dict(state, strict=True)
    loaded = model.state_dict()
    for key, value in loaded.items():
        if not key.endswith("num_batches_tracked"):
            assert np.array_equal(value.numpy(), arrays[_torch_key_to_mxnet(key)]), key
    np.testing.assert_array_equal(
        model.b7.conv_branch2b2.weight.detach().numpy(), arrays["arg:res7a_branch2b2_weight"]
    )
    np.testing.assert_array_equal(
        model.b4_5.bn_branch2b1.running_var.numpy(), arrays["aux:bn4b5_branch2b1_moving_var"]
    )
    np.testing.assert_array_equal(model.bn7.weight.detach().numpy(), arrays["arg:bn7_gamma"])


def test_load_imagenet_weights_from_params_and_pth(tmp_path: Path) -> None:
    arrays = _fake_imagenet_arrays(TINY, seed=1)
    params_path = tmp_path / "a1.params"
    _write_mxnet_params(params_path, arrays, "v2")

    # Through the builder: weights land in the backbone, the head keeps its own init.
    cfg = ModelConfig(width=TINY, head="eps", num_classes=3, pretrained=str(params_path))
    model = build_classifier(cfg)
    expected = arrays["arg:res3b2_branch2b1_weight"]
    np.testing.assert_array_equal(model.backbone.b3_2.conv_branch2b1.weight.detach(), expected)

    # A converted .pth (bare state dict, as PSA's converter writes: no num_batches_tracked).
    pth_path = tmp_path / "a1.pth"
    state = mxnet_to_resnet38d_state_dict(load_mxnet_params(params_path))
    torch.save({k: v for k, v in state.items() if "num_batches" not in k}, pth_path)
    backbone = ResNet38d(width=TINY)
    load_imagenet_weights(backbone, pth_path)
    np.testing.assert_array_equal(backbone.b3_2.conv_branch2b1.weight.detach(), expected)


def test_imagenet_weights_of_wrong_width_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "a1.params"
    _write_mxnet_params(path, _fake_imagenet_arrays(TINY), "v2")
    with pytest.raises(SmafError, match=r"a1\.params.*shape mismatch.*width"):
        load_imagenet_weights(ResNet38d(width=0.25), path)


def test_bad_params_files(tmp_path: Path) -> None:
    path = tmp_path / "a1.params"
    _write_mxnet_params(path, _fake_imagenet_arrays(TINY), "v2")
    truncated = tmp_path / "truncated.params"
    truncated.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(SmafError, match="truncated.params.*truncated"):
        load_mxnet_params(truncated)
    foreign = tmp_path / "foreign.params"
    foreign.write_bytes(b"\x00" * 64)
    with pytest.raises(SmafError, match="not an MXNet NDArray list"):
        load_mxnet_params(foreign)
    with pytest.raises(SmafError, match="not found"):
        load_mxnet_params(tmp_path / "missing.params")
    odd = tmp_path / "odd.params"
    _write_mxnet_params(odd, {"arg:fc_weight": np.zeros(3, np.float32)}, "v2")
    with pytest.raises(SmafError, match="fc_weight.*not part of ResNet38d"):
        mxnet_to_resnet38d_state_dict(load_mxnet_params(odd))


def test_checkpoint_with_other_num_classes_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "eps_20classes.pth"
    torch.save(
        build_classifier(ModelConfig(width=TINY, head="eps", num_classes=20)).state_dict(), path
    )
    model = build_classifier(ModelConfig(width=TINY, head="eps", num_classes=10))
    with pytest.raises(SmafError) as info:
        load_state_dict_file(model, path)
    message = str(info.value)
    assert str(path) in message
    assert "head.fc8.weight (21, 512, 1, 1) vs model (11, 512, 1, 1)" in message
    assert "number of classes" in message
    # The same file loads into a matching model (checkpoint dicts nest it under 'model').
    nested = tmp_path / "ckpt.pth"
    torch.save({"model": torch.load(path, weights_only=True), "step": torch.tensor(3)}, nested)
    load_state_dict_file(build_classifier(ModelConfig(width=TINY, head="eps")), nested)

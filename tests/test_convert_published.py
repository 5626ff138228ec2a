"""Published checkpoints (EPS, SMAF, deeplab-pytorch) → this project's model files.

The synthetic checkpoints use the key names and shapes of the authors' model code, written out
here from reading it: halbielee/EPS ``network/resnet38d.py`` (``ResBlock``: ``bn_branch2a``,
``conv_branch2a`` 3×3, ``bn_branch2b1``, ``conv_branch2b1`` 3×3, ``conv_branch1`` 1×1 when the
shape changes; ``ResBlock_bot``: 1×1 → 3×3 → 1×1 with ``bn_branch2b2`` and
``conv_branch2b2``), ``network/resnet38_eps.py`` (``fc8`` 4096 → C+1, no bias, background
last), ``network/resnet38_cls.py`` (``fc8`` 4096 → C); bupt-ai-cz/SMAF ``models/EPS.py``
(``cov_feat`` 4096 → 128, ``bn`` 128, ``fc8`` 128 → C+1) saved by ``train.py`` as
``{'Net': {'model_state', 'objective_vectors'}, 'iter'}``; deeplab-pytorch's MSC state dict
(``base.`` + DeepLabV2 keys, ``base.aspp.c0..c3``). Widths are 1/8 of the real ones.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from deeplab_layouts import caffe_layers, coco_init_shapes, random_state

from smaf.errors import ConfigError, DataError
from smaf.models.checkpoint import load_model
from smaf.models.convert_published import (
    convert_classifier_checkpoint,
    convert_deeplab_checkpoint,
    write_converted_classifier,
    write_converted_deeplab,
)
from smaf.models.deeplab import load_deeplab

#: Tiny networks: one torch thread (the machine is shared).
pytestmark = pytest.mark.usefixtures("one_torch_thread")

W = 8  # width divisor: 1/8 of the released channel counts
C = 4  # foreground classes of the synthetic checkpoints


def _bn(shapes: dict, name: str, channels: int) -> None:
    for p in ("weight", "bias", "running_mean", "running_var"):
        shapes[f"{name}.{p}"] = (channels,)
    shapes[f"{name}.num_batches_tracked"] = ()


def eps_resnet38d_shapes() -> dict[str, tuple[int, ...]]:
    """EPS's ``network/resnet38d.py`` Net at 1/W width: key → shape."""
    shapes: dict[str, tuple[int, ...]] = {"conv1a.weight": (64 // W, 3, 3, 3)}
    # (name, in, mid, out, stride) of each ResBlock, as in Net.__init__.
    blocks = [("b2", 64, 128, 128, 2), ("b2_1", 128, 128, 128, 1), ("b2_2", 128, 128, 128, 1)]
    blocks += [("b3", 128, 256, 256, 2), ("b3_1", 256, 256, 256, 1), ("b3_2", 256, 256, 256, 1)]
    blocks += [("b4", 256, 512, 512, 2)] + [(f"b4_{i}", 512, 512, 512, 1) for i in range(1, 6)]
    blocks += [
        ("b5", 512, 512, 1024, 1),
        ("b5_1", 1024, 512, 1024, 1),
        ("b5_2", 1024, 512, 1024, 1),
    ]
    for name, cin, mid, cout, stride in blocks:
        cin, mid, cout = cin // W, mid // W, cout // W
        _bn(shapes, f"{name}.bn_branch2a", cin)
        shapes[f"{name}.conv_branch2a.weight"] = (mid, cin, 3, 3)
        _bn(shapes, f"{name}.bn_branch2b1", mid)
        shapes[f"{name}.conv_branch2b1.weight"] = (cout, mid, 3, 3)
        if cin != cout or stride != 1:
            shapes[f"{name}.conv_branch1.weight"] = (cout, cin, 1, 1)
    for name, cin, cout in (("b6", 1024, 2048), ("b7", 2048, 4096)):  # ResBlock_bot
        cin, cout = cin // W, cout // W
        _bn(shapes, f"{name}.bn_branch2a", cin)
        shapes[f"{name}.conv_branch2a.weight"] = (cout // 4, cin, 1, 1)
        _bn(shapes, f"{name}.bn_branch2b1", cout // 4)
        shapes[f"{name}.conv_branch2b1.weight"] = (cout // 2, cout // 4, 3, 3)
        _bn(shapes, f"{name}.bn_branch2b2", cout // 2)
        shapes[f"{name}.conv_branch2b2.weight"] = (cout, cout // 2, 1, 1)
        shapes[f"{name}.conv_branch1.weight"] = (cout, cin, 1, 1)
    _bn(shapes, "bn7", 4096 // W)
    return shapes


def eps_checkpoint(head: str, seed: int = 0) -> dict[str, torch.Tensor]:
    shapes = eps_resnet38d_shapes()
    if head == "eps":
        shapes["fc8.weight"] = (C + 1, 4096 // W, 1, 1)
    elif head == "cam":
        shapes["fc8.weight"] = (C, 4096 // W, 1, 1)
    else:  # SMAF's models/EPS.py
        shapes["cov_feat.weight"] = (128, 4096 // W, 1, 1)
        _bn(shapes, "bn", 128)
        shapes["fc8.weight"] = (C + 1, 128, 1, 1)
    return random_state(shapes, seed)


def reference_cam(state: dict[str, torch.Tensor], feat: torch.Tensor) -> torch.Tensor:
    """The authors' ``forward_cam`` on backbone features: ``[B, K, h, w]``, their channel order."""
    x = feat
    if "cov_feat.weight" in state:  # SMAF: cov_feat → bn (eval) → relu → fc8
        x = F.conv2d(x, state["cov_feat.weight"])
        x = F.batch_norm(
            x,
            state["bn.running_mean"],
            state["bn.running_var"],
            state["bn.weight"],
            state["bn.bias"],
        )
        x = F.relu(x)
    return F.conv2d(x, state["fc8.weight"])


@pytest.mark.parametrize("head", ["eps", "smaf", "cam"])
def test_classifier_gives_the_authors_cam_with_background_first(tmp_path, head):
    state = eps_checkpoint(head)
    if head == "smaf":
        saved = {
            "Net": {"model_state": state, "objective_vectors": torch.zeros(21, 128)},
            "iter": 7,
        }
    elif head == "eps":
        saved = {f"module.{k}": v for k, v in state.items()}  # a DataParallel state dict
    else:
        saved = state
    torch.save(saved, tmp_path / "checkpoint.pth")
    model, fmt = convert_classifier_checkpoint(tmp_path / "checkpoint.pth", C)
    assert (fmt, model.config.head, model.config.width) == (
        "smaf" if head == "smaf" else "eps",
        head,
        1 / W,
    )
    model.eval()
    x = torch.randn(2, 3, 40, 48)
    with torch.no_grad():
        out = model(x)
        theirs = reference_cam(state, model.forward_features(x))  # [B, C(+1), 5, 6]
    if head == "cam":
        torch.testing.assert_close(out["cam"], theirs)
    else:  # ours [bg, fg_1..fg_C] = theirs [fg_1..fg_C, bg] rolled by one
        torch.testing.assert_close(out["cam"][:, 0], theirs[:, -1])
        torch.testing.assert_close(out["cam"][:, 1:], theirs[:, :-1])
    # EPS's classification score: GAP of the cam, foreground channels (its pred[:, :-1]).
    fg = theirs if head == "cam" else theirs[:, :-1]
    torch.testing.assert_close(out["logits"], fg.mean(dim=(2, 3)))
    # The backbone tensors are the checkpoint's, key for key.
    for key in ("conv1a.weight", "b7.conv_branch2b2.weight", "bn7.running_var"):
        assert torch.equal(model.backbone.state_dict()[key], state[key])


def test_converted_classifier_file_is_self_describing(tmp_path):
    state = eps_checkpoint("eps", seed=3)
    torch.save(state, tmp_path / "checkpoint_cls.pth")
    meta = {"stage": "pretrain", "class_names": ["a", "b", "c", "d"]}
    model = write_converted_classifier(tmp_path / "checkpoint_cls.pth", tmp_path / "m.pt", C, meta)
    loaded, got = load_model(tmp_path / "m.pt", num_classes=C)
    assert got["source"] == "halbielee/EPS" and got["original_file"] == "checkpoint_cls.pth"
    assert len(got["original_sha256"]) == 64 and got["class_names"] == meta["class_names"]
    assert got["stage"] == "pretrain" and got["head"] == "eps"
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_classifier_mismatches_are_clear_errors(tmp_path):
    torch.save(eps_checkpoint("eps"), tmp_path / "eps.pth")
    with pytest.raises(ConfigError, match="'eps' head but model.head is 'smaf'"):
        convert_classifier_checkpoint(tmp_path / "eps.pth", C, expect_head="smaf")
    with pytest.raises(DataError, match="fc8 has 5 outputs; 20 classes need 21"):
        convert_classifier_checkpoint(tmp_path / "eps.pth", 20)
    broken = {k: v for k, v in eps_checkpoint("eps").items() if not k.startswith("b4_3.")}
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(DataError, match=r"missing: backbone\.b4_3\.bn_branch2a\.weight"):
        convert_classifier_checkpoint(tmp_path / "broken.pth", C)
    torch.save({"weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(DataError, match="not a ResNet38d classifier"):
        convert_classifier_checkpoint(tmp_path / "other.pth", C)


# --------------------------------------------------------------------------- DeepLab


def deeplab_pytorch_msc_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """deeplab-pytorch's ``DeepLabV2_ResNet101_MSC(21)`` state dict at width 1/8."""
    shapes = {k: v for k, v in coco_init_shapes(1 / W).items() if not k.startswith("fc.")}
    for k in range(4):
        shapes[f"aspp.c{k}.weight"] = (C + 1, 2048 // W, 3, 3)
        shapes[f"aspp.c{k}.bias"] = (C + 1,)
    return {f"base.{k}": v for k, v in random_state(shapes, seed).items()}


def test_deeplab_pytorch_checkpoint_evaluates_like_its_aspp(tmp_path):
    state = deeplab_pytorch_msc_state()
    torch.save(state, tmp_path / "deeplabv2_resnet101_msc-vocaug-20000.pth")
    model = write_converted_deeplab(
        tmp_path / "deeplabv2_resnet101_msc-vocaug-20000.pth", tmp_path / "deeplab.pt"
    )
    assert model.num_classes == C and model.scales == (1.0, 0.75, 0.5)
    model.eval()
    x = torch.randn(1, 3, 41, 35)
    with torch.no_grad():
        feat = model.base.backbone(x)
        # deeplab-pytorch's _ASPP: the sum of c0..c3 at rates 6, 12, 18, 24.
        want = sum(
            F.conv2d(feat, state[f"base.aspp.c{k}.weight"], state[f"base.aspp.c{k}.bias"], 1, r, r)
            for k, r in enumerate((6, 12, 18, 24))
        )
        torch.testing.assert_close(model.base(x), want)
    loaded, meta = load_deeplab(tmp_path / "deeplab.pt", num_classes=C)
    assert meta["source"] == "kazuto1011/deeplab-pytorch"
    assert meta["original_file"] == "deeplabv2_resnet101_msc-vocaug-20000.pth"
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_deeplab_caffemodel_with_msc_copies_converts(tmp_path):
    """``train2_iter_20000.caffemodel`` style: ASPP ``fc1_voc12_c0..c3`` and MSC branch copies."""
    import numpy as np

    from smaf.models.caffemodel import CaffeLayer, ConvGeometry, write_caffemodel

    state = {k[len("base.") :]: v for k, v in deeplab_pytorch_msc_state(seed=4).items()}
    layers = caffe_layers(1 / W, state)
    for k, r in enumerate((6, 12, 18, 24)):
        blobs = [state[f"aspp.c{k}.weight"].numpy(), state[f"aspp.c{k}.bias"].numpy()]
        geo = ConvGeometry((3, 3), (1, 1), (r, r), (r, r))
        layers.append(CaffeLayer(f"fc1_voc12_c{k}", "Convolution", blobs, geo))
        layers.append(CaffeLayer(f"fc1_voc12_c{k}_res075", "Convolution", blobs, geo))
    layers.append(CaffeLayer("conv1_res05", "Convolution", [np.zeros((1, 1, 1, 1), np.float32)]))
    write_caffemodel(tmp_path / "train2_iter_20000.caffemodel", layers)
    model = convert_deeplab_checkpoint(tmp_path / "train2_iter_20000.caffemodel")
    assert torch.equal(model.base.aspp.convs[3].bias, state["aspp.c3.bias"])
    torch.testing.assert_close(
        model.base.backbone.state_dict()["layer4.block23.reduce.bn.running_mean"],
        state["layer4.block23.reduce.bn.running_mean"],
    )
    # Wrong dataset: a clear error before anything loads.
    with pytest.raises(DataError, match="has 5 output channels .* the model has 21"):
        convert_deeplab_checkpoint(tmp_path / "train2_iter_20000.caffemodel", num_classes=20)


def test_init_is_not_a_trained_deeplab(tmp_path):
    torch.save(random_state(coco_init_shapes(1 / W)), tmp_path / "coco.pth")
    with pytest.raises(DataError, match="use it as deeplab.pretrained"):
        convert_deeplab_checkpoint(tmp_path / "coco.pth")

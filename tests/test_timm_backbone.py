"""Issue 22 §2: a timm student backbone (`model.backbone: timm/<name>`), on timm's tiny test
models (test_resnet: 0.4 M parameters, test_vit: 0.3 M), never a hub download."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch
import yaml
from conftest import REPO_ROOT

pytest.importorskip("timm")

from smaf.cam import CAMConfig, class_maps  # noqa: E402
from smaf.config import check_config, combination_problems, deep_merge, load_schema  # noqa: E402
from smaf.errors import ConfigError, SmafError  # noqa: E402
from smaf.models import ModelConfig, build_classifier  # noqa: E402
from smaf.models.checkpoint import load_model, save_model  # noqa: E402
from smaf.settings import SelfTrainSettings  # noqa: E402
from smaf.stages.self_train import smaf_step  # noqa: E402


def _tiny(name: str = "test_resnet", **kw) -> torch.nn.Module:
    cfg = {"backbone": f"timm/{name}", "num_classes": 3, "freeze_bn": False, "freeze_stem": False}
    return build_classifier(ModelConfig(**{**cfg, **kw}))


def test_a_timm_student_trains_with_smafs_loss_and_gives_cams_at_stride_8(tmp_path) -> None:
    torch.manual_seed(0)
    model = _tiny()
    assert model.backbone.output_stride == 8  # timm's output_stride=8: dilated last stages
    x = torch.randn(2, 3, 64, 80)
    batch = {
        "image": x,
        "labels": torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]),
        "teacher": torch.rand(2, 3, 64, 80),  # the offline teacher's fused maps [B, C, S, S]
    }
    step = smaf_step(SelfTrainSettings(w_cls=1.0), None, CAMConfig())
    groups = model.param_groups()
    opt = torch.optim.SGD([{"params": g["params"]} for g in groups], lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    model.train()
    for _ in range(2):
        losses = step(model, batch, torch.device("cpu"))
        opt.zero_grad()
        losses["loss"].backward()
        opt.step()
        assert torch.isfinite(losses["loss"]) and losses["mac"] > 0
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))
    assert len(groups[0]["params"]) > 0 and len(groups[2]["params"]) == 2  # conv w / head w

    model.eval()
    out = model(torch.randn(1, 3, 70, 90))
    assert out["cam"].shape == (1, 4, math.ceil(70 / 8), math.ceil(90 / 8))  # C+1 channels
    assert out["logits"].shape == (1, 3)
    # Saved and rebuilt like any classifier (the seeds and the teacher read it back).
    save_model(tmp_path / "model.pt", model, {"stage": "self_train"})
    again, _ = load_model(tmp_path / "model.pt", num_classes=3)
    x = torch.randn(1, 3, 48, 48)
    torch.testing.assert_close(again.eval()(x)["cam"], model(x)["cam"])
    maps = class_maps(again, np.zeros((40, 56, 3), np.uint8), np.array([1, 0, 1]), CAMConfig())
    assert maps.shape == (3, 40, 56)


def test_vit_tokens_are_put_back_on_the_patch_grid() -> None:
    model = _tiny("test_vit").eval()
    assert model.backbone.output_stride == 16  # the patch size: ViTs have no output_stride
    cam = model(torch.randn(1, 3, 50, 70))["cam"]  # padded to whole patches
    assert cam.shape == (1, 4, math.ceil(50 / 16), math.ceil(70 / 16))


def test_frozen_bn_and_stem_follow_timms_stem_matcher() -> None:
    model = _tiny(freeze_bn=True, freeze_stem=True).train()
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert "backbone.net.conv1.0.weight" in frozen  # timm's group_matcher: '^conv1|bn1|maxpool'
    assert not any(
        n.startswith("backbone.net.layer4") and n.endswith("conv1.weight") for n in frozen
    )
    bns = [m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)


def test_pretrained_is_a_local_state_dict_loaded_strictly(tmp_path) -> None:
    import timm

    source = timm.create_model("test_resnet", pretrained=False)  # with its ImageNet fc
    torch.nn.init.constant_(source.conv1[0].weight, 0.5)
    torch.save(source.state_dict(), tmp_path / "test_resnet.pth")
    model = _tiny(pretrained=str(tmp_path / "test_resnet.pth"))
    assert torch.all(model.backbone.net.conv1[0].weight == 0.5)  # fc.* dropped: the head's job
    from safetensors.torch import save_file

    save_file(source.state_dict(), str(tmp_path / "model.safetensors"))
    model = _tiny(pretrained=str(tmp_path / "model.safetensors"))
    assert torch.all(model.backbone.net.conv1[0].weight == 0.5)

    other = timm.create_model("test_convnext", pretrained=False)
    torch.save({"state_dict": other.state_dict()}, tmp_path / "convnext.pth")
    with pytest.raises(
        SmafError, match=r"convnext.pth.*missing: .*weights of timm's 'test_resnet'"
    ):
        _tiny(pretrained=str(tmp_path / "convnext.pth"))
    with pytest.raises(SmafError, match="not found"):
        _tiny(pretrained=str(tmp_path / "gone.pth"))


def test_bad_names_settings_and_a_missing_timm_are_one_clear_line(monkeypatch) -> None:
    with pytest.raises(ConfigError, match=r"no model 'resnet5O'.*timm.list_models\('\*resnet\*'\)"):
        _tiny("resnet5O")
    with pytest.raises(ConfigError, match="set model.width: 1.0"):
        _tiny(width=0.125)
    with pytest.raises(ConfigError, match="or timm/<name>"):
        ModelConfig(backbone="resnet50")
    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` raises ImportError
    with pytest.raises(
        SmafError, match=r"^model.backbone timm/... needs timm: pip install 'smaf\[clip\]'$"
    ):
        _tiny()


def test_the_config_accepts_timm_names_and_refuses_deeplab_init_from_them() -> None:
    demo = yaml.safe_load((REPO_ROOT / "config.yaml").read_text())
    schema = load_schema(REPO_ROOT / "workflow/schemas/config.schema.yaml")
    timm_cfg = deep_merge(
        demo,
        {
            "model": {"backbone": "timm/convnext_tiny", "width": 1.0},
            "deeplab": {"init_from": None},
        },
    )
    check_config(timm_cfg, schema)
    with pytest.raises(ConfigError, match="backbone"):
        check_config(deep_merge(timm_cfg, {"model": {"backbone": "timm/"}}), schema)
    problems = combination_problems(deep_merge(timm_cfg, {"deeplab": {"init_from": "smaf"}}))
    assert problems == [
        "deeplab.init_from 'smaf' starts DeepLab's resnet38d from the classifier's backbone, "
        "but model.backbone is timm/convnext_tiny: set deeplab.init_from: null (and "
        "deeplab.pretrained for DeepLab's own init)."
    ]
    # The demo's width (0.125, resnet38d's multiplier) with a timm backbone: before any job,
    # not when the student is first built after the teacher's maps.
    problems = combination_problems(deep_merge(timm_cfg, {"model": {"width": 0.125}}))
    assert problems == [
        "model.width is resnet38d's channel multiplier; timm/convnext_tiny has its own widths: "
        "set model.width: 1.0 (got 0.125)."
    ]

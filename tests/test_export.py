"""smaf export: the exported DeepLab (TorchScript, ONNX) reproduces the PyTorch MSC logits."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import tiny_deeplab

from smaf.errors import ConfigError, SmafError
from smaf.export import FROM_16_BIT, ExportMSC, check_logits, export_deeplab
from smaf.io import voc_palette
from smaf.models.build import ModelConfig, build_classifier
from smaf.models.checkpoint import save_model
from smaf.models.deeplab import DeepLabConfig, build_deeplab, load_deeplab, save_deeplab

NAMES = ["background", "leaf", "rust"]
#: Two input sizes besides the traced one, odd and non-square, and a batch of two.
SIZES = [(1, 45, 61), (2, 37, 50)]
#: torch.jit (load, trace, script) is deprecated in favour of torch.export; see smaf.export.
pytestmark = [
    pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning"),
    pytest.mark.usefixtures("one_torch_thread"),
]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return tiny_deeplab(tmp_path_factory.mktemp("export") / "model.pt", NAMES)


def _reference(model_file, x):
    model, _ = load_deeplab(model_file)
    with torch.no_grad():
        return model.eval()(x)


def test_export_msc_equals_msc_in_eval_mode(model_file):
    model, _ = load_deeplab(model_file)
    model.eval()
    wrapper = ExportMSC(model.base, model.scales)
    x = torch.randn(1, 3, 41, 58)
    with torch.no_grad():
        torch.testing.assert_close(wrapper(x), model(x), atol=0, rtol=0)


def test_torchscript_export_reproduces_pytorch(model_file, tmp_path):
    out = tmp_path / "deeplab.torchscript.pt"
    info = export_deeplab(model_file, out, "torchscript", size=(48, 64))
    assert info["checked"]["max_abs_diff"] <= 1e-4
    loaded = torch.jit.load(str(out))
    for b, h, w in SIZES:
        x = torch.randn(b, 3, h, w)
        expected = _reference(model_file, x)
        with torch.no_grad():
            got = loaded(x)
        assert got.shape == expected.shape == (b, 3, -(-h // 8), -(-w // 8))
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


def test_onnx_export_reproduces_pytorch_at_other_sizes(model_file, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    out = tmp_path / "deeplab.onnx"
    info = export_deeplab(model_file, out, "onnx", size=(48, 64))
    assert info["checked"]["max_abs_diff"] <= 1e-4
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for b, h, w in SIZES:
        x = torch.randn(b, 3, h, w)
        expected = _reference(model_file, x)
        got = torch.from_numpy(session.run(None, {"image": x.numpy()})[0])
        assert got.shape == expected.shape
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)

    side = json.loads((tmp_path / "deeplab.onnx.json").read_text())
    pal = voc_palette()
    assert side["class_names"] == NAMES
    assert side["colors"] == [pal[3 * v : 3 * v + 3] for v in range(3)]
    assert side["input"]["name"] == "image" and side["output"]["stride"] == 8


@pytest.fixture(scope="module")
def large_logits_model(tmp_path_factory):
    """A model whose logits reach the hundreds (a trained model's are tens): float32 kernels
    of another runtime then differ by more than 1e-4 in absolute terms."""
    tmp = tmp_path_factory.mktemp("large")
    torch.manual_seed(0)
    model = build_deeplab(
        DeepLabConfig(backbone="resnet38d", width=0.125, freeze_bn=False, num_classes=2)
    )
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 4 and p.shape[0] == 3:  # the classifier convolutions: K = 3 outputs
                p.mul_(3000.0)
    save_deeplab(tmp / "model.pt", model, {"stage": "deeplab", "class_names": NAMES})
    return tmp / "model.pt"


def test_onnx_check_is_relative_to_the_logits_scale(large_logits_model, tmp_path):
    pytest.importorskip("onnxruntime")
    info = export_deeplab(large_logits_model, tmp_path / "big.onnx", "onnx", size=(48, 64))
    checked = info["checked"]
    assert checked["scale"] > 100 and checked["max_abs_diff"] > 1e-4  # fails an absolute 1e-4
    assert checked["max_rel_diff"] <= 1e-4 and checked["argmax_agreement"] > 0.99
    side = json.loads((tmp_path / "big.onnx.json").read_text())
    assert side["input"]["from_16_bit"] == FROM_16_BIT and "round(v / 257)" in FROM_16_BIT
    assert side["checked"]["tol"] == 1e-4


def test_check_logits_compares_scale_and_labels():
    expected = torch.zeros(1, 3, 2, 2)
    expected[0, 1] = 16.0  # class 1 everywhere, by a margin of 16
    close = expected + 1e-4  # 6e-6 of the scale: the "normal model"
    assert check_logits(close, expected, 1e-4)["ok"]
    flipped = expected.clone()
    flipped[0, 2, 0, 0] = 17.0  # one label changes: far beyond the tolerance as well
    report = check_logits(flipped, expected, 1e-4)
    assert not report["ok"] and report["argmax_agreement"] == 0.75
    tie = torch.zeros(1, 3, 1, 1)  # a tie: any rounding may flip it
    assert check_logits(tie + torch.tensor([0.0, 0.0, 1e-6]).view(1, 3, 1, 1), tie, 1e-4)["ok"]


def test_export_refuses_classifiers_and_unknown_formats(model_file, tmp_path):
    clf = build_classifier(ModelConfig(width=0.125, head="eps", num_classes=2, freeze_bn=False))
    save_model(tmp_path / "clf.pt", clf, {"stage": "self_train"})
    with pytest.raises(SmafError, match="classifier"):
        export_deeplab(tmp_path / "clf.pt", tmp_path / "x.onnx", "onnx")
    with pytest.raises(ConfigError, match="format"):
        export_deeplab(model_file, tmp_path / "x.tflite", "tflite")
    assert not (tmp_path / "x.onnx").exists() and not (tmp_path / "x.tflite").exists()

"""smaf export: the exported DeepLab (TorchScript, ONNX) reproduces the PyTorch MSC logits."""

from __future__ import annotations

import json

import pytest
import torch

from smaf.errors import ConfigError, SmafError
from smaf.export import ExportMSC, export_deeplab
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
    tmp = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    model = build_deeplab(
        DeepLabConfig(backbone="resnet38d", width=0.125, freeze_bn=False, num_classes=2)
    )
    save_deeplab(tmp / "model.pt", model, {"stage": "deeplab", "class_names": NAMES})
    return tmp / "model.pt"


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


def test_export_refuses_classifiers_and_unknown_formats(model_file, tmp_path):
    clf = build_classifier(ModelConfig(width=0.125, head="eps", num_classes=2, freeze_bn=False))
    save_model(tmp_path / "clf.pt", clf, {"stage": "self_train"})
    with pytest.raises(SmafError, match="classifier"):
        export_deeplab(tmp_path / "clf.pt", tmp_path / "x.onnx", "onnx")
    with pytest.raises(ConfigError, match="format"):
        export_deeplab(model_file, tmp_path / "x.tflite", "tflite")
    assert not (tmp_path / "x.onnx").exists() and not (tmp_path / "x.tflite").exists()

"""Export a trained DeepLab model for deployment: TorchScript or ONNX (``smaf export``).

The exported graph is the eval-mode :class:`~smaf.models.deeplab.MSC` network:

* input ``image``: float32 ``[B, 3, H, W]``, RGB scaled to [0, 1] then normalised with the
  ImageNet mean and std (:func:`smaf.transforms.normalize`);
* output ``logits``: float32 ``[B, C+1, ⌈H/8⌉, ⌈W/8⌉]``, the max over the MSC scales;
  upsample them bilinearly to ``H × W`` and take the argmax over channels for the labels
  (the softmax in between does not change the argmax).

B, H and W are free in both formats. The single-scale network is traced (a convolutional
network holds no size-dependent Python) and the MSC loop around it is scripted
(:class:`ExportMSC`), so the resize sizes are computed from the input inside the graph. ONNX
goes through PyTorch's TorchScript-based exporter (``dynamo=False``, opset 17): the newer
``torch.export`` path specialises MSC's ``int(H * s)`` sizes to the example input.

A JSON file beside the model (``<file>.json``) records the pre- and post-processing, the
class names and colours. Export checks itself: the exported model must reproduce the PyTorch
model's logits on a random input within ``atol`` (ONNX: when onnxruntime is installed).
"""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from smaf.errors import ConfigError, SmafError
from smaf.io import atomic_write, voc_palette
from smaf.models.deeplab import MSC, OUTPUT_STRIDE
from smaf.transforms import IMAGENET_MEAN, IMAGENET_STD

log = logging.getLogger(__name__)

FORMATS = ("onnx", "torchscript")
#: ONNX operator set of the export (Resize with sizes, Max, Floor).
OPSET = 17


class ExportMSC(nn.Module):
    """Eval-mode MSC in a scriptable form: ``[B, 3, H, W]`` → max logits ``[B, K, h, w]``.

    The same computation as :meth:`MSC.forward_scales` (each scale resized to
    ``max(1, ⌊s·H⌋) × max(1, ⌊s·W⌋)`` bilinearly, every scale's logits resized to the first
    scale's size, element-wise max), with the sizes taken from the input at run time.
    """

    def __init__(self, base: nn.Module, scales: Sequence[float]) -> None:
        super().__init__()
        self.base = base
        self.scales = [float(s) for s in scales]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.shape[2]
        w = x.shape[3]
        logits: list[torch.Tensor] = []
        for s in self.scales:
            if s == 1.0:
                xs = x
            else:
                size = [max(1, int(math.floor(h * s))), max(1, int(math.floor(w * s)))]
                xs = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            logits.append(self.base(xs))  # [B, K, ~H·s/8, ~W·s/8]
        ref = [logits[0].shape[2], logits[0].shape[3]]
        best = logits[0]
        for lg in logits[1:]:
            # Resizing to the same size is the identity, so no shape test is needed.
            lg = F.interpolate(lg, size=ref, mode="bilinear", align_corners=False)
            best = torch.maximum(best, lg)
        return best  # [B, K, h, w]


def scripted_msc(model: MSC, size: Sequence[int] = (321, 321)) -> torch.jit.ScriptModule:
    """The eval-mode ``model`` as a TorchScript module with free batch, height and width.

    ``size``: ``(H, W)`` of the example input the single-scale network is traced with.
    """
    model = model.eval()
    example = torch.zeros(1, 3, int(size[0]), int(size[1]))
    with warnings.catch_warnings(), torch.no_grad():
        # torch.jit is deprecated in favour of torch.export, which cannot keep MSC's sizes free.
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        base = torch.jit.trace(model.base, example, check_trace=False)
        return torch.jit.script(ExportMSC(base, model.scales))


def _run_onnx(path: Path, x: torch.Tensor) -> torch.Tensor | None:
    try:
        import onnxruntime as ort
    except ImportError:
        log.warning("onnxruntime is not installed: the ONNX file was not checked")
        return None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"image": x.numpy()})[0])


def export_deeplab(
    model_path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    fmt: str = "onnx",
    size: Sequence[int] = (321, 321),
    atol: float = 1e-4,
) -> dict[str, Any]:
    """Export the DeepLab model file ``model_path`` to ``out`` (format ``onnx`` or
    ``torchscript``), plus ``<out>.json`` describing it; returns that description.

    Args:
        size: ``(H, W)`` of the example input (tracing and the self-check); the exported
            model accepts any size.
        atol: largest allowed difference between the exported and the PyTorch logits.

    Raises:
        SmafError: not a DeepLab model file, or the exported model does not reproduce it.
    """
    from smaf.predict.model import load_predictor

    if fmt not in FORMATS:
        raise ConfigError(f"export format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if len(size) != 2 or min(size) < 16:
        raise ConfigError(f"export size must be two numbers (H W) of at least 16, got {size}")
    pred = load_predictor(model_path)
    if pred.kind != "deeplab":
        raise SmafError(f"{model_path} is a classifier; smaf export takes DeepLab models.")
    model: MSC = pred.model.eval()
    out = Path(out)
    scripted = scripted_msc(model, size)
    torch.manual_seed(0)
    x = torch.randn(1, 3, int(size[0]), int(size[1]))  # [1, 3, H, W], a normalised image's range
    with torch.no_grad():
        expected = model(x)  # [1, K, h, w]
    with atomic_write(out) as tmp:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            if fmt == "torchscript":
                scripted.save(str(tmp))
            else:
                torch.onnx.export(
                    scripted,
                    (x,),
                    str(tmp),
                    dynamo=False,
                    opset_version=OPSET,
                    input_names=["image"],
                    output_names=["logits"],
                    dynamic_axes={
                        "image": {0: "batch", 2: "height", 3: "width"},
                        "logits": {0: "batch", 2: "height_8", 3: "width_8"},
                    },
                )
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore", FutureWarning)
            got = torch.jit.load(str(tmp))(x) if fmt == "torchscript" else _run_onnx(tmp, x)
        diff = None if got is None else float((got - expected).abs().max())
        if diff is not None and not diff <= atol:
            raise SmafError(
                f"the exported {fmt} model differs from the PyTorch one by {diff:.3g} "
                f"(> {atol}); please report this with the model's backbone."
            )
    pal = voc_palette()
    info = {
        "format": fmt,
        "file": out.name,
        "model": str(model_path),
        "backbone": model.config.backbone,
        "msc_scales": list(model.scales),
        "input": {
            "name": "image",
            "shape": ["batch", 3, "height", "width"],
            "dtype": "float32",
            "preprocess": "RGB / 255, then (x - mean) / std per channel",
            "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD),
        },
        "output": {
            "name": "logits",
            "shape": ["batch", len(pred.class_names), "ceil(height / 8)", "ceil(width / 8)"],
            "stride": OUTPUT_STRIDE,
            "postprocess": "bilinear resize to (height, width), align_corners=False; argmax "
            "over channels = label value",
        },
        "class_names": pred.class_names,
        "colors": [pal[3 * v : 3 * v + 3] for v in range(len(pred.class_names))],
        "checked": {"size": [int(s) for s in size], "max_abs_diff": diff},
    }
    with atomic_write(out.with_name(out.name + ".json")) as tmp:
        tmp.write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    log.info("export: %s (%s), max |difference| to PyTorch %s", out, fmt, diff)
    return info

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

A JSON file beside the model (``<file>.json``) records the pre- and post-processing (how
16-bit images become the 8-bit RGB the model was trained on included), the class names and
colours. Export checks itself (:func:`check_logits`): on a random input the exported model's
logits must equal the PyTorch model's within ``tol`` times their scale, and give the same
argmax wherever the top two classes are not tied within that difference (ONNX: when
onnxruntime is installed). ONNX needs the ``onnx`` package: ``pip install 'smaf[export]'``.
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

    The same computation as :meth:`MSC.forward_scales` (each scale resized by the factor
    ``s`` to ``⌊s·H⌋ × ⌊s·W⌋`` bilinearly, :func:`~smaf.models.deeplab.scale_input`; every
    scale's logits resized to the first scale's size, element-wise max), with the sizes taken
    from the input at run time.
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
                size = [int(math.floor(h * s)), int(math.floor(w * s))]
                if min(size) < 1:
                    xs = F.interpolate(x, size=[max(1, size[0]), max(1, size[1])], mode="bilinear")
                else:
                    xs = F.interpolate(
                        x,
                        scale_factor=s,
                        mode="bilinear",
                        align_corners=False,
                        recompute_scale_factor=False,
                    )
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


#: How :func:`smaf.io.load_image` turns images of more than 8 bits into the 8-bit RGB the model
#: was trained on (and ``smaf predict`` feeds it): do the same before the model's input.
FROM_16_BIT = (
    "16-bit grey (PNG, TIFF): v -> round(v / 257) (0..65535 -> 0..255), copied to R, G and B; "
    "16-bit RGB PNG: the high byte, v -> floor(v / 256); then RGB / 255 as for 8-bit images"
)
#: What to install for ``--format onnx``.
EXPORT_EXTRA = "pip install 'smaf[export]'"


def check_logits(got: torch.Tensor, expected: torch.Tensor, tol: float) -> dict[str, Any]:
    """Compare exported logits ``got`` with the PyTorch ``expected`` (``[B, K, h, w]``).

    The difference is measured against the logits' scale, ``max(1, max |expected|)``: float32
    kernels of another runtime differ by a few units in the last place of each value, so the
    absolute difference grows with the logits. Labels are compared too: the argmax must agree
    wherever the expected top two logits are further apart than twice the difference (closer
    ones are ties that any rounding may flip).

    Returns:
        ``max_abs_diff``, ``scale``, ``max_rel_diff`` (the difference over the scale),
        ``argmax_agreement`` (fraction of positions), ``ok``.
    """
    diff = float((got - expected).abs().max())
    scale = max(1.0, float(expected.abs().max()))
    top2 = expected.topk(2, dim=1).values if expected.shape[1] > 1 else None  # [B, 2, h, w]
    agree = got.argmax(1) == expected.argmax(1)  # [B, h, w]
    tied = (top2[:, 0] - top2[:, 1] <= 2 * diff) if top2 is not None else torch.ones_like(agree)
    ok = diff <= tol * scale and bool((agree | tied).all())
    return {
        "max_abs_diff": diff,
        "scale": scale,
        "max_rel_diff": diff / scale,
        "argmax_agreement": float(agree.float().mean()),
        "ok": ok,
    }


def _need_onnx() -> None:
    try:
        import onnx  # noqa: F401 - torch.onnx.export writes the file with it
    except ImportError:
        raise SmafError(
            f"--format onnx needs the onnx package, which is not installed: {EXPORT_EXTRA} "
            "(or use --format torchscript)."
        ) from None


def _run_onnx(path: Path, x: torch.Tensor) -> torch.Tensor | None:
    try:
        import onnxruntime as ort
    except ImportError:
        log.warning(
            "onnxruntime is not installed: the ONNX file was not checked (%s)", EXPORT_EXTRA
        )
        return None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"image": x.numpy()})[0])


def export_deeplab(
    model_path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    fmt: str = "onnx",
    size: Sequence[int] = (321, 321),
    tol: float = 1e-4,
) -> dict[str, Any]:
    """Export the DeepLab model file ``model_path`` to ``out`` (format ``onnx`` or
    ``torchscript``), plus ``<out>.json`` describing it; returns that description.

    Args:
        size: ``(H, W)`` of the example input (tracing and the self-check); the exported
            model accepts any size.
        tol: largest allowed difference between the exported and the PyTorch logits, as a
            fraction of the logits' scale (:func:`check_logits`).

    Raises:
        SmafError: not a DeepLab model file, onnx not installed for ``onnx``, or the
            exported model does not reproduce it.
    """
    from smaf.predict.model import load_predictor

    if fmt not in FORMATS:
        raise ConfigError(f"export format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if len(size) != 2 or min(size) < 16:
        raise ConfigError(f"export size must be two numbers (H W) of at least 16, got {size}")
    pred = load_predictor(model_path)
    if pred.kind != "deeplab":
        raise SmafError(f"{model_path} is a classifier; smaf export takes DeepLab models.")
    if fmt == "onnx":
        _need_onnx()
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
        check = None if got is None else check_logits(got, expected, tol)
        if check is not None and not check["ok"]:
            raise SmafError(
                f"the exported {fmt} model differs from the PyTorch one by "
                f"{check['max_abs_diff']:.3g} on logits of scale {check['scale']:.3g} "
                f"(allowed: {tol} of the scale) and agrees on "
                f"{100 * check['argmax_agreement']:.2f} % of the labels; please report this "
                "with the model's backbone."
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
            "preprocess": "8-bit RGB / 255, then (x - mean) / std per channel",
            "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD),
            "from_16_bit": FROM_16_BIT,
            "orientation": "EXIF orientation applied (the image upright, as displayed)",
            "alpha": "dropped (the stored colours kept, not composited)",
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
        "checked": {
            "size": [int(s) for s in size],
            "tol": tol,
            **{k: v for k, v in (check or {"max_abs_diff": None}).items() if k != "ok"},
        },
    }
    with atomic_write(out.with_name(out.name + ".json")) as tmp:
        tmp.write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    log.info("export: %s (%s), check against PyTorch: %s", out, fmt, check)
    return info

"""Saliency maps for EPS on a user's own data, from an off-the-shelf salient-object model.

EPS pretraining needs one saliency map per training image; VOC has EPS's PFAN maps, a user's
dataset usually has none. The ``saliency`` rule computes them with U²-Net (Qin et al. 2020,
trained on DUTS like the PFAN / PoolNet maps the field uses), run as the ONNX model rembg
distributes (``u2net.onnx``) through onnxruntime, with rembg's pre- and post-processing:
resize to 320×320 (Lanczos), divide by the image's maximum, ImageNet mean/std; the first
output's first channel, min-max normalised, resized back (Lanczos) to a grey PNG.

onnxruntime is an optional dependency (``pip install 'smaf[saliency]'``).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from smaf.data.index import DatasetIndex, read_index
from smaf.errors import ConfigError, DataError
from smaf.io import atomic_write, load_image
from smaf.progress import Progress

log = logging.getLogger(__name__)

#: rembg's U²-Net input normalisation (ImageNet statistics) and input size.
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
INPUT_SIZE = 320


def open_session(model_path: str | os.PathLike[str], threads: int | None = None) -> Any:
    """An onnxruntime session of the saliency model (CUDA when onnxruntime has it)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ConfigError(
            "computing saliency maps needs onnxruntime: pip install 'smaf[saliency]' (or "
            "onnxruntime-gpu), or give the dataset a saliency folder, or set "
            "pretrain.method: cam."
        ) from None
    path = Path(model_path)
    if not path.is_file():
        raise DataError(f"saliency model not found: {path}; run the download rule for it.")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
    available = ort.get_available_providers()
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise DataError(f"cannot load saliency model {path} ({exc}); download it again.") from None


def saliency_map(session: Any, image: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """U²-Net saliency of one uint8 RGB ``[H, W, 3]`` image: uint8 ``[H, W]``, 255 = salient."""
    h, w = image.shape[:2]
    small = np.asarray(Image.fromarray(image).resize((size, size), Image.LANCZOS), np.float32)
    small = small / max(float(small.max()), 1e-6)
    x = ((small - MEAN) / STD).transpose(2, 0, 1)[None].astype(np.float32)  # [1, 3, S, S]
    out = session.run(None, {session.get_inputs()[0].name: x})[0]  # [1, 1, S, S] (or more)
    pred = np.asarray(out, np.float32)[0, 0]
    lo, hi = float(pred.min()), float(pred.max())
    pred = (pred - lo) / (hi - lo) if hi > lo else np.zeros_like(pred)
    grey = Image.fromarray((pred * 255).astype(np.uint8), mode="L")
    return np.asarray(grey.resize((w, h), Image.LANCZOS), dtype=np.uint8)


def compute_saliency(
    index: DatasetIndex | str | os.PathLike[str],
    model_path: str | os.PathLike[str],
    out_stats: str | os.PathLike[str],
    *,
    role: str = "train_aug",
    size: int = INPUT_SIZE,
    threads: int | None = None,
    log_every: int = 50,
) -> dict[str, Any]:
    """Write the saliency map of every image of ``role`` to the path the index gives it.

    Maps already there (an interrupted run) are kept; ``out_stats`` (JSON) is written last.
    """
    index = read_index(index)
    ids = index.ids(role)
    missing = [i for i in ids if index.saliency_path(i) is None]
    if missing:
        raise DataError(
            f"the dataset index gives no saliency path to {len(missing)} {role} images (first: "
            f"{missing[0]}); set the dataset's `saliency: compute` and rerun prepare_dataset."
        )
    session = open_session(model_path, threads)
    progress = Progress("saliency", len(ids), every=log_every, log=log)
    for image_id in ids:
        path = index.saliency_path(image_id)
        if path.is_file():
            progress.update(counted=False)
            continue
        sal = saliency_map(session, load_image(index.image_path(image_id)), size)
        with atomic_write(path) as tmp:
            Image.fromarray(sal, mode="L").save(tmp, format="PNG")
        progress.update()
    progress.close()
    stats = {"images": len(ids), "computed": progress.counted, "model": str(model_path)}
    with atomic_write(out_stats) as tmp:
        tmp.write_text(json.dumps(stats, indent=2) + "\n")
    return stats

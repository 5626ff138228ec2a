"""SAM's automatic masks of one image, and their compact storage (one small JSON per image).

:func:`generate_masks` runs ``segment_anything.SamAutomaticMaskGenerator`` with
:class:`SamSettings` (SAM's own defaults) and returns :class:`SamMasks`: COCO run-length
encodings (pycocotools) at the image's size, with SAM's scores (``predicted_iou``,
``stability_score``), areas and boxes. :func:`save_masks` / :func:`load_masks` write and read
them; a ``[K, H, W]`` bool stack is decoded only when asked for (:meth:`SamMasks.stack`), one
mask at a time with :meth:`SamMasks.mask` or iteration.

Large images. SAM resizes every image to its encoder's input (1024 on the long side) itself, so
the cost that grows with the image is the generator's full-resolution mask logits:
``points_per_batch × 3`` float maps at the encoder size and at the image size per batch. An
image whose long side exceeds ``max_side`` (default 1024, SAM's own input size, so SAM sees
the same pixels) is therefore downscaled before generation and each mask is upscaled back
(nearest) to the image's size before it is encoded. Before generating, the peak memory of one
batch is estimated and compared with the memory available; if it does not fit, a SmafError
names ``sam.points_per_batch`` / ``sam.max_side``. An out-of-memory error during generation
becomes the same message.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from smaf.errors import DataError, SmafError
from smaf.io import atomic_write
from smaf.sam.model import require_segment_anything
from smaf.sam_settings import SamSettings

__all__ = [
    "SamMasks",
    "SamSettings",
    "estimate_peak_bytes",
    "generate_masks",
    "load_masks",
    "save_masks",
]

FORMAT = "smaf-sam-masks"
VERSION = 1


class SamMasks:
    """K SAM masks of one ``height × width`` image as COCO RLEs, with scores, areas, boxes."""

    def __init__(
        self,
        height: int,
        width: int,
        rles: list[dict[str, Any]],
        predicted_iou: np.ndarray | list[float],
        stability_score: np.ndarray | list[float],
    ) -> None:
        from pycocotools import mask as mask_utils

        self.height, self.width = int(height), int(width)
        self.rles = [
            {"size": [self.height, self.width], "counts": _text(r["counts"])} for r in rles
        ]
        self.predicted_iou = np.asarray(predicted_iou, dtype=np.float32).reshape(-1)  # [K]
        self.stability_score = np.asarray(stability_score, dtype=np.float32).reshape(-1)  # [K]
        k = len(self.rles)
        if len(self.predicted_iou) != k or len(self.stability_score) != k:
            raise ValueError("one predicted_iou and one stability_score per mask")
        encoded = [_bytes(r) for r in self.rles]
        self.areas = np.asarray(mask_utils.area(encoded), dtype=np.int64).reshape(-1)  # [K]
        boxes = mask_utils.toBbox(encoded) if k else np.zeros((0, 4))
        self.boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)  # [K, 4] x, y, w, h

    def __len__(self) -> int:
        return len(self.rles)

    def mask(self, i: int) -> np.ndarray:
        """Mask ``i`` as a ``[H, W]`` bool array."""
        from pycocotools import mask as mask_utils

        return mask_utils.decode(_bytes(self.rles[i])).astype(bool)

    def __iter__(self) -> Iterator[np.ndarray]:
        """The masks one at a time (``[H, W]`` bool): memory for one mask, not K."""
        for i in range(len(self)):
            yield self.mask(i)

    def stack(self) -> np.ndarray:
        """All masks as a ``[K, H, W]`` bool array (K·H·W bytes: prefer iterating)."""
        out = np.zeros((len(self), self.height, self.width), dtype=bool)
        for i in range(len(self)):
            out[i] = self.mask(i)
        return out

    @classmethod
    def from_stack(
        cls,
        masks: np.ndarray,
        predicted_iou: np.ndarray | list[float] | None = None,
        stability_score: np.ndarray | list[float] | None = None,
    ) -> SamMasks:
        """From a ``[K, H, W]`` bool array (scores default to 1)."""
        from pycocotools import mask as mask_utils

        masks = np.asarray(masks, dtype=bool)
        if masks.ndim != 3:
            raise ValueError(f"masks must be [K, H, W], got shape {masks.shape}")
        k, h, w = masks.shape
        rles = [mask_utils.encode(np.asfortranarray(m.astype(np.uint8))) for m in masks]
        ones = np.ones(k, dtype=np.float32)
        return cls(
            h,
            w,
            rles,
            ones if predicted_iou is None else predicted_iou,
            ones if stability_score is None else stability_score,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "height": self.height,
            "width": self.width,
            "masks": [
                {
                    "counts": r["counts"],
                    "area": int(a),
                    "bbox": [round(float(v), 2) for v in b],
                    "predicted_iou": round(float(p), 5),
                    "stability_score": round(float(s), 5),
                }
                for r, a, b, p, s in zip(
                    self.rles,
                    self.areas,
                    self.boxes,
                    self.predicted_iou,
                    self.stability_score,
                    strict=True,
                )
            ],
        }


def _text(counts: str | bytes) -> str:
    return counts.decode("ascii") if isinstance(counts, bytes) else str(counts)


def _bytes(rle: dict[str, Any]) -> dict[str, Any]:
    return {"size": list(rle["size"]), "counts": rle["counts"].encode("ascii")}


def save_masks(path: str | os.PathLike[str], masks: SamMasks) -> None:
    """Write ``masks`` to ``path`` (JSON, atomically)."""
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(masks.to_json(), separators=(",", ":")))


def load_masks(path: str | os.PathLike[str]) -> SamMasks:
    """Read a file of :func:`save_masks`; a damaged one raises DataError naming it."""
    path = Path(path)
    try:
        d = json.loads(path.read_text())
        if d.get("format") != FORMAT or d.get("version") != VERSION:
            raise ValueError(f"not a {FORMAT} v{VERSION} file")
        h, w = int(d["height"]), int(d["width"])
        ms = d["masks"]
        masks = SamMasks(
            h,
            w,
            [{"counts": m["counts"]} for m in ms],
            [m["predicted_iou"] for m in ms],
            [m["stability_score"] for m in ms],
        )
    except FileNotFoundError:
        raise DataError(f"SAM masks {path} not found: run the sam_masks stage first") from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DataError(
            f"SAM masks {path} are damaged ({exc}): delete the file to recompute it"
        ) from None
    return masks


def estimate_peak_bytes(
    height: int, width: int, settings: SamSettings, input_size: int = 1024
) -> int:
    """Rough peak memory of one generator batch: ``points_per_batch × 3`` float32 mask logits
    at the encoder's input size and at the image size, twice (temporaries), in bytes."""
    maps = settings.points_per_batch * 3
    return int(maps * (input_size * input_size + height * width) * 4 * 2)


def _available_bytes(device: str) -> int | None:
    if device.startswith("cuda"):
        import torch

        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _memory_hint(height: int, width: int, settings: SamSettings) -> str:
    return (
        f"the {width}x{height} image does not fit in memory with sam.points_per_batch "
        f"{settings.points_per_batch}: lower sam.points_per_batch (fewer prompts at a time, same "
        "masks) or sam.max_side"
    )


def _resize_image(image: np.ndarray, max_side: int | None) -> np.ndarray:
    h, w = image.shape[:2]
    if max_side is None or max(h, w) <= max_side:
        return image
    from PIL import Image

    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))


def _upscale_rles(rles: list[dict[str, Any]], height: int, width: int) -> list[dict[str, Any]]:
    """Each RLE decoded, upscaled (nearest) to ``height × width`` and encoded again."""
    from pycocotools import mask as mask_utils

    out = []
    for rle in rles:
        small = mask_utils.decode(_bytes({"size": rle["size"], "counts": _text(rle["counts"])}))
        sh, sw = small.shape
        rows = np.minimum((np.arange(height) + 0.5) * sh / height, sh - 1).astype(np.intp)
        cols = np.minimum((np.arange(width) + 0.5) * sw / width, sw - 1).astype(np.intp)
        big = small[rows[:, None], cols[None, :]]  # [H, W]
        out.append(mask_utils.encode(np.asfortranarray(big)))
    return out


def generate_masks(sam: Any, image: np.ndarray, settings: SamSettings | None = None) -> SamMasks:
    """SAM's automatic masks of ``image`` (uint8 ``[H, W, 3]`` RGB) at the image's size."""
    settings = settings or SamSettings()
    sa = require_segment_anything()
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be uint8 [H, W, 3] RGB, got {image.dtype} {image.shape}")
    if settings.min_mask_region_area > 0:
        try:
            import cv2  # noqa: F401
        except ImportError:
            raise SmafError(
                "sam.min_mask_region_area > 0 needs OpenCV: pip install opencv-python-headless "
                "(or set sam.min_mask_region_area: 0)"
            ) from None
    height, width = image.shape[:2]
    small = _resize_image(image, settings.max_side)
    sh, sw = small.shape[:2]
    device = str(next(sam.parameters()).device)
    input_size = int(sam.image_encoder.img_size)
    available = _available_bytes(device)
    if available is not None and estimate_peak_bytes(sh, sw, settings, input_size) > available:
        raise SmafError(_memory_hint(height, width, settings))
    generator = sa.SamAutomaticMaskGenerator(
        sam, output_mode="coco_rle", **settings.generator_kwargs()
    )
    try:
        records = generator.generate(small)
    except (MemoryError, RuntimeError) as exc:  # torch.OutOfMemoryError is a RuntimeError
        if isinstance(exc, MemoryError) or "out of memory" in str(exc) or "allocate" in str(exc):
            raise SmafError(_memory_hint(height, width, settings)) from None
        raise
    rles = [r["segmentation"] for r in records]
    if (sh, sw) != (height, width):
        rles = _upscale_rles(rles, height, width)
    return SamMasks(
        height,
        width,
        rles,
        [r["predicted_iou"] for r in records],
        [r["stability_score"] for r in records],
    )

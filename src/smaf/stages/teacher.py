"""Stage 3a (offline teacher, the released code): fused multi-scale maps of the frozen EPS model.

Computed once over train_aug: for every image, the multi-scale + flip attention of the initial
(pretrained) model, fused (Eq. 5–6) and denoised with the image label, stored compactly
(present classes only, float16, compressed; see :func:`smaf.cam.save_maps`). Self-training then
puts them through the same geometric augmentation as the student's crop.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import torch

from smaf.cam import CAMConfig, class_maps, save_maps
from smaf.data.voc import VOCLayout, read_labels_csv
from smaf.io import load_image, read_id_list
from smaf.models.checkpoint import load_model
from smaf.stages.common import dataclass_from, read_dataset_info
from smaf.train import resolve_device

log = logging.getLogger(__name__)


def teacher_maps(
    *,
    dataset_info: str | os.PathLike[str],
    split_file: str | os.PathLike[str],
    labels_csv: str | os.PathLike[str],
    model_path: str | os.PathLike[str],
    cam: dict[str, Any],
    out_dir: str | os.PathLike[str],
    device: str = "auto",
    log_every: int = 50,
) -> dict[str, float]:
    """Write ``out_dir/<id>.npz`` for every id of ``split_file``; return size statistics.

    Images whose file already exists are skipped, so an interrupted run continues.
    """
    info = read_dataset_info(dataset_info)
    cfg = dataclass_from(CAMConfig, cam, "self_train.teacher_cam")
    layout = VOCLayout.from_root(info["root"])
    ids = read_id_list(split_file)
    labels = read_labels_csv(labels_csv, info["num_classes"])
    dev = resolve_device(device)
    model, _ = load_model(model_path, num_classes=info["num_classes"])
    model.eval().to(dev)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0, done, total_bytes = time.perf_counter(), 0, 0
    for n, image_id in enumerate(ids, 1):
        path = out / f"{image_id}.npz"
        if not path.exists():
            image = load_image(layout.image_path(image_id))
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                maps = class_maps(model, image, labels[image_id], cfg)
            save_maps(path, maps, labels[image_id])
            done += 1
        total_bytes += path.stat().st_size
        if n % log_every == 0 or n == len(ids):
            rate = done / max(time.perf_counter() - t0, 1e-9)
            log.info(
                "teacher maps: %d/%d images (%d computed, %.1f img/s)", n, len(ids), done, rate
            )
    stats = {"images": len(ids), "bytes_per_image": total_bytes / max(len(ids), 1)}
    log.info("teacher maps: %.1f kB per image on disk", stats["bytes_per_image"] / 1024)
    return stats

"""Stage 4: CAM seeds of a trained classifier (EPS or SMAF) for one split.

For every image: the fused, denoised multi-scale attention (:func:`smaf.cam.class_maps`,
Eq. 5–6 + denoising), stored as ``maps/<id>.npz`` (:func:`smaf.cam.save_maps`: present classes,
float16), and the seed label map ``argmax([thr, maps])`` as the palette PNG ``<id>.png`` with
values 0 (background) .. C and no 255. The CRF stage reads both.

Output folder::

    <out_dir>/<id>.png          uint8 [H, W] seeds, 0..C
    <out_dir>/maps/<id>.npz     fused maps of the present classes (float16)
    <out_dir>/seeds.json        settings, model, counts and timing of the run

Images whose PNG and npz both exist are skipped, so an interrupted run continues where it
stopped. Under Snakemake give ``work_dir`` (see :mod:`smaf.stages.staging`): Snakemake deletes
a directory output before and after a failed job, so only a staging folder survives to the rerun.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from smaf.cam import CAMConfig, class_maps, save_maps, seed_labels
from smaf.config import dataclass_from
from smaf.data.voc import VOCLayout, read_labels_csv
from smaf.errors import ConfigError, DataError
from smaf.io import atomic_write, load_image, read_id_list, save_mask
from smaf.models.checkpoint import load_model
from smaf.stages.staging import file_identity, open_staging, publish
from smaf.train import resolve_device, use_threads

log = logging.getLogger(__name__)

#: Written into every finished seeds folder; the CRF stage fingerprints its staging with it.
MANIFEST = "seeds.json"


def _cam_config(cam: dict[str, Any] | CAMConfig | None) -> CAMConfig:
    if isinstance(cam, CAMConfig):
        return cam
    return dataclass_from(CAMConfig, cam, "seeds")


#: Images whose outputs may wait for the writer thread (bounds the memory they hold).
WRITE_AHEAD = 4


def _write_outputs(
    npz: Path, png: Path, maps: torch.Tensor, labels: np.ndarray, seeds: np.ndarray
) -> None:
    # maps first: a PNG without its npz is redone on resume, never half-used.
    save_maps(npz, maps, labels)
    save_mask(png, seeds)


def make_seeds(
    model_path: str | os.PathLike[str],
    root: str | os.PathLike[str],
    split_file: str | os.PathLike[str],
    labels_csv: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    cam: dict[str, Any] | CAMConfig | None,
    thr: float,
    num_classes: int,
    device: str = "auto",
    log_every: int = 20,
    *,
    work_dir: str | os.PathLike[str] | None = None,
    amp: bool = False,
    num_threads: int | None = None,
) -> dict[str, Any]:
    """Write seeds and fused maps of every id of ``split_file`` into ``out_dir``.

    Args:
        model_path: a classifier saved by :func:`smaf.models.checkpoint.save_model`.
        root: the ``VOC2012``-layout folder holding ``JPEGImages/<id>.jpg``.
        split_file: one image id per line.
        labels_csv: image-level labels (``results/<dataset>/data/cls_labels.csv``); absent
            classes are zeroed in the maps (denoising) and can never be seeds.
        out_dir: output folder (layout in the module docstring).
        cam: :class:`~smaf.cam.CAMConfig` or its fields as a dict (scales, flip, resize_mode,
            eps); ``None`` = the defaults (paper: scales 0.5/1/1.5/2 with flips).
        thr: constant background score prepended before the argmax (paper: 0.2), in (0, 1).
        num_classes: foreground classes C; the model file must be for as many.
        device: ``'auto'`` (CUDA when available), ``'cpu'``, ``'cuda'``, ``'cuda:1'``, ...
        log_every: progress line every this many images.
        work_dir: staging folder to write into and publish onto ``out_dir`` at the end
            (resumable under Snakemake); ``None`` writes into ``out_dir`` directly.
        amp: run the network in bfloat16 autocast on CUDA (faster; seeds may differ from the
            float32 ones at a few pixels whose scores tie within bf16 precision).
        num_threads: torch CPU threads (the rule's ``threads``); ``None`` leaves torch's default.

    Returns:
        Run statistics: ``images``, ``computed`` (not skipped), ``seconds``, ``images_per_s``
        (of the computed ones), ``foreground_fraction`` (mean share of seed pixels > 0).

    Raises:
        ConfigError: ``thr`` outside (0, 1) or bad ``cam`` keys.
        DataError / SmafError: missing images, labels or model file, class-count mismatch.
    """
    cfg = _cam_config(cam)
    if not 0.0 < float(thr) < 1.0:
        raise ConfigError(f"seeds.thr must be in (0, 1) (a background score), got {thr}")
    if log_every < 1:
        raise ConfigError(f"log_every must be >= 1, got {log_every}")
    ids = read_id_list(split_file)
    if not ids:
        raise DataError(f"split list {split_file} is empty.")
    labels = read_labels_csv(labels_csv, num_classes)
    missing = [i for i in ids if i not in labels]
    if missing:
        raise DataError(
            f"{labels_csv} has no image labels for {len(missing)} of {len(ids)} ids of "
            f"{split_file} (first: {missing[0]}). Rerun the prepare_dataset rule."
        )
    layout = VOCLayout.from_root(root)

    dev = resolve_device(device)
    use_threads(num_threads)
    model, meta = load_model(model_path, num_classes=num_classes)
    model.eval().to(dev)
    settings = {"cam": asdict(cfg), "thr": float(thr), "num_classes": num_classes, "amp": amp}
    fingerprint = {
        **settings,
        "model": file_identity(model_path),
        "labels_csv": file_identity(labels_csv),
        "root": str(root),
    }
    work = open_staging(out_dir, work_dir, fingerprint)
    (work / "maps").mkdir(exist_ok=True)
    log.info(
        "seeds: %d images of %s, model %s (stage %s) on %s, scales %s, flip %s, thr %.3g",
        len(ids),
        Path(split_file).name,
        model_path,
        meta.get("stage", "?"),
        dev,
        cfg.scales,
        cfg.flip,
        thr,
    )

    t0 = time.perf_counter()
    computed = 0
    fg_fraction = 0.0
    # Compressing and writing an image's outputs (zlib, PNG: they release the GIL) overlaps
    # the network's next image in a writer thread; at most WRITE_AHEAD images wait for it.
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="seeds-writer")
    pending: deque[Future] = deque()
    try:
        for n, image_id in enumerate(ids, 1):
            png = work / f"{image_id}.png"
            npz = work / "maps" / f"{image_id}.npz"
            if png.is_file() and npz.is_file():
                continue  # finished by an earlier, interrupted run
            image = load_image(layout.image_path(image_id))  # [H, W, 3] uint8
            lab = labels[image_id]  # [C] 0/1
            with (
                torch.inference_mode(),
                torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp and dev.type == "cuda"),
            ):
                maps = class_maps(model, image, lab, cfg).cpu()  # [C, H, W] in [0, 1]
            seeds = seed_labels(maps, thr)  # [H, W] uint8 0..C
            pending.append(writer.submit(_write_outputs, npz, png, maps, lab, seeds))
            while len(pending) > WRITE_AHEAD:
                pending.popleft().result()  # re-raises a write error here
            computed += 1
            fg_fraction += float(np.count_nonzero(seeds)) / seeds.size
            if n % log_every == 0 or n == len(ids):
                elapsed = time.perf_counter() - t0
                rate = computed / elapsed if elapsed > 0 else float("inf")
                eta = (len(ids) - n) / rate if rate > 0 else float("nan")
                log.info(
                    "seeds: %d/%d images (%d computed), %.2f images/s, %.0f s elapsed, ETA %.0f s",
                    n,
                    len(ids),
                    computed,
                    rate,
                    elapsed,
                    eta,
                )
        while pending:
            pending.popleft().result()
    finally:
        writer.shutdown(wait=True, cancel_futures=True)
    elapsed = time.perf_counter() - t0
    stats = {
        "images": len(ids),
        "computed": computed,
        "seconds": round(elapsed, 3),
        "images_per_s": computed / elapsed if elapsed > 0 and computed else None,
        "foreground_fraction": fg_fraction / computed if computed else None,
    }
    manifest = {
        **settings,
        "model_path": str(model_path),
        "model_meta": meta,
        "split_file": str(split_file),
        "device": str(dev),
        "run_id": uuid.uuid4().hex,  # changes with every finished run (the CRF fingerprint)
        **stats,
    }
    with atomic_write(work / MANIFEST) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2, default=str))
    publish(work, out_dir)
    log.info(
        "seeds: done, %d images (%d computed in %.1f s) -> %s", len(ids), computed, elapsed, out_dir
    )
    return stats

"""``smaf predict``'s loop: every image of a folder through a model (see :mod:`smaf.predict`)."""

from __future__ import annotations

import json
import logging
import os
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from smaf.cam import CAMConfig, class_maps, seed_labels
from smaf.config import dataclass_from
from smaf.crf import DenseCRF
from smaf.data.images import IMAGE_SUFFIXES, ImageFile
from smaf.errors import ConfigError, DataError, SmafError
from smaf.inference import upsampled_probs
from smaf.io import load_image as read_rgb
from smaf.predict.inputs import as_list, gather_images
from smaf.predict.model import Predictor, batch_logits, load_predictor
from smaf.predict.outputs import MANIFEST, OutputFolder
from smaf.progress import Progress
from smaf.staging import file_identity
from smaf.train import resolve_device, use_threads
from smaf.transforms import normalize

log = logging.getLogger(__name__)


def _read_ahead(files: Iterable[ImageFile], ahead: int) -> Iterator[tuple[ImageFile, Any]]:
    """``(file, uint8 [H, W, 3] or its DataError)`` in order, decoded ``ahead`` images in
    advance by two threads (Pillow releases the GIL while decoding)."""

    def read(f: ImageFile) -> np.ndarray | DataError:
        try:
            return read_rgb(f.path)
        except DataError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="predict-read") as pool:
        it = iter(files)
        queue: deque[tuple[ImageFile, Future]] = deque()
        for f in it:
            queue.append((f, pool.submit(read, f)))
            if len(queue) >= ahead:
                break
        while queue:
            f, fut = queue.popleft()
            nxt = next(it, None)
            if nxt is not None:
                queue.append((nxt, pool.submit(read, nxt)))
            yield f, fut.result()


def _deeplab_masks(
    pred: Predictor,
    batch: list[tuple[ImageFile, np.ndarray]],
    device: torch.device,
    flip: bool,
    crf: DenseCRF | None,
    autocast: torch.autocast,
) -> Iterator[tuple[ImageFile, np.ndarray, np.ndarray]]:
    """``(file, image, mask [H, W] 0..C)`` of each image of ``batch``; same-size images run
    as one batch."""
    groups: dict[tuple[int, ...], list[tuple[ImageFile, np.ndarray]]] = {}
    for item in batch:
        groups.setdefault(item[1].shape, []).append(item)
    for group in groups.values():
        with autocast:
            logits = batch_logits(pred.model, [im for _, im in group], device, flip)  # [K, h, w]
        for (f, image), lg in zip(group, logits, strict=True):
            probs = upsampled_probs(lg, image.shape[:2])  # [K, H, W] softmax
            if crf is not None:
                probs = torch.from_numpy(crf(image, probs.numpy()))  # CRF marginals
            yield f, image, probs.argmax(0).numpy().astype(np.uint8)


def _cams(
    pred: Predictor,
    image: np.ndarray,
    cfg: CAMConfig,
    thr: float,
    device: torch.device,
    autocast: torch.autocast,
) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Seed mask ``[H, W]`` (0..C) and ``{label: fused CAM [H, W]}`` of the classes the
    classifier finds in ``image`` (image logit > 0)."""
    with torch.inference_mode(), autocast:
        x = normalize(image)[None].to(device)  # [1, 3, H, W]
        present = (pred.model(x)["logits"][0].float() > 0).cpu().numpy().astype(np.float32)
        maps = class_maps(pred.model, image, present, cfg).float().cpu()  # [C, H, W]
    cams = {int(c) + 1: maps[c].numpy() for c in np.flatnonzero(present)}
    return seed_labels(maps, thr), cams


def predict_folder(
    model_path: str | os.PathLike[str],
    images: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    crf: bool | DenseCRF | Mapping[str, Any] = False,
    overlay: bool = False,
    cams: bool | None = None,
    cam: Mapping[str, Any] | None = None,
    classes: str | os.PathLike[str] | None = None,
    device: str = "auto",
    batch_size: int = 1,
    scales: Sequence[float] | None = None,
    flip: bool | None = None,
    thr: float = 0.2,
    alpha: float = 0.5,
    amp: bool = False,
    threads: int | None = None,
    strict: bool = False,
    overwrite: bool = False,
    log_every: int = 20,
    work_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Segment every image under ``images`` with the model at ``model_path``.

    Args:
        model_path: a DeepLab or classifier model file.
        images: the folder of images (any depth), an image file, or a list of both
            (:func:`~smaf.predict.inputs.gather_images`).
        out_dir: the output folder (layout in :mod:`smaf.predict`); resumed when it exists.
        crf: DeepLab's dense CRF on the upsampled softmax (DeepLab models only): True for
            :class:`~smaf.crf.DenseCRF`'s defaults (deeplab-pytorch's), or its fields.
        overlay: also write ``overlay/<name>.jpg``.
        cams: classifier CAMs (None: for classifier models; True with DeepLab is an error).
        cam: further :class:`~smaf.cam.CAMConfig` fields for CAMs (``resize_mode``, ``eps``).
        classes: class names file (:func:`~smaf.predict.model.read_class_names`); must fit
            the model.
        device: ``auto`` | ``cpu`` | ``cuda[:i]``.
        batch_size: DeepLab: same-size images (in file order, within each group of
            ``batch_size``) run as one batch; CAMs run one image at a time.
        scales: DeepLab: MSC scales (default: the model's); CAMs: CAM scales (default
            0.5, 1, 1.5, 2).
        flip: add the mirrored image (default: off for DeepLab, on for CAMs, as in training).
        thr: CAMs: the constant background score of the seed argmax, in (0, 1).
        alpha: weight of the class colour / heat map in the overlays.
        amp: bf16 autocast on CUDA.
        threads: torch CPU threads.
        strict: stop at the first unreadable image instead of skipping it.
        overwrite: redo every image, removing earlier outputs of this module in ``out_dir``.
        log_every: a progress line every this many images.
        work_dir: staging folder published onto ``out_dir`` at the end (Snakemake).

    Returns:
        Counts (``images``, ``predicted``, ``reused``, ``skipped``), timing, the skipped
        images and the settings.

    Raises:
        SmafError: no images, a bad model or class file, settings that do not fit the model
            or the output folder, an unreadable image with ``strict``.
    """
    _check_args(batch_size, log_every, thr, alpha, scales)
    use_threads(threads)
    dev = resolve_device(device)
    pred = load_predictor(model_path, classes)
    cams = pred.kind == "classifier" if cams is None else cams
    if cams != (pred.kind == "classifier"):
        need = "CAMs need a classifier (pretrain/ or self_train/model.pt)"
        raise SmafError(
            f"{model_path} is a {pred.kind} model: "
            + (need if cams else "a classifier model gives CAMs, not DeepLab masks.")
        )
    if crf and cams:
        raise ConfigError("the dense CRF refines DeepLab predictions; drop --crf for CAMs.")
    out = Path(out_dir)
    exclude = (out,) if work_dir is None else (out, Path(work_dir))
    files = gather_images(images, out, exclude)
    if not files:
        where = ", ".join(map(str, as_list(images)))
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under {where}.")
    run = _settings(
        pred, model_path, cams=cams, crf=crf, cam=cam, scales=scales, flip=flip, amp=amp, thr=thr
    )
    run.batch_size, run.overlay, run.strict = batch_size, overlay, strict
    folder = OutputFolder.open(
        out, run.settings, pred.class_names, alpha=alpha, overwrite=overwrite, work_dir=work_dir
    )
    pred.model.to(dev)
    log.info(
        "predict: %d images under %s, %s model %s (%d classes) on %s, %s",
        len(files),
        images,
        pred.kind,
        model_path,
        pred.num_classes,
        dev,
        run.how + (f", thr {thr}" if cams else f", batch {batch_size}"),
    )

    t0 = time.perf_counter()
    progress = Progress("predict", len(files), every=log_every, log=log)
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp and dev.type == "cuda")
    skipped, reused = _predict_images(pred, run, files, folder, progress, dev, autocast)
    if not folder.areas:
        raise DataError(f"none of the {len(files)} images under {images} could be read.")

    summary = {
        "images": len(files),
        "predicted": progress.counted,
        "reused": reused,
        "skipped": len(skipped),
        "seconds": round(time.perf_counter() - t0, 2),
        "device": str(dev),
    }
    folder.close(files, summary, out, skipped)
    log.info("predict: %s -> %s", json.dumps(summary), out)
    _log_skipped(skipped, out / MANIFEST)
    return {**summary, "skipped_images": skipped, "settings": run.settings}


def _check_args(
    batch_size: int, log_every: int, thr: float, alpha: float, scales: Sequence[float] | None
) -> None:
    if batch_size < 1 or log_every < 1:
        raise ConfigError(f"batch size and log_every must be >= 1, got {batch_size}, {log_every}")
    if not 0.0 < thr < 1.0 or not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"thr must be in (0, 1) and alpha in [0, 1], got {thr}, {alpha}")
    if scales is not None and (not scales or min(scales) <= 0):
        raise ConfigError(f"scales must be positive numbers, got {list(scales)}")


@dataclass
class _Run:
    """What one predict call computes with: the settings recorded in the manifest, the CAM
    settings or DeepLab's CRF, and the per-image switches."""

    settings: dict[str, Any]
    how: str
    cams: bool
    flip: bool
    cam_cfg: CAMConfig | None = None
    crf_post: DenseCRF | None = None
    thr: float = 0.2
    batch_size: int = 1
    overlay: bool = False
    strict: bool = False


def _settings(
    pred: Predictor,
    model_path: str | os.PathLike[str],
    *,
    cams: bool,
    crf: bool | DenseCRF | Mapping[str, Any],
    cam: Mapping[str, Any] | None,
    scales: Sequence[float] | None,
    flip: bool | None,
    amp: bool,
    thr: float,
) -> _Run:
    """The run's settings (what its outputs depend on: the manifest's ``settings``)."""
    crf_post = None
    if crf:
        crf_post = crf if isinstance(crf, DenseCRF) else DenseCRF()
        if isinstance(crf, Mapping):
            crf_post = dataclass_from(DenseCRF, dict(crf), "crf")
    flip = cams if flip is None else bool(flip)
    settings: dict[str, Any] = {
        "model": {**file_identity(model_path), "path": str(Path(model_path).resolve())},
        "kind": pred.kind,
        "flip": flip,
        "amp": amp,
    }
    run = _Run(settings, "", cams, flip, crf_post=crf_post, thr=float(thr))
    if cams:
        fields = {**dict(cam or {}), "flip": flip, **({"scales": tuple(scales)} if scales else {})}
        run.cam_cfg = dataclass_from(CAMConfig, fields, "cam")
        settings.update(cam=asdict(run.cam_cfg), thr=float(thr))
        run.how = f"CAMs at scales {run.cam_cfg.scales}, flip {flip}"
    else:
        if scales:
            pred.model.scales = tuple(float(s) for s in scales)
        settings.update(msc_scales=list(pred.model.scales), crf=asdict(crf_post) if crf else None)
        run.how = f"MSC scales {pred.model.scales}, flip {flip}, crf {crf_post}"
    return run


def _predict_images(
    pred: Predictor,
    run: _Run,
    files: Sequence[ImageFile],
    folder: OutputFolder,
    progress: Progress,
    dev: torch.device,
    autocast: Any,
) -> tuple[list[str], int]:
    """Reuse the finished images, predict the others (DeepLab in same-size batches); return
    the unreadable images skipped and the number reused."""
    skipped: list[str] = []

    def skip(f: ImageFile, exc: DataError) -> None:
        if run.strict:
            raise exc
        log.warning("skipping %s: %s", f.rel, exc)
        skipped.append(str(f.rel))
        progress.update(counted=False)

    pending = []
    for f in files:
        if not folder.is_done(f):
            pending.append(f)
            continue
        try:
            folder.reuse(f, run.overlay, read_rgb)  # finished by an earlier run
        except DataError as exc:
            skip(f, exc)
            continue
        progress.update(counted=False)
    reused = len(files) - len(pending) - len(skipped)

    batch: list[tuple[ImageFile, np.ndarray]] = []
    for i, (f, image) in enumerate(_read_ahead(pending, ahead=max(4, 2 * run.batch_size))):
        if isinstance(image, DataError):
            skip(f, image)
        elif run.cams:
            mask, maps = _cams(pred, image, run.cam_cfg, run.thr, dev, autocast)
            folder.write(f, image, mask, overlay=run.overlay, cams=maps)
            progress.update()
        else:
            batch.append((f, image))
        if batch and (len(batch) >= run.batch_size or i == len(pending) - 1):
            for g, img, mask in _deeplab_masks(pred, batch, dev, run.flip, run.crf_post, autocast):
                folder.write(g, img, mask, overlay=run.overlay)
                progress.update()
            batch = []
    progress.close()
    return skipped, reused


def _log_skipped(skipped: list[str], manifest: Path) -> None:
    if skipped:
        shown = ", ".join(skipped[:5]) + (
            f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        )
        log.warning(
            "predict: %d image(s) could not be read and have no outputs: %s (listed in %s)",
            len(skipped),
            shown,
            manifest,
        )

"""Segment new images with a trained model: the library side of ``smaf predict``.

:func:`predict_folder` runs a model over every image of a folder (any depth; images are found
and read by :mod:`smaf.image_files`: EXIF orientation applied, any mode to 8-bit RGB):

* a **DeepLab** model (``deeplab/model.pt``): MSC logits of the full image
  (:func:`smaf.stages.deeplab.infer_logits`, optional flip), bilinear upsampling and softmax
  (:func:`smaf.stages.crf_stage.upsampled_probs`), optionally DeepLab's dense CRF
  (:class:`smaf.crf.DenseCRF`, deeplab-pytorch's values), argmax: the numbers
  :func:`~smaf.stages.deeplab.predict_split` and :func:`~smaf.stages.crf_stage.crf_split`
  give for the same image.
* a **classifier** (EPS ``pretrain/model.pt`` or SMAF ``self_train/model.pt``): new images
  have no labels, so the classes the classifier itself finds present (image logit > 0, i.e.
  sigmoid > 0.5, on the full image) get their fused multi-scale CAMs
  (:func:`smaf.cam.class_maps`), saved as jet heat maps, and the seed argmax with a
  constant background score ``thr`` (:func:`smaf.cam.seed_labels`) is the mask.

Output folder::

    <out>/masks/<name>.png            palette PNG (VOC colours), values 0..C
    <out>/overlay/<name>.jpg          (overlay) the image with its classes' colours blended in
    <out>/cams/<name>_<class>.png     (classifier) heat map of each class found in the image
    <out>/classes.json                class names and palette colours; index = label value
    <out>/areas.csv                   per image: image, width, height, fraction of each class
    <out>/predict.json                settings, counts and the images that could not be read

``<name>`` is the image's path under the folder without its extension (sub-folders kept).
Every file is written atomically and an image's mask last, so a mask means the image is done:
a rerun skips those images (resumable) and refuses an output folder made with other settings.
Unreadable images are skipped with a warning and listed at the end (``strict``: stop instead).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
import zipfile
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
from smaf.errors import ConfigError, DataError, SmafError
from smaf.image_files import IMAGE_SUFFIXES, ImageFile, find_images, read_rgb
from smaf.io import atomic_write, load_mask, save_image, save_mask, voc_palette
from smaf.models.checkpoint import load_model, read_model_file
from smaf.models.deeplab import MSC, load_deeplab
from smaf.progress import Progress
from smaf.stages.crf_stage import upsampled_probs
from smaf.stages.deeplab import infer_logits
from smaf.stages.staging import file_identity, open_staging, publish
from smaf.train import resolve_device, use_threads
from smaf.transforms import normalize

log = logging.getLogger(__name__)

#: The settings record of an output folder (also its "made by smaf predict" mark).
MANIFEST = "predict.json"
#: What :func:`predict_folder` writes into an output folder (and ``overwrite`` removes).
OUTPUTS = ("masks", "overlay", "cams", "classes.json", "areas.csv", MANIFEST)


# ------------------------------------------------------------------------------ the model
@dataclass
class Predictor:
    """A loaded model file: ``kind`` is ``'deeplab'`` or ``'classifier'``."""

    kind: str
    model: torch.nn.Module
    meta: dict[str, Any]
    class_names: list[str]  # C+1 names, background first (label value = position)

    @property
    def num_classes(self) -> int:
        """Foreground classes C."""
        return len(self.class_names) - 1


def read_class_names(path: str | os.PathLike[str]) -> list[str]:
    """Class names from a file: a text file with one name per line, a JSON list, or a JSON
    object with ``class_names`` (a dataset's ``dataset.json``) or ``classes`` (the
    ``classes.json`` this module writes)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, IsADirectoryError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the class names file {path} ({exc}).") from None
    if path.suffix.lower() != ".json":
        return [line.strip() for line in text.splitlines() if line.strip()]
    try:
        data = json.loads(text)
        if isinstance(data, dict):
            data = data.get("class_names") or [c["name"] for c in data["classes"]]
        names = [str(n) for n in data]
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"{path}: expected a JSON list of class names or an object with 'class_names' "
            f"or 'classes' ({type(exc).__name__}: {exc})."
        ) from None
    return names


def resolve_class_names(
    num_classes: int,
    meta: dict[str, Any],
    given: Sequence[str] | None = None,
    model_path: str | os.PathLike[str] = "the model",
    given_from: str = "the class names",
) -> list[str]:
    """The C+1 names (background first) of a model for C classes.

    ``given`` (from ``--classes``) may list the C foreground classes or C+1 names with the
    background first; otherwise the model file's ``class_names``; otherwise ``class_1..C``.

    Raises:
        SmafError: ``given`` does not fit the model's number of classes.
    """
    if given is not None:
        names = list(given)
        if len(names) == num_classes:
            return ["background", *names]
        if len(names) == num_classes + 1:
            return names
        raise SmafError(
            f"{model_path} was trained for {num_classes} classes but {given_from} names "
            f"{len(names)}; give the class list of the dataset the model was trained on."
        )
    names = list(meta.get("class_names") or [])
    if len(names) == num_classes + 1:
        return names
    return ["background", *(f"class_{c}" for c in range(1, num_classes + 1))]


def load_predictor(
    path: str | os.PathLike[str], classes: str | os.PathLike[str] | None = None
) -> Predictor:
    """Load a DeepLab or classifier model file (on the CPU, eval mode) with its class names.

    Args:
        classes: a class names file (:func:`read_class_names`) overriding the model's own.
    """
    if Path(path).is_file() and not zipfile.is_zipfile(path):
        # torch.save writes a zip archive; anything else gets torch's long unpickling error.
        raise SmafError(
            f"{path} is not a SMAF model file (not a PyTorch archive); give the model.pt "
            "of a deeplab, self_train or pretrain run."
        )
    state = read_model_file(path, "the training rule that writes it")
    config = state["model_config"]
    if "msc_scales" in config or state.get("meta", {}).get("stage") == "deeplab":
        model, meta = load_deeplab(path)
        kind = "deeplab"
    elif "head" in config:
        model, meta = load_model(path)
        kind = "classifier"
    else:
        raise SmafError(f"{path} is neither a DeepLab nor a classifier model file.")
    given = read_class_names(classes) if classes is not None else None
    names = resolve_class_names(model.num_classes, meta, given, path, str(classes))
    return Predictor(kind, model.eval(), meta, names)


@torch.no_grad()
def batch_logits(
    model: MSC, images: Sequence[np.ndarray], device: torch.device, flip: bool = False
) -> list[torch.Tensor]:
    """MSC logits of same-size images run as one batch: float32 ``[C+1, ⌈H/8⌉, ⌈W/8⌉]`` each.

    One image goes through :func:`~smaf.stages.deeplab.infer_logits` itself; a batch computes
    the same per image (eval mode: no statistic crosses images), up to float rounding.
    """
    if len(images) == 1:
        return [infer_logits(model, images[0], device, flip)]
    x = torch.stack([normalize(im) for im in images]).to(device)  # [B, 3, H, W]
    logits = model(x).float()  # [B, K, h, w]
    if flip:
        logits = 0.5 * (logits + model(x.flip(-1)).float().flip(-1))
    return list(logits.cpu())


# ---------------------------------------------------------------------------- the outputs
def classes_document(class_names: Sequence[str]) -> dict[str, Any]:
    """``classes.json``: each label value's name and RGB colour (the VOC palette)."""
    pal = voc_palette()
    return {
        "classes": [
            {"value": v, "name": n, "color": pal[3 * v : 3 * v + 3]}
            for v, n in enumerate(class_names)
        ],
        "palette": "PASCAL VOC",
    }


def overlay_image(image: np.ndarray, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """``image`` with each foreground pixel blended with its class colour: uint8 ``[H, W, 3]``.

    ``out = (1 - alpha) * image + alpha * colour`` where ``mask > 0``; background unchanged.
    """
    pal = np.asarray(voc_palette(), dtype=np.float32).reshape(256, 3)
    colour = pal[mask]  # [H, W, 3]
    blend = (1.0 - alpha) * image.astype(np.float32) + alpha * colour
    out = np.where((mask > 0)[:, :, None], np.rint(blend), image)
    return out.astype(np.uint8)


def heat_map(image: np.ndarray, cam: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """``(1 - alpha) * image + alpha * jet(cam)``: uint8 ``[H, W, 3]``; ``cam`` ``[H, W]`` in [0, 1]."""
    from matplotlib import colormaps  # only here: the DeepLab path never needs it

    jet = colormaps["jet"](np.clip(cam, 0.0, 1.0))[:, :, :3] * 255.0  # [H, W, 3]
    return np.rint((1.0 - alpha) * image.astype(np.float32) + alpha * jet).astype(np.uint8)


def class_fractions(mask: np.ndarray, num_classes: int) -> np.ndarray:
    """Fraction of the pixels of each label 0..C: float64 ``[C+1]`` summing to 1."""
    counts = np.bincount(mask.ravel(), minlength=num_classes + 1)[: num_classes + 1]
    return counts / max(mask.size, 1)


def _safe_tag(name: str) -> str:
    """A class name usable inside a file name (path separators and NUL replaced)."""
    return re.sub(r"[/\\\x00]", "_", name)


def _read_ahead(files: Iterable[ImageFile], ahead: int) -> Iterator[tuple[ImageFile, Any]]:
    """``(file, uint8 [H, W, 3] or the DataError)`` in order, decoded ``ahead`` images in
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


def _open_output(
    out: Path, work_dir: str | os.PathLike[str] | None, settings: dict[str, Any], overwrite: bool
) -> Path:
    """The folder to write into: ``out`` itself, or the staging folder ``work_dir``.

    ``out`` made by another run with other settings is an error unless ``overwrite``
    (then this module's outputs in it are removed first).
    """
    if work_dir is not None:
        if overwrite and Path(work_dir).exists():
            shutil.rmtree(work_dir)
        return open_staging(out, work_dir, settings)
    manifest = out / MANIFEST
    old = None
    if manifest.is_file():
        try:
            old = json.loads(manifest.read_text()).get("settings")
        except ValueError:
            old = "unreadable"
    elif (out / "masks").exists():
        old = "unknown"
    if old is not None and old != settings and not overwrite:
        differ = sorted(
            k for k in settings if not isinstance(old, dict) or old.get(k) != settings[k]
        )
        raise SmafError(
            f"{out} holds predictions made with other settings ({', '.join(differ)} differ); "
            "choose another output folder or add --overwrite to redo every image."
        )
    if overwrite:
        for name in OUTPUTS:
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _write_json(path: Path, data: dict[str, Any]) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# ------------------------------------------------------------------------------- the loop
def predict_folder(
    model_path: str | os.PathLike[str],
    images: str | os.PathLike[str],
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
    """Segment every image under ``images`` with the model at ``model_path`` (module doc).

    Args:
        model_path: a DeepLab or classifier model file.
        images: the folder of images (any depth).
        out_dir: the output folder (layout in the module doc); resumed when it exists.
        crf: DeepLab's dense CRF on the upsampled softmax (DeepLab models only): True for
            :class:`~smaf.crf.DenseCRF`'s defaults (deeplab-pytorch's), or its fields.
        overlay: also write ``overlay/<name>.jpg``.
        cams: classifier CAMs (None: for classifier models; True with DeepLab is an error).
        cam: further :class:`~smaf.cam.CAMConfig` fields for CAMs (``resize_mode``, ``eps``).
        classes: class names file (see :func:`read_class_names`); must fit the model.
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
        Counts (``images``, ``predicted``, ``reused``, ``skipped``), timing, settings.
    """
    if batch_size < 1 or log_every < 1:
        raise ConfigError(f"batch size and log_every must be >= 1, got {batch_size}, {log_every}")
    if not 0.0 < thr < 1.0 or not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"thr must be in (0, 1) and alpha in [0, 1], got {thr}, {alpha}")
    use_threads(threads)
    dev = resolve_device(device)
    pred = load_predictor(model_path, classes)
    cams = pred.kind == "classifier" if cams is None else cams
    if cams != (pred.kind == "classifier"):
        raise SmafError(
            f"{model_path} is a {pred.kind} model: "
            + (
                "CAMs need a classifier (pretrain/model.pt or self_train/model.pt)."
                if cams
                else "a classifier gives CAMs only (drop the request for a DeepLab mask)."
            )
        )
    if crf and cams:
        raise ConfigError("the dense CRF refines DeepLab predictions; drop --crf for CAMs.")
    if crf is True:
        crf = DenseCRF()
    elif crf and not isinstance(crf, DenseCRF):
        crf = dataclass_from(DenseCRF, dict(crf), "crf")
    if scales is not None and (not scales or min(scales) <= 0):
        raise ConfigError(f"scales must be positive numbers, got {list(scales)}")
    flip = cams if flip is None else bool(flip)
    out = Path(out_dir)
    exclude = (out,) if work_dir is None else (out, Path(work_dir))
    files = find_images(images, exclude=exclude)
    if not files:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under {images}.")

    ident = file_identity(model_path)
    settings: dict[str, Any] = {
        "model": {**ident, "path": str(Path(model_path).resolve())},
        "kind": pred.kind,
        "flip": flip,
        "amp": amp,
    }
    if cams:
        fields = {**dict(cam or {}), "flip": flip, **({"scales": tuple(scales)} if scales else {})}
        cam_cfg = dataclass_from(CAMConfig, fields, "cam")
        settings.update(cam=asdict(cam_cfg), thr=float(thr))
    else:
        if scales:
            pred.model.scales = tuple(float(s) for s in scales)
        settings.update(msc_scales=list(pred.model.scales), crf=asdict(crf) if crf else None)
    work = _open_output(out, work_dir, settings, overwrite)
    _write_json(work / MANIFEST, {"settings": settings, "finished": False})
    _write_json(work / "classes.json", classes_document(pred.class_names))
    model = pred.model.to(dev)
    names, num_classes = pred.class_names, pred.num_classes
    log.info(
        "predict: %d images under %s, %s model %s (%d classes) on %s, %s",
        len(files),
        images,
        pred.kind,
        model_path,
        num_classes,
        dev,
        f"CAMs at scales {cam_cfg.scales}, flip {flip}, thr {thr}"
        if cams
        else f"MSC scales {model.scales}, flip {flip}, crf {crf or 'no'}, batch {batch_size}",
    )

    t0 = time.perf_counter()
    progress = Progress("predict", len(files), every=log_every, log=log)
    areas: dict[str, dict[str, Any]] = {}
    skipped: list[str] = []
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp and dev.type == "cuda")

    def record(f: ImageFile, mask: np.ndarray) -> None:
        row = {"image": str(f.rel), "width": mask.shape[1], "height": mask.shape[0]}
        row.update(zip(names, class_fractions(mask, num_classes).tolist(), strict=True))
        areas[str(f.rel)] = row

    def finish(f: ImageFile, image: np.ndarray, mask: np.ndarray) -> None:
        if overlay:
            save_image(work / "overlay" / f.output(".jpg"), overlay_image(image, mask, alpha))
        save_mask(work / "masks" / f.output(".png"), mask)  # last: a mask means done
        record(f, mask)
        progress.update()

    def skip(f: ImageFile, exc: DataError) -> None:
        if strict:
            raise exc
        log.warning("skipping %s: %s", f.rel, exc)
        skipped.append(str(f.rel))
        progress.update(counted=False)

    # Images a previous run finished: their areas (and a missing overlay) from the mask.
    pending = []
    for f in files:
        mask_path = work / "masks" / f.output(".png")
        if not mask_path.is_file():
            pending.append(f)
            continue
        mask = load_mask(mask_path)
        if overlay and not (work / "overlay" / f.output(".jpg")).is_file():
            try:
                image = read_rgb(f.path)
            except DataError as exc:
                skip(f, exc)
                continue
            save_image(work / "overlay" / f.output(".jpg"), overlay_image(image, mask, alpha))
        record(f, mask)
        progress.update(counted=False)
    reused = len(files) - len(pending) - len(skipped)

    def run_batch(batch: list[tuple[ImageFile, np.ndarray]]) -> None:
        groups: dict[tuple[int, ...], list[tuple[ImageFile, np.ndarray]]] = {}
        for item in batch:
            groups.setdefault(item[1].shape, []).append(item)
        for group in groups.values():
            with autocast:
                logits = batch_logits(model, [im for _, im in group], dev, flip)  # [K, h, w] each
            for (f, image), lg in zip(group, logits, strict=True):
                probs = upsampled_probs(lg, image.shape[:2])  # [K, H, W]
                if crf:
                    probs = torch.from_numpy(crf(image, probs.numpy()))  # CRF marginals
                finish(f, image, probs.argmax(0).numpy().astype(np.uint8))

    def run_cams(f: ImageFile, image: np.ndarray) -> None:
        with torch.inference_mode(), autocast:
            x = normalize(image)[None].to(dev)  # [1, 3, H, W]
            present = (model(x)["logits"][0].float() > 0).cpu().numpy().astype(np.float32)
            maps = class_maps(model, image, present, cam_cfg).float().cpu()  # [C, H, W]
        for c in np.flatnonzero(present):
            tag = f"_{_safe_tag(names[c + 1])}"
            save_image(
                work / "cams" / f.output(".png", tag), heat_map(image, maps[c].numpy(), alpha)
            )
        finish(f, image, seed_labels(maps, thr))

    batch: list[tuple[ImageFile, np.ndarray]] = []
    for f, image in _read_ahead(pending, ahead=max(4, 2 * batch_size)):
        if isinstance(image, DataError):
            skip(f, image)
        elif cams:
            run_cams(f, image)
        else:
            batch.append((f, image))
            if len(batch) >= batch_size:
                run_batch(batch)
                batch = []
    if batch:
        run_batch(batch)
    progress.close()
    if not areas:
        raise DataError(f"none of the {len(files)} images under {images} could be read.")

    rows = [areas[str(f.rel)] for f in files if str(f.rel) in areas]
    import pandas as pd  # only here: the loop does not need it

    with atomic_write(work / "areas.csv") as tmp:
        pd.DataFrame(rows, columns=["image", "width", "height", *names]).to_csv(
            tmp, index=False, lineterminator="\n"
        )
    summary = {
        "images": len(files),
        "predicted": progress.counted,
        "reused": reused,
        "skipped": len(skipped),
        "seconds": round(time.perf_counter() - t0, 2),
        "device": str(dev),
    }
    _write_json(
        work / MANIFEST,
        {"settings": settings, "finished": True, **summary, "skipped_images": skipped},
    )
    if work_dir is not None:
        publish(work, out)
    log.info("predict: %s -> %s", json.dumps(summary), out)
    if skipped:
        shown = ", ".join(skipped[:5]) + (
            f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        )
        log.warning(
            "predict: %d image(s) could not be read and have no outputs: %s (listed in %s)",
            len(skipped),
            shown,
            out / MANIFEST,
        )
    return {**summary, "skipped_images": skipped, "settings": settings}

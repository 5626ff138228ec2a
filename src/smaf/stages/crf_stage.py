"""Stage 5: dense-CRF refinement of the CAM seeds, one process per CPU.

Two variants (config ``crf.method``):

- ``labels`` (the released SMAF code, ``gen_pseudo_mask.py: _crf_with_alpha``): the unary comes
  from the hard seed PNG, ``unary_from_labels(gt_prob=0.7)`` over the C+1 labels, then
  Gaussian sxy 3 / compat 3 and bilateral sxy 50 / srgb 5 / compat 10, 10 iterations
  (:func:`smaf.crf.crf_from_labels`). Its ``alpha`` argument is ignored there.
- ``probs`` (PSA ``infer_cls.py`` / EPS ``infer.py: _crf_with_alpha``): the unary comes from
  the soft fused maps of the classes present in the image plus a background score, via
  ``unary_from_softmax`` (``-log`` of the scores), Gaussian sxy 3 / compat 3, bilateral
  sxy 80 / srgb 13 / compat 10 (:func:`smaf.crf.dense_crf`). Background, per pixel
  (:func:`background_score`):

  * ``bg: power`` — PSA/EPS: ``(1 - max_c maps_c) ** bg_power``. PSA's ``infer_cls.py`` runs it
    twice, ``low_alpha`` 4 (confident background) and ``high_alpha`` 32 (confident
    foreground); ``infer_aff.py`` uses 16 to turn the same maps into one label map, which is
    the default here. Foreground wins a pixel (before the pairwise terms) where
    ``max maps > m*`` with ``(1 - m*) ** a = m*``: a = 4 → 0.28, 8 → 0.18, 16 → 0.12, 32 → 0.08.
  * ``bg: constant`` — ``bg_score`` everywhere (EPS ``evaluate_npy.py`` / the seeds' ``thr``:
    the same background as the seeds, softened by the CRF).

  As in PSA, only the present classes (and background) are CRF labels, so absent classes
  can never appear; the CRF label index is mapped back to the class id afterwards.

Output: ``<out_dir>/<id>.png`` palette PNGs with values 0..C, and ``crf.json`` (settings,
counts). :func:`crf_split` is DeepLab's CRF post-processing of its predictions (stage 6). This
module imports only numpy/PIL at load time so spawned workers start fast.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from smaf.config import dataclass_from
from smaf.crf import DenseCRF, crf_from_labels, crf_images_parallel, dense_crf
from smaf.errors import ConfigError, DataError
from smaf.io import atomic_write, load_image, load_mask, save_mask
from smaf.settings import CRFSettings, LabelCRFParams, ProbCRFParams
from smaf.stages.staging import (
    file_identity,
    gather_shards,
    merge_counts,
    open_staging,
    publish,
    select_shard,
)

log = logging.getLogger(__name__)

#: Written into every finished CRF folder.
MANIFEST = "crf.json"


def background_score(
    maps: np.ndarray, mode: str = "power", power: float = 16, score: float = 0.2
) -> np.ndarray:
    """Background score of the ``probs`` CRF: float32 ``[1, H, W]``.

    Args:
        maps: float ``[K, H, W]`` fused maps in [0, 1] of the K present classes (K may be 0).
        mode: ``'power'``: ``(1 - max_k maps_k) ** power`` (PSA ``infer_cls.py``
            ``_crf_with_alpha``; 1 where K = 0); ``'constant'``: ``score`` everywhere.
    """
    h, w = maps.shape[-2:]
    if mode == "constant":
        return np.full((1, h, w), score, dtype=np.float32)
    if mode != "power":
        raise ValueError(f"background mode must be 'power' or 'constant', got {mode!r}")
    peak = maps.max(axis=0, keepdims=True) if maps.shape[0] else np.zeros((1, h, w), np.float32)
    # Clip: float16 storage can put a normalised peak a hair above 1.
    return np.power(np.clip(1.0 - peak, 0.0, 1.0), power).astype(np.float32)


def crf_from_maps(
    image: np.ndarray, classes: np.ndarray, maps: np.ndarray, params: ProbCRFParams
) -> np.ndarray:
    """The ``probs`` variant on one image: uint8 ``[H, W]`` labels 0..C.

    Args:
        image: uint8 ``[H, W, 3]`` RGB.
        classes: int ``[K]`` class ids (1..C) of the stored maps.
        maps: float ``[K, H, W]`` fused maps of those classes, in [0, 1].
    """
    maps = np.asarray(maps, dtype=np.float32)
    bg = background_score(maps, params.bg, params.bg_power, params.bg_score)  # [1, H, W]
    if maps.shape[0] == 0:  # nothing but background to choose from
        return np.zeros(image.shape[:2], dtype=np.uint8)
    scores = np.concatenate([bg, maps], axis=0)  # [K+1, H, W]; CRF label 0 = background
    idx = dense_crf(
        image,
        scores,
        gauss_sxy=params.gauss_sxy,
        gauss_compat=params.gauss_compat,
        bi_sxy=params.bi_sxy,
        bi_srgb=params.bi_srgb,
        bi_compat=params.bi_compat,
        n_iter=params.n_iter,
    )  # [H, W] in 0..K
    lut = np.concatenate([[0], np.asarray(classes, dtype=np.int64)]).astype(np.uint8)
    return lut[idx]


@dataclass(frozen=True)
class _Task:
    """One image's work, picklable for the process pool."""

    image_id: str
    image: str  # JPEG path
    seeds: str  # seed PNG path
    maps: str  # fused maps npz path (used by 'probs')
    out: str  # output PNG path


def _refine_one(
    task: _Task, method: str, params: LabelCRFParams | ProbCRFParams, num_classes: int
) -> tuple[int, int] | None:
    """Refine one image and write its PNG; return (changed, total) pixels, None if skipped."""
    if os.path.isfile(task.out):
        return None  # done by an earlier, interrupted run
    image = load_image(task.image)  # [H, W, 3]
    seeds = load_mask(task.seeds)  # [H, W] 0..C
    if seeds.shape != image.shape[:2]:
        raise DataError(
            f"seeds {task.seeds} are {seeds.shape} but image {task.image} is {image.shape[:2]}; "
            "the seeds belong to another dataset. Rerun the seeds rule."
        )
    if method == "labels":
        if seeds.max(initial=0) > num_classes:
            raise DataError(
                f"seeds {task.seeds} hold values up to {seeds.max()} > C = {num_classes}."
            )
        p = asdict(params)
        out = crf_from_labels(image, seeds, num_classes + 1, **p)  # [H, W] 0..C
    else:
        try:
            with np.load(task.maps, allow_pickle=False) as z:
                classes = z["classes"].astype(np.int64)  # [K] in 1..C
                maps = z["maps"].astype(np.float32)  # [K, H, W]
        except FileNotFoundError:
            raise DataError(
                f"fused maps missing: {task.maps}. crf.method 'probs' needs the seeds rule's "
                "maps/<id>.npz; rerun the seeds rule."
            ) from None
        if maps.shape[1:] != image.shape[:2]:
            raise DataError(f"maps {task.maps} are {maps.shape[1:]}, image {image.shape[:2]}.")
        out = crf_from_maps(image, classes, maps, params)
    save_mask(task.out, out)
    return int(np.count_nonzero(out != seeds)), int(out.size)


def _seeds_identity(seeds_dir: Path) -> str:
    """Fingerprint of a seeds folder: its manifest (new run id each run), else its listing."""
    manifest = seeds_dir / "seeds.json"
    if manifest.is_file():
        return hashlib.sha256(manifest.read_bytes()).hexdigest()
    st = seeds_dir.stat()
    return f"{st.st_ino}:{st.st_mtime_ns}"


def refine_seeds(
    index: Any,
    role: str | Sequence[str],
    seeds_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    settings: CRFSettings | Mapping[str, Any] | None = None,
    processes: int = 1,
    *,
    work_dir: str | os.PathLike[str] | None = None,
    log_every: int = 50,
    shard: str | tuple[int, int] | None = None,
) -> dict[str, Any]:
    """CRF-refine the seeds of every image of split(s) ``role``; write ``out_dir/<id>.png``.

    Args:
        index: the dataset index (:class:`~smaf.data.index.DatasetIndex`) or its path: the
            images and C (the CRF of ``labels`` has C+1 labels).
        role: the split, or several (each image once).
        seeds_dir: output of :func:`smaf.stages.seeds.make_seeds` (``<id>.png``,
            ``maps/<id>.npz``).
        out_dir: output folder.
        settings: the run's ``crf`` settings (:class:`~smaf.settings.CRFSettings`, or their
            dict): ``method``, ``'labels'`` (released SMAF) or ``'probs'`` (PSA / EPS), see the
            module doc, and its parameters; ``None``: the defaults (released SMAF).
        processes: worker processes (the rule's ``threads``); results do not depend on it.
        work_dir: staging folder published onto ``out_dir`` at the end (resumable under
            Snakemake, see :mod:`smaf.stages.staging`); ``None`` writes into ``out_dir``.
        log_every: progress line every this many images.
        shard: only shard ``k`` of ``n`` (``"3of8"``), left in ``work_dir`` for
            :func:`gather_crf`; the results do not depend on the sharding.

    Returns:
        ``images``, ``computed``, ``seconds``, ``images_per_s``, ``changed_fraction`` (share of
        pixels whose label the CRF changed, over the computed images).
    """
    # pandas: imported here, not by the spawned workers that import this module.
    from smaf.data.index import read_index

    index = read_index(index)
    num_classes = index.num_classes
    crf = CRFSettings() if settings is None else CRFSettings.of(settings)
    method, p = crf.method, crf.chosen
    if processes < 1:
        raise ConfigError(f"processes must be >= 1, got {processes}")
    seeds_dir = Path(seeds_dir)
    if not seeds_dir.is_dir():
        raise DataError(f"seeds folder not found: {seeds_dir}. Run the seeds rule first.")
    ids = select_shard(index.ids(role, allow_empty=shard is not None), shard, work_dir)
    missing = [i for i in ids if not (seeds_dir / f"{i}.png").is_file()]
    if missing:
        raise DataError(
            f"{len(missing)} of {len(ids)} seed PNGs are missing from {seeds_dir} (first: "
            f"{missing[0]}.png); rerun the seeds rule for this split."
        )
    recorded = {"method": method, "params": asdict(p), "num_classes": num_classes}
    fingerprint = {
        **recorded,
        "seeds": _seeds_identity(seeds_dir),
        "index": index.fingerprint(ids),
        "shard": str(shard),
    }
    work = open_staging(out_dir, work_dir, fingerprint)
    tasks = [
        _Task(
            image_id=i,
            image=str(index.image_path(i)),
            seeds=str(seeds_dir / f"{i}.png"),
            maps=str(seeds_dir / "maps" / f"{i}.npz"),
            out=str(work / f"{i}.png"),
        )
        for i in ids
    ]
    log.info("crf: %d images, method %s %s, %d process(es)", len(ids), method, asdict(p), processes)
    fn = functools.partial(_refine_one, method=method, params=p, num_classes=num_classes)
    t0 = time.perf_counter()
    results = crf_images_parallel(fn, tasks, processes, log.info, log_every=log_every)
    elapsed = time.perf_counter() - t0
    done = [r for r in results if r is not None]
    changed = sum(r[0] for r in done)
    total = sum(r[1] for r in done)
    stats = {
        "images": len(ids),
        "computed": len(done),
        "seconds": round(elapsed, 3),
        "images_per_s": len(done) / elapsed if done and elapsed > 0 else None,
        "changed_fraction": changed / total if total else None,
    }
    manifest = {
        **recorded,
        "seeds_dir": str(seeds_dir),
        **stats,
        "changed": changed,
        "pixels": total,
    }
    with atomic_write(work / MANIFEST) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2))
    if shard is None:
        publish(work, out_dir)
    log.info(
        "crf: done, %d images (%d computed, %.1f s), CRF changed %s of the seed pixels -> %s",
        len(ids),
        len(done),
        elapsed,
        f"{stats['changed_fraction']:.1%}" if total else "none",
        out_dir,
    )
    return stats


def gather_crf(work_dirs: Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str]):
    """Publish the shards of a CRF run (:func:`refine_seeds` with ``shard``) as one folder."""

    def merge(manifests: list[dict[str, Any]]) -> dict[str, Any]:
        merged = merge_counts(manifests)
        merged["changed"] = sum(m["changed"] for m in manifests)
        merged["pixels"] = sum(m["pixels"] for m in manifests)
        merged["changed_fraction"] = (
            merged["changed"] / merged["pixels"] if merged["pixels"] else None
        )
        return merged

    return gather_shards(work_dirs, {"": out_dir}, MANIFEST, merge)


# ------------------------------------------------- DeepLab's CRF post-processing (stage 6)
def upsampled_probs(logits: Any, size: Sequence[int]) -> Any:
    """Softmax of logits ``[K, h, w]`` (tensor or array) bilinearly upsampled to ``size`` →
    torch float32 ``[K, H, W]``."""
    import torch  # here, not at module load: the seed-CRF workers never need it
    import torch.nn.functional as F

    lg = torch.as_tensor(logits, dtype=torch.float32)[None]
    lg = F.interpolate(lg, size=tuple(size), mode="bilinear", align_corners=False)
    return torch.softmax(lg[0], dim=0)


@dataclass(frozen=True)
class _CRFTask:
    """One image of :func:`crf_split`, picklable for the process pool."""

    image: str  # JPEG path
    logits: str  # .npy of [K, h, w] logits
    out: str  # output PNG


def _crf_one(task: _CRFTask, crf: DenseCRF) -> bool:
    """CRF-refine one image's upsampled softmax and write its PNG; False if already done."""
    if os.path.isfile(task.out):
        return False
    import torch

    torch.set_num_threads(1)  # one image per process: more threads would oversubscribe
    image = load_image(task.image)  # [H, W, 3] raw RGB, as DeepLab's CRF wants
    try:
        logits = np.load(task.logits, allow_pickle=False)  # [K, h, w]
    except FileNotFoundError:
        raise DataError(f"logits missing: {task.logits}. Rerun the deeplab_predict rule.") from None
    probs = upsampled_probs(logits, image.shape[:2]).numpy()  # [K, H, W]
    refined = crf(image, probs)  # [K, H, W] marginals
    save_mask(task.out, refined.argmax(0).astype(np.uint8))
    return True


def crf_split(
    index: Any,
    role: str,
    logits_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    crf: DenseCRF | Mapping[str, Any] | None = None,
    processes: int = 1,
    work_dir: str | os.PathLike[str] | None = None,
    log_every: int = 50,
    shard: str | tuple[int, int] | None = None,
) -> dict[str, Any]:
    """DeepLab's dense-CRF post-processing of :func:`predict_split`'s logits.

    Per image: logits ``[K, h, w]`` → bilinear upsampling to the image → softmax →
    :class:`~smaf.crf.DenseCRF` with the raw image → argmax → ``out_dir/<id>.png`` (0..C).

    Args:
        crf: :class:`~smaf.crf.DenseCRF` or its fields (``pos_w``, ``pos_xy_std``, ``bi_w``,
            ``bi_xy_std``, ``bi_rgb_std``, ``n_iter``); ``None`` = DeepLab's VOC values.
        processes: worker processes (the rule's threads).
        work_dir: staging folder for resuming (see :mod:`smaf.stages.staging`).
        shard: only shard ``k`` of ``n`` (``"3of8"``), left in ``work_dir`` for
            :func:`gather_deeplab_crf`.
    """
    from smaf.data.index import read_index  # pandas: not imported by the spawned workers

    if not isinstance(crf, DenseCRF):
        crf = dataclass_from(DenseCRF, crf, "deeplab.test.crf")
    index = read_index(index)
    ids = select_shard(
        index.ids(role, allow_empty=True), shard, work_dir
    )  # a user's data may have no test
    logits_dir = Path(logits_dir)
    fingerprint = {
        "crf": asdict(crf),
        "logits": file_identity(logits_dir),
        "index": index.fingerprint(ids),
        "shard": str(shard),
    }
    work = open_staging(out_dir, work_dir, fingerprint)
    tasks = [
        _CRFTask(str(index.image_path(i)), str(logits_dir / f"{i}.npy"), str(work / f"{i}.png"))
        for i in ids
    ]
    t0 = time.perf_counter()
    fn = _CRFWorker(crf)
    results = crf_images_parallel(fn, tasks, max(1, int(processes)), log, log_every=log_every)
    summary = {
        "images": len(ids),
        "refined": int(sum(results)),
        "seconds": round(time.perf_counter() - t0, 2),
        "crf": asdict(crf),
    }
    if shard is not None:
        with atomic_write(work / DEEPLAB_CRF_MANIFEST) as tmp:
            tmp.write_text(json.dumps(summary, indent=2))
    elif work_dir is not None:
        publish(work, out_dir)
    log.info("crf: %s", json.dumps(summary))
    return summary


#: Written by a shard of :func:`crf_split` (its end), merged by :func:`gather_deeplab_crf`.
DEEPLAB_CRF_MANIFEST = "deeplab_crf.json"


def gather_deeplab_crf(
    work_dirs: Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str]
):
    """Publish the shards of DeepLab's CRF (:func:`crf_split` with ``shard``) as one folder."""
    return gather_shards(work_dirs, {"": out_dir}, DEEPLAB_CRF_MANIFEST, merge_counts)


@dataclass(frozen=True)
class _CRFWorker:
    """``_crf_one`` bound to its CRF settings; a picklable callable for spawned workers."""

    crf: DenseCRF

    def __call__(self, task: _CRFTask) -> bool:
        return _crf_one(task, self.crf)


# ------------------------------------------------------------------------------ submission

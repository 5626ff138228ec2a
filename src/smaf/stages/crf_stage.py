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

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from smaf.config import dataclass_from
from smaf.crf import DenseCRF, crf_from_labels, dense_crf
from smaf.errors import ConfigError, DataError
from smaf.io import load_image, load_mask, save_mask
from smaf.perimage import PerImageRun, run_per_image
from smaf.settings import CRFSettings, LabelCRFParams, ProbCRFParams
from smaf.stages.gathers import SEEDS_MANIFEST
from smaf.staging import (
    file_identity,
    folder_identity,
    gather_shards,
    merge_counts,
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
class _Refine:
    """One image's refinement (:func:`refine_seeds`), picklable for the process pool."""

    method: str
    params: LabelCRFParams | ProbCRFParams
    num_classes: int
    images: Mapping[str, str]  # image id -> JPEG path
    seeds_dir: str  # <id>.png seeds, maps/<id>.npz fused maps (used by 'probs')

    def __call__(self, image_id: str, root: Path) -> tuple[int, int]:
        """Refine one image and write its PNG into ``root``; return (changed, total) pixels."""
        image_path = self.images[image_id]
        seeds_path = os.path.join(self.seeds_dir, f"{image_id}.png")
        maps_path = os.path.join(self.seeds_dir, "maps", f"{image_id}.npz")
        image = load_image(image_path)  # [H, W, 3]
        seeds = load_mask(seeds_path)  # [H, W] 0..C
        if seeds.shape != image.shape[:2]:
            raise DataError(
                f"seeds {seeds_path} are {seeds.shape} but image {image_path} is "
                f"{image.shape[:2]}; the seeds belong to another dataset. Rerun the seeds rule."
            )
        if self.method == "labels":
            if seeds.max(initial=0) > self.num_classes:
                raise DataError(
                    f"seeds {seeds_path} hold values up to {seeds.max()} > C = {self.num_classes}."
                )
            p = asdict(self.params)
            out = crf_from_labels(image, seeds, self.num_classes + 1, **p)  # [H, W] 0..C
        else:
            try:
                with np.load(maps_path, allow_pickle=False) as z:
                    classes = z["classes"].astype(np.int64)  # [K] in 1..C
                    maps = z["maps"].astype(np.float32)  # [K, H, W]
            except FileNotFoundError:
                raise DataError(
                    f"fused maps missing: {maps_path}. crf.method 'probs' needs the seeds rule's "
                    "maps/<id>.npz; rerun the seeds rule."
                ) from None
            if maps.shape[1:] != image.shape[:2]:
                raise DataError(f"maps {maps_path} are {maps.shape[1:]}, image {image.shape[:2]}.")
            out = crf_from_maps(image, classes, maps, self.params)
        save_mask(root / f"{image_id}.png", out)
        return int(np.count_nonzero(out != seeds)), int(out.size)


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
            Snakemake, see :mod:`smaf.perimage`); ``None`` writes into ``out_dir``.
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
        "seeds": folder_identity(seeds_dir, SEEDS_MANIFEST),
        "shard": str(shard),
    }
    log.info("crf: %d images, method %s %s, %d process(es)", len(ids), method, asdict(p), processes)
    fn = _Refine(method, p, num_classes, {i: str(index.image_path(i)) for i in ids}, str(seeds_dir))

    def report(run: PerImageRun) -> dict[str, Any]:
        changed = sum(r[0] for r in run.results)
        total = sum(r[1] for r in run.results)
        stats.update(run.counts(), changed_fraction=changed / total if total else None)
        return {
            **recorded,
            "seeds_dir": str(seeds_dir),
            **stats,
            "changed": changed,
            "pixels": total,
        }

    stats: dict[str, Any] = {}
    run = run_per_image(
        ids,
        fn,
        out=out_dir,
        work_dir=work_dir,
        fingerprint=fingerprint,
        identity=index.row_identity,
        outputs=["{id}.png"],
        shard=shard,
        processes=processes,
        manifest=MANIFEST,
        report=report,
        name="crf",
        log_every=log_every,
    )
    log.info(
        "crf: done, %d images (%d computed, %.1f s), CRF changed %s of the seed pixels -> %s",
        len(ids),
        run.computed,
        run.seconds,
        f"{stats['changed_fraction']:.1%}" if stats["changed_fraction"] is not None else "none",
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
@dataclass(frozen=True)
class _CRFWorker:
    """One image of :func:`crf_split`, picklable for the process pool."""

    crf: DenseCRF
    images: Mapping[str, str]  # image id -> JPEG path
    logits_dir: str  # <id>.npy of [K, h, w] logits

    def __call__(self, image_id: str, root: Path) -> bool:
        """CRF-refine one image's upsampled softmax and write its PNG into ``root``."""
        import torch  # here, not at module load: the seed-CRF workers never need it

        from smaf.inference import upsampled_probs

        torch.set_num_threads(1)  # one image per process: more threads would oversubscribe
        image = load_image(self.images[image_id])  # [H, W, 3] raw RGB, as DeepLab's CRF wants
        path = os.path.join(self.logits_dir, f"{image_id}.npy")
        try:
            logits = np.load(path, allow_pickle=False)  # [K, h, w]
        except FileNotFoundError:
            raise DataError(f"logits missing: {path}. Rerun the deeplab_predict rule.") from None
        probs = upsampled_probs(logits, image.shape[:2]).numpy()  # [K, H, W]
        refined = self.crf(image, probs)  # [K, H, W] marginals
        save_mask(root / f"{image_id}.png", refined.argmax(0).astype(np.uint8))
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
        work_dir: staging folder for resuming (see :mod:`smaf.perimage`).
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
    fingerprint = {"crf": asdict(crf), "logits": file_identity(logits_dir), "shard": str(shard)}
    fn = _CRFWorker(crf, {i: str(index.image_path(i)) for i in ids}, str(logits_dir))

    def report(run: PerImageRun) -> dict[str, Any]:
        return {**run.counts(), "refined": run.computed, "crf": asdict(crf)}

    run = run_per_image(
        ids,
        fn,
        out=out_dir,
        work_dir=work_dir,
        fingerprint=fingerprint,
        identity=index.row_identity,
        outputs=["{id}.png"],
        shard=shard,
        processes=max(1, int(processes)),
        manifest=DEEPLAB_CRF_MANIFEST,
        report=report,
        name="crf",
        log_every=log_every,
    )
    summary = report(run)
    log.info("crf: %s", json.dumps(summary))
    return summary


#: Written by a shard of :func:`crf_split` (its end), merged by :func:`gather_deeplab_crf`.
DEEPLAB_CRF_MANIFEST = "deeplab_crf.json"


def gather_deeplab_crf(
    work_dirs: Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str]
):
    """Publish the shards of DeepLab's CRF (:func:`crf_split` with ``shard``) as one folder."""
    return gather_shards(work_dirs, {"": out_dir}, DEEPLAB_CRF_MANIFEST, merge_counts)


# ------------------------------------------------------------------------------ submission

"""Dense CRF refinement (pydensecrf): the three variants used around SMAF, plus a process pool.

- :func:`crf_from_labels`: the released SMAF seed refinement (``gen_pseudo_mask.py``): unary
  from a hard label map (``unary_from_labels``, gt_prob 0.7, label 0 is a real class),
  Gaussian sxy 3 / compat 3, bilateral sxy 50 / srgb 5 / compat 10, 10 iterations.
- :func:`dense_crf`: the PSA / EPS variant (``util/imutils.py: crf_inference``): unary from
  soft scores (``unary_from_softmax``), Gaussian sxy 3 / compat 3, bilateral sxy 80 /
  srgb 13 / compat 10, 10 iterations.
- :class:`DenseCRF`: DeepLab post-processing (deeplab-pytorch ``libs/utils/crf.py``) on the
  segmentation net's softmax: pos_w 3, pos_xy_std 1, bi_w 4, bi_xy_std 67, bi_rgb_std 3,
  10 iterations, with the raw (not mean-subtracted) uint8 image.

All defaults equal those settings. Images are uint8 ``[H, W, 3]`` RGB; label maps ``[H, W]``
integers; score maps ``[C, H, W]`` floats. pydensecrf (installed as ``pydensecrf2``) needs
writable, C-contiguous buffers, so every array is copied into that form before the call.

This module imports only numpy at load time (pydensecrf is imported on first use), so worker
processes of :func:`crf_images_parallel` start quickly.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from smaf.progress import Progress
from smaf.settings import DenseCRFConfig, LabelCRFParams, ProbCRFParams

__all__ = ["DenseCRF", "crf_from_labels", "crf_images_parallel", "dense_crf"]

T = TypeVar("T")
R = TypeVar("R")
_LABELS, _PROBS = LabelCRFParams(), ProbCRFParams()


def _check_image(image: np.ndarray) -> np.ndarray:
    """Validate a uint8 ``[H, W, 3]`` image; return a writable C-contiguous copy if needed."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"image must be uint8 [H, W, 3] RGB (raw pixels, not normalised), got "
            f"{image.dtype} {image.shape}"
        )
    # 'W' copies read-only arrays (e.g. np.asarray(PIL.Image)), which pydensecrf rejects.
    return np.require(image, dtype=np.uint8, requirements=["C", "W", "A"])


def _finish(q: np.ndarray, n_labels: int, h: int, w: int, return_probs: bool) -> np.ndarray:
    probs = np.asarray(q, dtype=np.float32).reshape(n_labels, h, w)  # [C, H, W] marginals
    if return_probs:
        return probs
    out_dtype = np.uint8 if n_labels <= 256 else np.int64
    return probs.argmax(axis=0).astype(out_dtype)  # [H, W]


def _inference(
    image: np.ndarray,
    unary: np.ndarray,
    n_labels: int,
    *,
    gauss_sxy: float,
    gauss_compat: float,
    bi_sxy: float,
    bi_srgb: float,
    bi_compat: float,
    n_iter: int,
) -> np.ndarray:
    """Run mean-field inference; return the ``[n_labels, H*W]`` marginals as float32."""
    import pydensecrf.densecrf as dcrf

    if n_iter < 1:
        raise ValueError(f"n_iter must be >= 1, got {n_iter}")
    h, w = image.shape[:2]
    d = dcrf.DenseCRF2D(w, h, n_labels)
    d.setUnaryEnergy(np.require(unary, dtype=np.float32, requirements=["C", "W", "A"]))
    # Same call order and kernel defaults (DIAG_KERNEL, NORMALIZE_SYMMETRIC) as the references.
    d.addPairwiseGaussian(sxy=gauss_sxy, compat=gauss_compat)
    d.addPairwiseBilateral(sxy=bi_sxy, srgb=bi_srgb, rgbim=image, compat=bi_compat)
    return np.asarray(d.inference(n_iter), dtype=np.float32)


def crf_from_labels(
    image: np.ndarray,
    labels: np.ndarray,
    num_labels: int,
    *,
    # Defaults: smaf.settings.LabelCRFParams (the config's crf.labels), written there only.
    gt_prob: float = _LABELS.gt_prob,
    gauss_sxy: float = _LABELS.gauss_sxy,
    gauss_compat: float = _LABELS.gauss_compat,
    bi_sxy: float = _LABELS.bi_sxy,
    bi_srgb: float = _LABELS.bi_srgb,
    bi_compat: float = _LABELS.bi_compat,
    n_iter: int = _LABELS.n_iter,
    zero_unsure: bool = False,
    return_probs: bool = False,
) -> np.ndarray:
    """Refine a hard label map with a dense CRF (the released SMAF variant).

    The unary puts probability ``gt_prob`` on each pixel's label and spreads the rest evenly
    over the other ``num_labels - 1`` labels (pydensecrf ``unary_from_labels``).

    Args:
        image: uint8 ``[H, W, 3]`` RGB image.
        labels: integer ``[H, W]`` label map, values in ``0..num_labels-1`` (with
            ``zero_unsure``: ``0`` = unknown and ``1..num_labels`` map to CRF labels
            ``0..num_labels-1``; the result is then in that shifted range).
        num_labels: number of CRF labels (21 for VOC: background + 20 classes).
        gt_prob: confidence of the given label, in (0, 1).
        gauss_sxy, gauss_compat: Gaussian (smoothness) kernel width in pixels and weight.
        bi_sxy, bi_srgb, bi_compat: bilateral (appearance) kernel widths in pixels and RGB
            levels, and weight.
        n_iter: mean-field iterations.
        zero_unsure: treat label 0 as "unknown" (uniform unary). The released code: False.
        return_probs: return the marginals instead of their argmax.

    Returns:
        ``[H, W]`` labels (uint8 when ``num_labels <= 256``, else int64), or float32
        ``[num_labels, H, W]`` marginals summing to 1 per pixel when ``return_probs``.
    """
    from pydensecrf.utils import unary_from_labels

    image = _check_image(image)
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.shape != image.shape[:2]:
        raise ValueError(
            f"labels must be [H, W] = {image.shape[:2]} like the image, got {labels.shape}"
        )
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == np.bool_):
        raise ValueError(f"labels must be an integer array, got {labels.dtype}")
    if num_labels < 2:
        raise ValueError(f"num_labels must be >= 2, got {num_labels}")
    if not 0.0 < gt_prob < 1.0:
        raise ValueError(f"gt_prob must be in (0, 1), got {gt_prob}")
    hi = num_labels if zero_unsure else num_labels - 1
    if labels.size and (labels.min() < 0 or labels.max() > hi):
        raise ValueError(
            f"label values must be in 0..{hi} for num_labels={num_labels} "
            f"(zero_unsure={zero_unsure}), got {labels.min()}..{labels.max()}; map the ignore "
            "value 255 to a real label first"
        )
    # int64 so that zero_unsure's `labels - 1` cannot wrap around on uint8 input.
    unary = unary_from_labels(
        labels.astype(np.int64), num_labels, gt_prob=gt_prob, zero_unsure=zero_unsure
    )  # [num_labels, H*W]
    q = _inference(
        image,
        unary,
        num_labels,
        gauss_sxy=gauss_sxy,
        gauss_compat=gauss_compat,
        bi_sxy=bi_sxy,
        bi_srgb=bi_srgb,
        bi_compat=bi_compat,
        n_iter=n_iter,
    )
    return _finish(q, num_labels, image.shape[0], image.shape[1], return_probs)


def dense_crf(
    image: np.ndarray,
    probs: np.ndarray,
    *,
    # Defaults: smaf.settings.ProbCRFParams (the config's crf.probs), written there only.
    gauss_sxy: float = _PROBS.gauss_sxy,
    gauss_compat: float = _PROBS.gauss_compat,
    bi_sxy: float = _PROBS.bi_sxy,
    bi_srgb: float = _PROBS.bi_srgb,
    bi_compat: float = _PROBS.bi_compat,
    n_iter: int = _PROBS.n_iter,
    return_probs: bool = False,
) -> np.ndarray:
    """Refine soft class scores with a dense CRF (the PSA / EPS variant).

    The unary is ``-log(clip(probs, 1e-5, 1))`` (pydensecrf ``unary_from_softmax``). ``probs``
    need not sum to 1 per pixel (PSA feeds background-augmented CAM scores).

    Args:
        image: uint8 ``[H, W, 3]`` RGB image.
        probs: float ``[C, H, W]`` non-negative scores / probabilities.
        gauss_sxy, gauss_compat, bi_sxy, bi_srgb, bi_compat, n_iter: as in
            :func:`crf_from_labels`, defaults from PSA / EPS ``crf_inference``.
        return_probs: return the marginals instead of their argmax.

    Returns:
        ``[H, W]`` labels (uint8 when ``C <= 256``, else int64), or float32 ``[C, H, W]``
        marginals summing to 1 per pixel when ``return_probs``.
    """
    from pydensecrf.utils import unary_from_softmax

    image = _check_image(image)
    probs = np.asarray(probs)
    if probs.ndim != 3 or probs.shape[1:] != image.shape[:2]:
        raise ValueError(
            f"probs must be [C, H, W] with (H, W) = {image.shape[:2]} like the image, "
            f"got {probs.shape}"
        )
    if not np.issubdtype(probs.dtype, np.floating):
        raise ValueError(f"probs must be a float array, got {probs.dtype}")
    if probs.shape[0] < 2:
        raise ValueError(f"probs needs at least 2 channels, got {probs.shape[0]}")
    unary = unary_from_softmax(np.ascontiguousarray(probs))  # [C, H*W] float32
    q = _inference(
        image,
        unary,
        probs.shape[0],
        gauss_sxy=gauss_sxy,
        gauss_compat=gauss_compat,
        bi_sxy=bi_sxy,
        bi_srgb=bi_srgb,
        bi_compat=bi_compat,
        n_iter=n_iter,
    )
    return _finish(q, probs.shape[0], image.shape[0], image.shape[1], return_probs)


@dataclass(frozen=True)
class DenseCRF(DenseCRFConfig):
    """DeepLab CRF post-processor: ``DenseCRF()(image, probs) -> [C, H, W]`` marginals.

    Its settings and their defaults (deeplab-pytorch's VOC values, the DeepLab-v2 paper's) are
    :class:`smaf.settings.DenseCRFConfig`'s. Frozen and picklable, so an instance can be
    handed to :func:`crf_images_parallel` workers.
    """

    def __call__(self, image: np.ndarray, probs: np.ndarray) -> np.ndarray:
        """Refine softmax ``probs`` ``[C, H, W]`` with the raw uint8 ``image`` ``[H, W, 3]``.

        Returns float32 ``[C, H, W]`` marginals (take ``argmax(0)`` for labels).
        """
        return dense_crf(
            image,
            probs,
            gauss_sxy=self.pos_xy_std,
            gauss_compat=self.pos_w,
            bi_sxy=self.bi_xy_std,
            bi_srgb=self.bi_rgb_std,
            bi_compat=self.bi_w,
            n_iter=self.n_iter,
            return_probs=True,
        )


def crf_images_parallel(
    fn: Callable[[T], R],
    items: Iterable[T],
    processes: int,
    log: logging.Logger | Callable[[str], object] | None = None,
    *,
    chunksize: int | None = None,
    log_every: int = 100,
    start_method: str = "spawn",
) -> list[R]:
    """Apply ``fn`` to every item, in a process pool; return the results in input order.

    ``processes=1`` (or a single item) runs in this process, with no pool. Otherwise a
    ``multiprocessing`` pool of ``min(processes, len(items))`` workers consumes the items with
    ``imap`` in chunks. The default ``spawn`` start method is safe in a parent that has
    loaded torch / CUDA or runs threads (fork there can deadlock or break CUDA); it requires
    ``fn`` and the items to be picklable, i.e. ``fn`` a module-level function (or a
    ``functools.partial`` of one, or a picklable callable such as :class:`DenseCRF`) defined in
    an importable module, and the calling script guarded by ``if __name__ == "__main__"``
    when run directly.

    Results are held in memory: for a whole dataset let ``fn`` load its inputs from the item
    (an image id) and write its output itself, returning something small.

    Args:
        fn: per-item function (e.g. load image + seeds, run :func:`crf_from_labels`, save).
        items: the work items, e.g. image ids.
        processes: number of worker processes, >= 1 (the rule's ``threads``).
        log: a logger (``.info`` is used) or a callable taking one line; ``None`` = silent.
            A progress line (done/total, images/s) every ``log_every`` items and at the end.
        chunksize: items per task sent to a worker; default ``clip(n // (4 * processes), 1, 16)``.
        log_every: progress interval in items.
        start_method: ``"spawn"``, ``"forkserver"`` or ``"fork"``.

    Returns:
        ``[fn(item) for item in items]``. An exception in a worker is re-raised here.
    """
    if processes < 1:
        raise ValueError(f"processes must be >= 1, got {processes}")
    if log_every < 1:
        raise ValueError(f"log_every must be >= 1, got {log_every}")
    items = list(items)
    n = len(items)
    sink = log if log is not None else (lambda line: None)
    progress = Progress("crf", n, every=log_every, log=sink)
    results: list[R] = []
    workers = min(processes, n)
    if workers <= 1:
        for item in items:
            results.append(fn(item))
            progress.update()
    else:
        if chunksize is None:
            chunksize = int(np.clip(n // (4 * workers), 1, 16))
        ctx = multiprocessing.get_context(start_method)
        with ctx.Pool(workers) as pool:
            for r in pool.imap(fn, items, chunksize=chunksize):
                results.append(r)
                progress.update()
            pool.close()
            pool.join()
    progress.close()
    return results

"""SAM refinement of seeds: the SEPL assignment rule (Chen et al. 2023, "Segment Anything Model
(SAM) Enhanced Pseudo Labels for Weakly Supervised Semantic Segmentation", cskyl/SAM_WSSS).

SAM is class-agnostic; the seeds name its masks. **Rule** (SEPL's ``MaxIoU``): a SAM mask
*joins* foreground class c when more than half of it lies in c's seed,
``|m ∩ seed_c| > |m| / 2``, with ``|m|`` counting every pixel of the mask (background and
ignored seed pixels too). A strict majority belongs to one class at most, so a mask joins at
most one class. Background does not vote: it is what no joined mask covers.

What SEPL's code leaves to loop order, settled here:

* **Overlaps.** Masks of different classes can overlap (SAM returns whole objects and their
  parts). SEPL paints classes in index order, so the higher class index wins. Here **the smaller
  mask wins** (ties: higher ``predicted_iou``, then lower mask index): its majority was taken
  over pixels closer to the contested ones, and a part nested in a whole is the more specific
  statement (SAM's own demo draws masks largest first for the same reason). Joined masks are
  painted from largest to smallest.
* **Pixels covered by SAM masks none of which joined a class** become background, as in every
  SEPL variant (the mask says "one region", the seed says "mostly not an object").
* **Pixels no SAM mask covers** (``unclaimed``): ``"background"`` (0) is the paper's rule
  (``MaxIoU``); ``"seed"`` keeps the seed's label there, SEPL's released default
  (``max_iou_imp2``, "trust CAM if SAM has no prediction on that pixel"); ``"ignore"`` makes
  them 255 so that training skips them. Default ``"seed"``: SAM's grid with its quality
  thresholds leaves thin and small structures uncovered, and there the seed is the only
  evidence; the paper's rule would erase those objects.
* ``seed_cover`` (default off, as in the paper): SEPL's ``max_iou_imp2`` also lets a mask join
  a class whose seed it covers to ``seed_cover`` (0.85) or more. Such a mask can qualify for
  two classes; it joins the one with the most pixels in it (SEPL: the lowest class index).

SEPL's loop also lets a class j > i keep seed-j pixels inside a mask class i took (its
"uncovered" test skips masks already taken); here a taken pixel is the taking class's.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from smaf.errors import DataError
from smaf.sam.masks import SamMasks
from smaf.sam_settings import UNCLAIMED, SamRefineSettings

__all__ = ["UNCLAIMED", "SamRefineSettings", "assign_masks", "refine_with_masks", "sam_refine"]

MaskSource = SamMasks | np.ndarray | Iterable[np.ndarray]


def _iter_masks(masks: MaskSource) -> Iterable[np.ndarray]:
    if isinstance(masks, np.ndarray):
        return (m for m in masks.astype(bool, copy=False))
    return (np.asarray(m, dtype=bool) for m in masks)


def _mask_list(masks: MaskSource) -> SamMasks | list[np.ndarray] | np.ndarray:
    """Something indexable twice: SamMasks (decodes on demand), an array, or a list."""
    if isinstance(masks, (SamMasks, np.ndarray)):
        return masks
    return list(masks)


def _get(masks: SamMasks | list[np.ndarray] | np.ndarray, i: int) -> np.ndarray:
    return masks.mask(i) if isinstance(masks, SamMasks) else np.asarray(masks[i], dtype=bool)


def assign_masks(
    seeds: np.ndarray, masks: MaskSource, settings: SamRefineSettings | None = None
) -> np.ndarray:
    """The class each mask joins (``[K]`` int64; -1: none) under SEPL's majority rule."""
    s = settings or SamRefineSettings()
    seeds = np.asarray(seeds)
    n_labels = max(int(seeds.max(initial=0)), s.background, s.ignore) + 1
    seed_total = np.bincount(seeds.ravel(), minlength=n_labels)  # [L] pixels per seed label
    not_class = np.zeros(n_labels, dtype=bool)
    not_class[[s.background, s.ignore]] = True
    joined = []
    for m in _iter_masks(masks):
        if m.shape != seeds.shape:
            raise ValueError(f"mask of shape {m.shape} for seeds of shape {seeds.shape}")
        inside = np.bincount(seeds[m], minlength=n_labels)  # [L] mask pixels per seed label
        inside[not_class] = 0
        area = int(m.sum())
        best = int(inside.argmax())
        if area and 2 * int(inside[best]) > area:
            joined.append(best)
            continue
        if s.seed_cover is not None and area:
            covers = (seed_total > 0) & (inside >= s.seed_cover * seed_total) & ~not_class
            if covers.any():
                joined.append(int(np.where(covers, inside, -1).argmax()))
                continue
        joined.append(-1)
    return np.asarray(joined, dtype=np.int64)


def refine_with_masks(
    seeds: np.ndarray,
    masks: MaskSource,
    settings: SamRefineSettings | None = None,
    scores: np.ndarray | None = None,
) -> np.ndarray:
    """SAM-refined labels ``[H, W]`` (seeds' dtype) from seeds ``[H, W]`` and K masks.

    ``masks``: :class:`SamMasks`, a ``[K, H, W]`` bool array or a list of ``[H, W]`` masks;
    ``scores`` (``[K]``, default SamMasks' predicted_iou, else none) break area ties.
    See the module docstring for the rule and the choices.
    """
    s = settings or SamRefineSettings()
    seeds = np.asarray(seeds)
    if seeds.ndim != 2:
        raise ValueError(f"seeds must be [H, W], got shape {seeds.shape}")
    masks = _mask_list(masks)
    k = len(masks)
    classes = assign_masks(seeds, masks, s)  # [K]
    if isinstance(masks, SamMasks):
        areas = masks.areas
        if scores is None:
            scores = masks.predicted_iou
    else:
        areas = np.asarray([int(_get(masks, i).sum()) for i in range(k)], dtype=np.int64)
    if scores is None:
        scores = np.zeros(k, dtype=np.float32)
    # Paint joined masks largest first (smaller ones on top); equal areas: lower score first;
    # then higher index first (so the lowest index is painted last and wins).
    idx = np.arange(k)
    order = np.lexsort((-idx, np.asarray(scores, dtype=np.float64), -areas))
    claimed = np.full(seeds.shape, -1, dtype=np.int64)  # [H, W] class from a joined mask
    covered = np.zeros(seeds.shape, dtype=bool)  # [H, W] under any SAM mask
    for i in order:
        m = _get(masks, int(i))
        covered |= m
        if classes[i] >= 0:
            claimed[m] = classes[i]
    if s.unclaimed == "seed":
        out = seeds.copy()
    else:
        out = np.full_like(seeds, s.ignore if s.unclaimed == "ignore" else s.background)
    out[covered] = s.background
    out[claimed >= 0] = claimed[claimed >= 0]
    return out


def sam_refine(
    image_id: str,
    seeds: np.ndarray,
    masks: SamMasks,
    settings: SamRefineSettings | None = None,
) -> np.ndarray:
    """One image's SAM-refined pseudo label ``[H, W]`` (the per-image function of a stage).

    ``seeds``: the image's seed labels (0 background, 1..C classes, 255 ignored);
    ``masks``: its SAM masks (:func:`smaf.sam.load_masks`). A size mismatch (masks of another
    image, or of a resized copy) is a DataError naming the image.
    """
    seeds = np.asarray(seeds)
    if seeds.shape != (masks.height, masks.width):
        raise DataError(
            f"SAM masks of image {image_id} are {masks.width}x{masks.height} but its seeds are "
            f"{seeds.shape[1] if seeds.ndim > 1 else '?'}x{seeds.shape[0]}: the masks were made "
            "from another image; delete them to recompute"
        )
    return refine_with_masks(seeds, masks, settings)

"""Which images the figures show, and the maps they show of them.

The figures pick their images from the ground truth (the largest and the smallest object for
Fig. 1 and 4, the most frequent class for Fig. 3) so they show the paper's cases on any dataset.
The maps come from the functions the pipeline itself uses: :mod:`smaf.cam` for the teacher's
multi-scale attention, the seeds stage's stored ``maps/<id>.npz`` for the fused maps of Fig. 3.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from smaf.data.index import DatasetIndex
from smaf.errors import DataError
from smaf.io import PathLike, load_image, load_maps, load_mask


@dataclass
class Sample:
    """One image shown in the figures, with the class its heat maps show."""

    image_id: str
    image: np.ndarray  # uint8 [H, W, 3]
    mask: np.ndarray | None  # uint8 [H, W] ground truth (255 = ignore), None if unknown
    labels: np.ndarray  # float32 [C] image-level labels (the index's: what the stages use)
    cls: int  # class shown, 1..C
    note: str = ""  # why this image was chosen (row title)


def role_ids(index: DatasetIndex, role: str) -> list[str]:
    """Ids of split ``role`` of the index, [] when the split is empty or unknown."""
    try:
        return index.ids(role)
    except DataError:
        return []


def mask_areas(index: DatasetIndex, ids: Sequence[str]) -> dict[str, np.ndarray]:
    """Area fraction ``[C+1]`` (index 0 = background) of every class in each id's GT mask.

    Ids without a mask are skipped; ignore pixels count in no class. Classes missing from the
    id's image-level labels count 0: their maps are zeroed by denoising, nothing to show.
    """
    areas = {}
    c = index.num_classes
    for image_id in ids:
        path = index.mask_path(image_id)
        if path is None:
            continue
        mask = load_mask(path)
        counts = np.bincount(mask.ravel(), minlength=256)[: c + 1] / max(mask.size, 1)
        counts[1:] *= index.labels(image_id) > 0
        areas[image_id] = counts
    return areas


def pick_scale_samples(
    areas: Mapping[str, np.ndarray], min_area: float = 0.005
) -> list[tuple[str, int, str]]:
    """The image/class with the largest object and the one with the smallest (≥ ``min_area``).

    Returns ``[(id, class, note), ...]`` (one entry when both are the same); first id wins ties.
    """
    pairs = [
        (i, c, float(a[c])) for i, a in areas.items() for c in range(1, a.size) if a[c] >= min_area
    ]
    if not pairs:
        return []
    large = max(pairs, key=lambda p: p[2])
    small = min(pairs, key=lambda p: p[2])
    out = [(large[0], large[1], f"large object ({large[2]:.0%} of the image)")]
    if small[:2] != large[:2]:
        out.append((small[0], small[1], f"small object ({small[2]:.1%} of the image)"))
    return out


def pick_class_samples(areas: Mapping[str, np.ndarray], k: int) -> tuple[int, list[str]]:
    """The class present in the most images (lowest index on ties) and its first ``k`` ids."""
    if not areas:
        return 0, []
    present = np.stack([a[1:] > 0 for a in areas.values()])  # [N, C]
    cls = int(present.sum(0).argmax()) + 1
    ids = [i for i, a in areas.items() if a[cls] > 0][:k]
    return cls, ids


def load_sample(index: DatasetIndex, image_id: str, cls: int, note: str = "") -> Sample:
    """Image, GT mask (None without one) and image-level labels of ``image_id``."""
    mask_path = index.mask_path(image_id)
    return Sample(
        image_id,
        load_image(index.image_path(image_id)),
        load_mask(mask_path) if mask_path is not None else None,
        index.labels(image_id),
        cls,
        note,
    )


def seed_maps(maps_dir: PathLike, sample: Sample) -> np.ndarray | None:
    """The seeds stage's fused maps ``[C, H, W]`` of ``sample`` (``<maps_dir>/<id>.npz``), or
    None when the file is missing or not of the sample's size."""
    path = Path(maps_dir) / f"{sample.image_id}.npz"
    if not path.is_file():
        return None
    maps = load_maps(path)
    if maps.shape != (sample.labels.size, *sample.image.shape[:2]):
        return None
    return maps

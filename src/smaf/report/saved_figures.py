"""The figures drawn from what the stages saved, without a network (no torch import: these
rules start in a fraction of a second).

* :func:`make_eps_smaf_figure` (rule ``figure_eps_smaf``): Fig. 3, the fused maps the seeds
  stage stored for the base (EPS, CAM or CLIP) and the SMAF model.
* :func:`make_label_figures` (rule ``figure_labels``): Fig. 5a (pseudo labels on train, SAM's
  masks where a column is a SAM folder) and 5b (DeepLab on val), read from the label folders.

Fig. 1 and Fig. 4 run the networks: :mod:`smaf.report.figures`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from smaf.data.index import DatasetIndex, read_index
from smaf.io import PathLike, load_image, load_mask
from smaf.report import plots
from smaf.report.samples import (
    load_sample,
    mask_areas,
    pick_class_samples,
    role_ids,
    seed_maps,
)
from smaf.sam import SamMasks, load_masks

#: How many ids of a split are read to choose the figures' images (masks only: cheap).
SCAN = 200


def make_eps_smaf_figure(
    *,
    index: DatasetIndex | PathLike,
    eps_maps: PathLike,
    smaf_maps: PathLike,
    out: PathLike,
    role: str = "train",
    n_images: int = 4,
    scan: int = SCAN,
    base: str = "EPS",
) -> Figure:
    """Fig. 3 from the seeds stage's fused maps (``seeds/<model>_<role>/maps``): the class
    present in the most images of the split, on its first ``n_images`` images.

    Args:
        eps_maps, smaf_maps: the ``maps`` folders of the base's (EPS, CAM or CLIP) and SMAF's
            seeds of split ``role``.
        out: the PNG to write.
        base: the base's name in the titles (``EPS``, ``CAM``, ``CLIP``).
    """
    index = read_index(index)
    ids = [i for i in role_ids(index, role)[:scan] if (Path(eps_maps) / f"{i}.npz").is_file()]
    cls, chosen = pick_class_samples(mask_areas(index, ids), n_images)
    samples = [load_sample(index, i, cls) for i in chosen]
    eps = [seed_maps(eps_maps, s) for s in samples]
    smaf = [seed_maps(smaf_maps, s) for s in samples]
    if not samples or any(m is None for m in [*eps, *smaf]):
        fig = plots.message_figure(
            "Fig. 3: not available",
            f"needs ground-truth masks and the seed maps of both models for split {role!r} "
            f"({eps_maps}, {smaf_maps}).",
        )
    else:
        fig = plots.eps_smaf_figure(samples, eps, smaf, index.class_names, base)
    plots.save_figure(fig, out)
    return fig


def sam_segments(masks: SamMasks, colours: int) -> np.ndarray:
    """SAM's masks of one image as a label map to draw: each mask its own colour (1..colours,
    cycling; the colours name no class), painted largest first so nested parts stay visible;
    0 where no mask is."""
    out = np.zeros((masks.height, masks.width), np.uint8)
    order = sorted(range(len(masks)), key=lambda i: -int(masks.mask(i).sum()))
    for k, i in enumerate(order):
        out[masks.mask(i)] = k % max(colours, 1) + 1
    return out


def label_rows(
    index: DatasetIndex, ids: list[str], columns: Mapping[str, PathLike]
) -> list[tuple[str, np.ndarray, dict[str, np.ndarray | None]]]:
    """Rows of :func:`~smaf.report.plots.label_figure`: each id's image, its ground truth and
    ``<folder>/<id>.png`` of every column (None where missing)."""
    rows = []
    for image_id in ids:
        gt = index.mask_path(image_id)
        labels: dict[str, np.ndarray | None] = {
            "ground truth": load_mask(gt) if gt is not None else None
        }
        for title, folder in columns.items():
            path = Path(folder) / f"{image_id}.png"
            masks = Path(folder) / f"{image_id}.sam.json"  # smaf.stages.sam_stage's masks
            if path.is_file():
                labels[title] = load_mask(path)
            elif masks.is_file():
                labels[title] = sam_segments(load_masks(masks), index.num_classes)
            else:
                labels[title] = None
        rows.append((image_id, load_image(index.image_path(image_id)), labels))
    return rows


def make_label_figures(
    *,
    index: DatasetIndex | PathLike,
    label_dirs: Mapping[str, PathLike],
    pred_dirs: Mapping[str, PathLike],
    out_train: PathLike,
    out_val: PathLike,
    train_role: str = "train",
    val_role: str = "val",
    n_images: int = 4,
    scan: int = SCAN,
) -> dict[str, Figure]:
    """Fig. 5a (the first train images with masks: GT, seeds, CRF pseudo labels) and Fig. 5b
    (the first val images: GT, DeepLab's predictions).

    Args:
        label_dirs: Fig. 5a columns, title → folder of label PNGs (seeds, CRF).
        pred_dirs: Fig. 5b columns, title → folder of label PNGs (DeepLab predictions).
        out_train, out_val: the PNGs of Fig. 5a and 5b.
    """
    index = read_index(index)
    train = role_ids(index, train_role)
    with_masks = [i for i in train[:scan] if index.mask_path(i) is not None]
    train = (with_masks or train)[:n_images]
    val = role_ids(index, val_role)[:n_images]
    names = index.class_names
    figs = {}
    for key, ids, columns, title, out in (
        ("fig5a", train, label_dirs, "Fig. 5a. Pseudo labels on train", out_train),
        ("fig5b", val, pred_dirs, "Fig. 5b. DeepLab on val", out_val),
    ):
        if ids:
            figs[key] = plots.label_figure(label_rows(index, ids, columns), names, title=title)
        else:
            figs[key] = plots.message_figure(title, "the split has no images.")
        plots.save_figure(figs[key], out)
    return figs

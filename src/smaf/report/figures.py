"""The figure rules: each computes one family of the paper's figures and writes it as PNG.

* :func:`make_scale_figures` (rule ``figure_scales``, runs the EPS and SMAF networks): Fig. 1,
  the EPS model's attention at each scale and fused, and Fig. 4, single-scale vs fused vs the
  reactivated target (and the SMAF student after self-training). The maps are computed by
  :func:`smaf.cam.class_maps_per_scale` with the teacher's :class:`~smaf.cam.CAMConfig`, so the
  fused column is exactly the teacher's map; they are also saved (``.npz``) beside the PNGs.
* :func:`make_eps_smaf_figure` (rule ``figure_eps_smaf``, no network): Fig. 3, the fused maps the
  seeds stage stored for the EPS and the SMAF model.
* :func:`make_label_figures` (rule ``figure_labels``): Fig. 5a (pseudo labels on train) and
  5b (DeepLab on val), read from the label folders.

The training curves are :func:`smaf.report.curves.make_curves` (rule ``figure_curves``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from smaf.cam import CAMConfig, class_maps, class_maps_per_scale
from smaf.config import dataclass_from
from smaf.data.index import DatasetIndex, read_index
from smaf.io import PathLike, atomic_write, load_image, load_mask
from smaf.models.checkpoint import load_model
from smaf.report import plots
from smaf.report.samples import (
    load_sample,
    mask_areas,
    pick_class_samples,
    pick_scale_samples,
    role_ids,
    seed_maps,
    student_attention,
)
from smaf.sam import SamMasks, load_masks
from smaf.train import resolve_device, use_threads

log = logging.getLogger(__name__)

#: How many ids of a split are read to choose the figures' images (masks only: cheap).
SCAN = 200


def _cam_config(cam: Mapping[str, Any] | CAMConfig | None) -> CAMConfig:
    if isinstance(cam, CAMConfig):
        return cam
    return dataclass_from(CAMConfig, dict(cam or {}), "self_train.teacher_cam")


def make_scale_figures(
    *,
    index: DatasetIndex | PathLike,
    eps_model: PathLike,
    out_scales: PathLike,
    out_reactivation: PathLike,
    out_data: PathLike | None = None,
    smaf_model: PathLike | None = None,
    cam: Mapping[str, Any] | CAMConfig | None = None,
    thr: float = 0.2,
    role: str = "train",
    device: str = "auto",
    threads: int | None = None,
    scan: int = SCAN,
) -> dict[str, Figure]:
    """Fig. 1 and Fig. 4 on the split's images with the largest and the smallest object.

    Args:
        index: the dataset index (or its path).
        eps_model: the EPS classifier (pretraining): the teacher.
        out_scales, out_reactivation: PNGs of Fig. 1 and Fig. 4.
        out_data: ``.npz`` of the plotted maps (per sample ``k``: ``per_scale_k`` ``[S, C, H, W]``,
            ``fused_k``, ``single_k``, ``student_k`` ``[C, H, W]``; ``ids``, ``classes``,
            ``scales``); None = not written.
        smaf_model: the SMAF classifier (self-training): Fig. 4's last column; None = left out.
        cam: the teacher's multi-scale settings (``self_train.teacher_cam``: scales, flip,
            resize_mode, eps), as a :class:`~smaf.cam.CAMConfig` or a dict.
        thr: reactivation background score (``self_train.thr``, Eq. 8).
        role: split whose images are shown; device, threads: where the networks run.
        scan: how many ids of the split are read to choose the images.

    Returns:
        ``{"fig1": Figure, "fig4": Figure}``.
    """
    cfg = _cam_config(cam)
    use_threads(threads)
    index = read_index(index)
    areas = mask_areas(index, role_ids(index, role)[:scan])
    samples = [load_sample(index, i, c, note) for i, c, note in pick_scale_samples(areas)]
    arrays: dict[str, np.ndarray] = {"ids": np.array([s.image_id for s in samples], dtype=str)}
    if not samples:
        why = f"no image of split {role!r} has a ground-truth mask with a labelled object."
        figs = {
            "fig1": plots.message_figure("Fig. 1: not available", why),
            "fig4": plots.message_figure("Fig. 4: not available", why),
        }
    else:
        dev = resolve_device(device)
        teacher = load_model(eps_model, num_classes=index.num_classes)[0].eval().to(dev)
        per_scale, fused = [], []
        for s in samples:
            p, f = class_maps_per_scale(teacher, s.image, s.labels, cfg)
            per_scale.append(p.cpu().numpy())  # [S, C, H, W]
            fused.append(f.cpu().numpy())  # [C, H, W]
        # The original scale alone, unflipped: what a single-scale teacher would give.
        single_cfg = CAMConfig(scales=(1.0,), flip=False, resize_mode=cfg.resize_mode, eps=cfg.eps)
        single = [class_maps(teacher, s.image, s.labels, single_cfg).cpu().numpy() for s in samples]
        student = None
        if smaf_model is not None:
            model = load_model(smaf_model, num_classes=index.num_classes)[0].eval().to(dev)
            student = [student_attention(model, s) for s in samples]
        names = index.class_names
        figs = {
            "fig1": plots.scale_attention_figure(
                samples, per_scale, fused, names, scales=cfg.scales
            ),
            "fig4": plots.reactivation_figure(
                samples, single, fused, names, thr=thr, student=student
            ),
        }
        arrays["classes"] = np.array([s.cls for s in samples], dtype=np.int64)
        arrays["scales"] = np.array(cfg.scales, dtype=np.float64)
        for k in range(len(samples)):
            arrays[f"per_scale_{k}"] = per_scale[k]
            arrays[f"fused_{k}"] = fused[k]
            arrays[f"single_{k}"] = single[k]
            if student is not None:
                arrays[f"student_{k}"] = student[k]
        log.info(
            "Fig. 1/4: %s with %s on %s",
            ", ".join(f"{s.image_id} (class {s.cls})" for s in samples),
            asdict(cfg),
            dev,
        )
    if out_data is not None:
        with atomic_write(out_data) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
    plots.save_figure(figs["fig1"], out_scales)
    plots.save_figure(figs["fig4"], out_reactivation)
    return figs


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

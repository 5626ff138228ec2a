"""The figures that run the networks: Fig. 1 and Fig. 4 (rule ``figure_scales``).

:func:`make_scale_figures` computes the EPS model's attention at each scale and fused (Fig. 1)
and single-scale vs fused vs the reactivated target, with the SMAF student after
self-training (Fig. 4). The maps are computed by :func:`smaf.cam.class_maps_per_scale` with the
teacher's :class:`~smaf.cam.CAMConfig`, so the fused column is exactly the teacher's map; they
are also saved (``.npz``) beside the PNGs.

Fig. 3 and Fig. 5 are drawn from saved maps and labels (:mod:`smaf.report.saved_figures`);
the training curves are :func:`smaf.report.curves.make_curves` (rule ``figure_curves``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from smaf.cam import CAMConfig, attention_maps, class_maps, class_maps_per_scale
from smaf.config import dataclass_from
from smaf.data.index import DatasetIndex, read_index
from smaf.fusion import denoise, reactivate
from smaf.io import PathLike, atomic_write
from smaf.models.build import Classifier
from smaf.models.checkpoint import load_model
from smaf.report import plots
from smaf.report.samples import (
    Sample,
    load_sample,
    mask_areas,
    pick_scale_samples,
    role_ids,
)
from smaf.report.saved_figures import SCAN
from smaf.train import resolve_device, use_threads
from smaf.transforms import normalize

log = logging.getLogger(__name__)


@torch.no_grad()
def student_attention(model: Classifier, sample: Sample) -> np.ndarray:
    """The classifier's single-scale attention at image size, denoised: float32 ``[C, H, W]``.

    What the student outputs after self-training and L_mac compares with the teacher's target
    (Eq. 2: softmax over C+1 for heads with a background, max-normalised ReLU CAM otherwise).
    """
    device = next(model.parameters()).device
    x = normalize(sample.image)[None].to(device)  # [1, 3, H, W]
    att = attention_maps(
        model(x)["cam"], model.has_background, size=sample.image.shape[:2], normalize=True
    )  # [1, C, H, W]
    lab = torch.as_tensor(sample.labels, dtype=torch.float32, device=device)[None]  # [1, C]
    return denoise(att, lab)[0].cpu().numpy()


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
                samples,
                single,
                fused,
                [reactivate(torch.from_numpy(f)[None], thr)[0].numpy() for f in fused],
                names,
                thr=thr,
                student=student,
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

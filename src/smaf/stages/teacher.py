"""Stage 3a (offline teacher, the released code): fused multi-scale maps of the frozen EPS model.

Computed once over train_aug: for every image, the multi-scale + flip attention of the initial
(pretrained) model, fused (Eq. 5–6) and denoised with the image label — exactly the CAM-seed
computation (:func:`smaf.stages.seeds.make_seeds`), with the teacher's scale settings. The maps
are stored compactly (present classes only, float16, compressed; :func:`smaf.cam.save_maps`) in
``<out_dir>/maps/<id>.npz``; the PNGs beside them are the argmax of the maps against a
constant background score (:data:`smaf.settings.PREVIEW_THR`, the paper's 0.2), for looking at. They do not
follow ``self_train.thr``, so changing the reactivation threshold reruns self-training but
not this pass. Self-training puts the maps through the same geometric augmentation as the
student's crop.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from smaf.data.index import DatasetIndex
from smaf.settings import SeedsSettings
from smaf.stages.seeds import make_seeds

log = logging.getLogger(__name__)


def teacher_maps(
    *,
    index: DatasetIndex | str | os.PathLike[str],
    model_path: str | os.PathLike[str],
    settings: SeedsSettings | Mapping[str, Any],
    out_dir: str | os.PathLike[str],
    work_dir: str | os.PathLike[str] | None = None,
    device: str = "auto",
    threads: int | None = None,
    role: str = "train_aug",
    shard: str | None = None,
) -> dict[str, Any]:
    """Write the teacher's maps of every image of split ``role``; return run statistics.

    ``work_dir`` is the resumable staging folder (outside the rule's outputs): images already
    done there are skipped after an interruption. ``settings``: the seeds computation's, with
    the teacher's CAM (``self_train.teacher_cam``), the previews' background score
    (:data:`~smaf.settings.PREVIEW_THR`) and ``seeds.amp``
    (:meth:`smaf.experiments.Experiments.teacher_settings`). ``shard``: one shard of the
    images, gathered by :func:`smaf.stages.gathers.gather_seeds`.
    """
    stats = make_seeds(
        model_path,
        index,
        role,
        out_dir,
        settings,
        device,
        work_dir=work_dir,
        num_threads=threads,
        shard=shard,
    )
    written = Path(work_dir if shard is not None else out_dir)
    sizes = [p.stat().st_size for p in (written / "maps").glob("*.npz")]
    stats["bytes_per_image"] = sum(sizes) / max(len(sizes), 1)
    log.info("teacher maps: %.1f kB per image on disk", stats["bytes_per_image"] / 1024)
    return stats

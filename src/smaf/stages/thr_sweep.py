"""Background-threshold sweep on held-out images (``snakemake thr_sweep``).

The seeds are ``argmax([thr, maps])`` (:func:`smaf.cam.seed_labels`): the background score
``thr`` (``seeds.thr``, the paper's 0.2) decides how much of every image becomes foreground.
Picking it by the seeds' mIoU on the split that Table 2 reports (VOC train) uses that split's
ground truth and overstates the method (users ask about this: SEAM #31, ReCAM #3).

Here ``thr`` is tuned on a **held-out** part of train_aug instead: the train_aug images that
are in no evaluation split (not train, val or test) and have the chosen ground truth, of which
a seeded draw of ``holdout`` is scored. On VOC that is ``train_aug \\ train`` (SBD images, scored
on SegmentationClassAug, the only masks they have); on the demo the train_aug images outside
train, with their masks. The fused maps come from the seeds stage's train_aug folder
(``maps/<id>.npz``, the same for every thr), so the sweep costs no network pass; they are
stored in float16, so at ``thr = seeds.thr`` the sweep's seeds may differ from the PNGs in a
few pixels where a class score ties the threshold.

Outputs: ``thr_sweep.csv`` (one row per model and thr: ``miou``, ``pixel_acc``, ``chosen``)
and ``thr_sweep.json`` (per model: the chosen thr and its mIoU, beside the configured
``seeds.thr`` and its mIoU; the held-out image ids).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from smaf.cam import seed_labels
from smaf.data.index import DatasetIndex, read_index
from smaf.errors import ConfigError, DataError
from smaf.io import atomic_write, load_maps, load_mask
from smaf.metrics import ConfusionMeter
from smaf.progress import Progress

log = logging.getLogger(__name__)

#: Split roles the held-out images must not belong to (every split a table is computed on).
EVALUATION_ROLES = ("train", "val", "test")
#: Columns of thr_sweep.csv.
COLUMNS = ("model", "thr", "miou", "pixel_acc", "n_images", "gt", "chosen")


def holdout_ids(
    index: DatasetIndex, gt: str, fraction: float, seed: int, pool: str = "train_aug"
) -> list[str]:
    """Held-out images for tuning: a seeded draw of ``fraction`` of the ``pool`` images that
    are in none of :data:`EVALUATION_ROLES` and have ground truth ``gt``; in index order.

    At least one image is drawn. The draw depends on the candidate ids and ``seed`` only.

    Raises:
        DataError: no candidate image (every train_aug image is in an evaluation split, or
            none has ``gt`` masks).
        ConfigError: ``fraction`` outside (0, 1].
    """
    if not 0 < fraction <= 1:
        raise ConfigError(f"thr_sweep.holdout must be in (0, 1], got {fraction}")
    excluded: set[str] = set()
    for role in EVALUATION_ROLES:
        if role in index.roles:
            excluded.update(index.ids(role, allow_empty=True))
    candidates = [
        i for i in index.ids(pool) if i not in excluded and index.mask_path(i, gt) is not None
    ]
    if not candidates:
        raise DataError(
            f"thr_sweep: no {pool} image outside the {', '.join(EVALUATION_ROLES)} splits has "
            f"{gt} ground truth, so no threshold can be tuned without the evaluation split's "
            "ground truth. Add such images to train_aug (or masks for them)."
        )
    count = max(1, round(fraction * len(candidates)))
    picked = np.random.default_rng(seed).choice(len(candidates), size=count, replace=False)
    return [candidates[k] for k in sorted(picked)]


def sweep_scores(
    seed_dir: str | os.PathLike[str],
    index: DatasetIndex,
    ids: Sequence[str],
    values: Sequence[float],
    gt: str,
    *,
    log_every: int = 200,
) -> pd.DataFrame:
    """Seed mIoU of every ``thr`` in ``values`` over ``ids``, from the fused maps of a seeds
    folder (``seed_dir/maps/<id>.npz``).

    Returns:
        One row per thr (in the given order): ``thr, miou, pixel_acc, n_images``.
    """
    maps_dir = Path(seed_dir) / "maps"
    meters = [ConfusionMeter(index.num_classes + 1) for _ in values]
    progress = Progress("thr_sweep", len(ids), every=log_every, log=log)
    for image_id in ids:
        path = maps_dir / f"{image_id}.npz"
        if not path.is_file():
            raise DataError(
                f"thr_sweep: fused maps of {image_id} missing ({path}); rerun the seeds rule "
                f"for {Path(seed_dir).name}."
            )
        maps = load_maps(path)  # [C, H, W]
        mask = load_mask(index.mask_path(image_id, gt))  # [H, W] 0..C, 255
        if maps.shape[1:] != mask.shape:
            raise DataError(
                f"thr_sweep: the maps of {image_id} are {maps.shape[1:]} but its {gt} mask is "
                f"{mask.shape}."
            )
        for thr, meter in zip(values, meters, strict=True):
            meter.update(seed_labels(maps, thr), mask)
        progress.update()
    progress.close()
    rows = []
    for thr, meter in zip(values, meters, strict=True):
        s = meter.scores()
        rows.append(
            {
                "thr": float(thr),
                "miou": float(s["miou"]),
                "pixel_acc": float(s["pixel_acc"]),
                "n_images": len(ids),
            }
        )
    return pd.DataFrame(rows, columns=["thr", "miou", "pixel_acc", "n_images"])


def choose(scores: pd.DataFrame) -> float:
    """The thr of the best mIoU (the smallest such thr on a tie)."""
    best = scores["miou"].max()
    return float(scores.loc[scores["miou"] == best, "thr"].min())


def thr_sweep(
    seed_dirs: Mapping[str, str | os.PathLike[str]],
    index: DatasetIndex | str | os.PathLike[str],
    *,
    values: Sequence[float],
    holdout: float,
    seed: int,
    gt: str,
    configured_thr: float,
    out_csv: str | os.PathLike[str],
    out_json: str | os.PathLike[str],
    meta: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Sweep ``values`` for each model's train_aug seeds on the held-out images; write both files.

    Args:
        seed_dirs: model (``eps`` / ``smaf``) → its train_aug seeds folder.
        values: the thresholds tried (``configured_thr`` is added when missing, so its held-out
            mIoU is known too).
        holdout, seed: :func:`holdout_ids`'s draw.
        gt: the ground truth scored (``SegmentationClassAug`` where the dataset has it).
        configured_thr: ``seeds.thr`` of the run.
        meta: fields copied into the JSON record (dataset, experiment, ...).

    Returns:
        The JSON record: ``models`` → ``{thr, miou, configured_thr, configured_miou}``,
        ``gt``, ``holdout`` ids, ``tuned_on``.
    """
    index = read_index(index)
    if not values:
        raise ConfigError("thr_sweep.values must not be empty")
    values = sorted({float(v) for v in values} | {float(configured_thr)})
    ids = holdout_ids(index, gt, holdout, seed)
    log.info("thr_sweep: %d held-out train_aug images (%s), thr %s", len(ids), gt, values)
    tables, models = [], {}
    for model, seed_dir in seed_dirs.items():
        scores = sweep_scores(seed_dir, index, ids, values, gt)
        best = choose(scores)
        scores.insert(0, "model", model)
        scores["gt"] = gt
        scores["chosen"] = scores["thr"] == best
        tables.append(scores)
        at = dict(zip(scores["thr"], scores["miou"], strict=True))
        models[model] = {
            "thr": best,
            "miou": at[best],
            "configured_thr": float(configured_thr),
            "configured_miou": at[float(configured_thr)],
        }
        log.info(
            "thr_sweep %s: best thr %g (mIoU %.2f %%); configured %g: %.2f %%",
            model,
            best,
            100 * at[best],
            configured_thr,
            100 * at[float(configured_thr)],
        )
    table = pd.concat(tables, ignore_index=True)[list(COLUMNS)]
    record = {
        **dict(meta or {}),
        "tuned_on": "held-out train_aug images in no evaluation split",
        "gt": gt,
        "models": models,
        "holdout": ids,
    }
    with atomic_write(out_csv) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6f")
    with atomic_write(out_json) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")
    return record

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

``thr: auto`` (``seeds.thr``, ``self_train.thr``): :func:`auto_thr` makes the same choice for
one set of maps and the workflow uses it (rule ``thr_auto``, ``thr_auto/<target>.json``). The
maps come from a folder that does not depend on the choice (the offline teacher's) or are
computed here from the model (a seeds folder of ``thr: auto`` is made *with* the choice);
:func:`smaf.config.chosen_thr` reads the value back.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from smaf.cam import CAMConfig, class_maps, seed_labels
from smaf.data.index import DatasetIndex, read_index
from smaf.errors import ConfigError, DataError
from smaf.io import atomic_write, load_image, load_maps, load_mask
from smaf.metrics import ConfusionMeter
from smaf.models.checkpoint import load_model
from smaf.progress import Progress
from smaf.train import resolve_device, use_threads

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

    def maps_of(image_id: str) -> np.ndarray:
        path = maps_dir / f"{image_id}.npz"
        if not path.is_file():
            raise DataError(
                f"thr_sweep: fused maps of {image_id} missing ({path}); rerun the seeds rule "
                f"for {Path(seed_dir).name}."
            )
        return load_maps(path)  # [C, H, W]

    return _scores(maps_of, index, ids, values, gt, log_every)


def _scores(
    maps_of: Callable[[str], np.ndarray | torch.Tensor],
    index: DatasetIndex,
    ids: Sequence[str],
    values: Sequence[float],
    gt: str,
    log_every: int,
) -> pd.DataFrame:
    """:func:`sweep_scores` with the maps of an id from ``maps_of``."""
    meters = [ConfusionMeter(index.num_classes + 1) for _ in values]
    progress = Progress("thr_sweep", len(ids), every=log_every, log=log)
    for image_id in ids:
        maps = maps_of(image_id)  # [C, H, W]
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
    configured_thr: float | None,
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
        configured_thr: ``seeds.thr`` of the run; None for ``auto`` (the run uses
            :func:`auto_thr`'s choice: no configured value to compare).
        meta: fields copied into the JSON record (dataset, experiment, ...).

    Returns:
        The JSON record: ``models`` → ``{thr, miou, configured_thr, configured_miou}``,
        ``gt``, ``holdout`` ids, ``tuned_on``.
    """
    index = read_index(index)
    if not values:
        raise ConfigError("thr_sweep.values must not be empty")
    configured = [] if configured_thr is None else [float(configured_thr)]
    values = sorted({float(v) for v in values} | set(configured))
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
            "configured_thr": configured[0] if configured else None,
            "configured_miou": at[configured[0]] if configured else None,
        }
        log.info("thr_sweep %s: best thr %g (mIoU %.2f %%)", model, best, 100 * at[best])
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


def _model_maps(
    model_path: str | os.PathLike[str],
    index: DatasetIndex,
    cam: Mapping[str, Any] | CAMConfig,
    device: str,
    amp: bool,
) -> Callable[[str], torch.Tensor]:
    """The fused maps of an id computed by the classifier at ``model_path`` (as the seeds)."""
    cfg = cam if isinstance(cam, CAMConfig) else CAMConfig(**dict(cam))
    dev = resolve_device(device)
    model, _ = load_model(model_path, num_classes=index.num_classes)
    model.eval().to(dev)

    def maps_of(image_id: str) -> torch.Tensor:
        image = load_image(index.image_path(image_id))
        with (
            torch.inference_mode(),
            torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp and dev.type == "cuda"),
        ):
            return class_maps(model, image, index.labels(image_id), cfg).float().cpu()

    return maps_of


def auto_thr(
    index: DatasetIndex | str | os.PathLike[str],
    *,
    target: str,
    values: Sequence[float],
    holdout: float,
    seed: int,
    gt: str,
    out_json: str | os.PathLike[str],
    maps_dir: str | os.PathLike[str] | None = None,
    model_path: str | os.PathLike[str] | None = None,
    cam: Mapping[str, Any] | CAMConfig | None = None,
    amp: bool = False,
    device: str = "auto",
    num_threads: int | None = None,
    meta: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Choose ``thr`` for ``thr: auto`` on the held-out images (:func:`holdout_ids`: train_aug
    minus every evaluation split; never an evaluated split's ground truth) and write it.

    The maps are read from ``maps_dir/maps/<id>.npz`` (a folder made without this choice, e.g.
    the offline teacher's), or computed by the classifier ``model_path`` with ``cam`` (the
    seeds' settings: the seeds folder itself waits for this choice).

    Returns:
        The JSON record: ``thr`` (the choice, :func:`choose`), ``miou`` at it, ``target``,
        ``scores`` (thr → mIoU), ``gt``, ``tuned_on``, ``holdout`` ids, ``maps_from``.
    """
    if (maps_dir is None) == (model_path is None):
        raise ValueError("auto_thr needs exactly one of maps_dir and model_path")
    index = read_index(index)
    values = sorted({float(v) for v in values})
    if not values:
        raise ConfigError("thr_sweep.values must not be empty")
    ids = holdout_ids(index, gt, holdout, seed)
    if maps_dir is not None:
        scores = sweep_scores(maps_dir, index, ids, values, gt)
        source = str(maps_dir)
    else:
        use_threads(num_threads)
        maps_of = _model_maps(model_path, index, cam or {}, device, amp)
        scores = _scores(maps_of, index, ids, values, gt, 200)
        source = f"computed by {model_path}"
    best = choose(scores)
    at = dict(zip(scores["thr"], scores["miou"], strict=True))
    record = {
        **dict(meta or {}),
        "target": target,
        "thr": best,
        "miou": at[best],
        "scores": {f"{t:g}": m for t, m in at.items()},
        "gt": gt,
        "tuned_on": "held-out train_aug images in no evaluation split",
        "maps_from": source,
        "holdout": ids,
    }
    log.info(
        "thr auto (%s): thr %g, mIoU %.2f %% on %d held-out images (%s)",
        target,
        best,
        100 * at[best],
        len(ids),
        gt,
    )
    with atomic_write(out_json) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")
    return record

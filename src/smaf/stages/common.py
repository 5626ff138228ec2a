"""Pieces shared by the training stages: the weakly supervised training set and config helpers."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from smaf.cam import load_maps
from smaf.data.voc import VOCLayout, load_saliency, read_labels_csv
from smaf.errors import DataError
from smaf.io import load_image, read_id_list
from smaf.transforms import AugmentConfig, train_augment

log = logging.getLogger(__name__)


def read_dataset_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``dataset.json`` written by the dataset stage."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise DataError(f"{path} not found: run the prepare_dataset rule first.") from None


class WeakTrainSet(torch.utils.data.Dataset):
    """Images of a split with their image-level labels (and saliency / teacher maps), augmented.

    Indexed by ``(index, aug_seed)`` (see :class:`smaf.train.SampleStream`). Items:
    ``image`` float32 ``[3, S, S]``, ``labels`` float32 ``[C]``, ``valid`` bool ``[S, S]``,
    plus ``saliency`` float32 ``[S, S]`` in [0, 1] and/or ``teacher`` float32 ``[C, S, S]``.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split_file: str | os.PathLike[str],
        labels_csv: str | os.PathLike[str],
        num_classes: int,
        augment: AugmentConfig,
        *,
        saliency_dir: str | os.PathLike[str] | None = None,
        teacher_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.layout = VOCLayout.from_root(root, saliency_dir=saliency_dir)
        self.ids = read_id_list(split_file)
        labels = read_labels_csv(labels_csv, num_classes)
        missing = [i for i in self.ids if i not in labels]
        if missing:
            raise DataError(
                f"{labels_csv} has no labels for {len(missing)} ids (first {missing[0]})."
            )
        self.labels = {i: labels[i] for i in self.ids}
        self.augment = augment
        self.use_saliency = saliency_dir is not None
        if self.use_saliency and not Path(saliency_dir).is_dir():
            raise DataError(
                f"saliency folder not found: {saliency_dir}. EPS pretraining needs one saliency "
                "map per training image (see the README's manual items)."
            )
        self.teacher_dir = Path(teacher_dir) if teacher_dir is not None else None

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, item: tuple[int, int]) -> dict[str, Any]:
        index, seed = item
        image_id = self.ids[index]
        rng = np.random.default_rng(seed)
        image = load_image(self.layout.image_path(image_id))
        extras = {}
        if self.use_saliency:
            sal = load_saliency(self.layout.saliency_path(image_id)).astype(np.float32) / 255.0
            extras["saliency"] = (sal, "bilinear", 0.0)
        if self.teacher_dir is not None:
            path = self.teacher_dir / f"{image_id}.npz"
            if not path.is_file():
                raise DataError(
                    f"teacher maps missing for {image_id}: {path}. Rerun the teacher_maps rule."
                )
            extras["teacher"] = (load_maps(path), "bilinear", 0.0)
        for name, (arr, _, _) in extras.items():
            if tuple(arr.shape[-2:]) != image.shape[:2]:
                raise DataError(
                    f"{name} map of {image_id} is {arr.shape[-2:]} but the image is {image.shape[:2]}."
                )
        aug = train_augment(image, rng, self.augment, extras)
        out = {
            "id": image_id,
            "image": aug.image,
            "labels": torch.from_numpy(self.labels[image_id]),
            "valid": aug.valid,
        }
        out.update(aug.extras)
        return out

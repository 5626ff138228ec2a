"""PyTorch Datasets over the dataset index: plain items, weakly supervised training, pseudo labels.

* :class:`SegmentationSet`: the images of a split as they are (image, mask, labels, saliency),
  for inference, evaluation and figures.
* :class:`WeakTrainSet`: augmented training crops with image-level labels (and saliency maps
  for EPS, or the offline teacher's maps for SMAF).
* :class:`PseudoLabelSet`: augmented crops with their pseudo-label maps (DeepLab).

The training sets are indexed by ``(index, aug_seed)`` (:class:`smaf.train.SampleStream`), so
every crop is reproducible from its position in the sample stream.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch.utils.data

from smaf.data.index import DatasetIndex, read_index, require_saliency
from smaf.errors import DataError
from smaf.io import IGNORE_INDEX, load_image, load_maps, load_mask, load_saliency
from smaf.transforms import AugmentConfig, DeepLabAugment, augment_pair, train_augment

MaskMode = Literal["auto", "required", "none"]


def _check_size(image_id: str, what: str, path: Path, arr: np.ndarray, size: tuple) -> None:
    if tuple(arr.shape[-2:]) != tuple(size):
        raise DataError(
            f"image {image_id}: {what} {path} is {arr.shape[-1]}x{arr.shape[-2]} but the image "
            f"is {size[1]}x{size[0]} (WxH); the file belongs to another image or was resized. "
            "Replace it and rerun the prepare_dataset rule."
        )


class SegmentationSet(torch.utils.data.Dataset):
    """The images of one split with masks, image labels and (optionally) saliency maps.

    Each item is a dict:

    - ``'id'``: str
    - ``'image'``: uint8 ``[H, W, 3]`` RGB
    - ``'mask'``: uint8 ``[H, W]`` class indices (255 = ignore), or None when not loaded
    - ``'labels'``: float32 ``[C]`` of 0.0/1.0 (foreground classes only)
    - ``'saliency'``: uint8 ``[H, W]``, only when ``saliency=True``

    No resizing or augmentation happens here: ``transform(item) -> item`` is applied last.

    Args:
        index: the dataset index (or its path).
        role: split role (``train``, ``val``, ...); None = every image.
        masks: ``'auto'`` loads a mask when the image has one (None otherwise),
            ``'required'`` checks up front that every image has one, ``'none'`` never loads.
        gt: which ground truth: ``mask`` or ``aug_mask`` (or SegmentationClass /
            SegmentationClassAug).
        saliency: also load the saliency maps (every image must have one).
        transform: callable applied to each item dict.
    """

    def __init__(
        self,
        index: DatasetIndex | str | os.PathLike[str],
        role: str | None,
        *,
        masks: MaskMode = "auto",
        gt: str = "mask",
        saliency: bool = False,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        if masks not in ("auto", "required", "none"):
            raise ValueError(f"masks must be 'auto', 'required' or 'none', got {masks!r}")
        self.index = read_index(index)
        self.ids = self.index.ids(role)
        self.masks, self.gt, self.saliency, self.transform = masks, gt, saliency, transform
        if masks == "required":
            missing = [i for i in self.ids if self.index.mask_path(i, gt) is None]
            if missing:
                raise DataError(
                    f"{len(missing)} of {len(self.ids)} images of split {role!r} have no {gt} "
                    f"ground truth (first: {missing[0]}); use a split with masks."
                )
        if saliency:
            require_saliency(self.index, self.ids, role or "all")

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_id = self.ids[index]
        image = load_image(self.index.image_path(image_id))  # [H, W, 3]
        size = image.shape[:2]
        item: dict[str, Any] = {
            "id": image_id,
            "image": image,
            "mask": None,
            "labels": self.index.labels(image_id),
        }
        path = self.index.mask_path(image_id, self.gt) if self.masks != "none" else None
        if path is not None:
            item["mask"] = load_mask(path)  # [H, W]
            _check_size(image_id, "mask", path, item["mask"], size)
        if self.saliency:
            path = self.index.saliency_path(image_id)
            item["saliency"] = load_saliency(path)  # [H, W]
            _check_size(image_id, "saliency map", path, item["saliency"], size)
        if self.transform is not None:
            item = self.transform(item)
        return item


class WeakTrainSet(torch.utils.data.Dataset):
    """Images of a split with their image-level labels (and saliency / teacher maps), augmented.

    Indexed by ``(index, aug_seed)``. Items: ``image`` float32 ``[3, S, S]``, ``labels``
    float32 ``[C]``, ``valid`` bool ``[S, S]``, plus ``saliency`` float32 ``[S, S]`` in [0, 1]
    and/or ``teacher`` float32 ``[C, S, S]``.

    Args:
        saliency: load the saliency maps (EPS); every image of the split must have one.
        teacher_dir: folder of the offline teacher's ``<id>.npz`` maps (SMAF, released code).
        teacher_align_corners: resize the teacher maps with bilinear ``align_corners=True``
            (the released SMAF code) instead of False. The saliency follows
            ``augment.resize_mode`` like the image.
    """

    def __init__(
        self,
        index: DatasetIndex | str | os.PathLike[str],
        role: str,
        augment: AugmentConfig,
        *,
        saliency: bool = False,
        teacher_dir: str | os.PathLike[str] | None = None,
        teacher_align_corners: bool = False,
    ) -> None:
        self.index = read_index(index)
        self.ids = self.index.ids(role)
        self.augment = augment
        self.use_saliency = saliency
        if saliency:
            require_saliency(self.index, self.ids, role)
        self.teacher_dir = Path(teacher_dir) if teacher_dir is not None else None
        self.teacher_mode = "bilinear_aligned" if teacher_align_corners else "bilinear"

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, item: tuple[int, int]) -> dict[str, Any]:
        index, seed = item
        image_id = self.ids[index]
        rng = np.random.default_rng(seed)
        image = load_image(self.index.image_path(image_id))
        extras = {}
        if self.use_saliency:
            path = self.index.saliency_path(image_id)
            sal = load_saliency(path).astype(np.float32) / 255.0
            _check_size(image_id, "saliency map", path, sal, image.shape[:2])
            extras["saliency"] = (sal, "image", 0.0)
        if self.teacher_dir is not None:
            path = self.teacher_dir / f"{image_id}.npz"
            if not path.is_file():
                raise DataError(
                    f"teacher maps missing for {image_id}: {path}. Rerun the teacher_maps rule."
                )
            maps = load_maps(path)
            if tuple(maps.shape[-2:]) != image.shape[:2]:
                raise DataError(
                    f"teacher map of {image_id} is {maps.shape[-2:]} but the image is "
                    f"{image.shape[:2]}."
                )
            extras["teacher"] = (maps, self.teacher_mode, 0.0)
        aug = train_augment(image, rng, self.augment, extras)
        out = {
            "id": image_id,
            "image": aug.image,
            "labels": torch.from_numpy(self.index.labels(image_id)),
            "valid": aug.valid,
        }
        out.update(aug.extras)
        return out


class PseudoLabelSet(torch.utils.data.Dataset):
    """Images of a split with their pseudo-label PNGs, augmented for DeepLab.

    Indexed by ``(index, aug_seed)``; items are
    ``{'id', 'image': float32 [3, S, S], 'label': int64 [S, S]}``.
    """

    def __init__(
        self,
        index: DatasetIndex | str | os.PathLike[str],
        role: str,
        label_dir: str | os.PathLike[str],
        augment: DeepLabAugment,
    ) -> None:
        self.index = read_index(index)
        self.ids = self.index.ids(role)
        self.label_dir = Path(label_dir)
        self.num_classes = self.index.num_classes
        self.augment = augment
        have = {p.name for p in self.label_dir.iterdir()} if self.label_dir.is_dir() else set()
        missing = [i for i in self.ids if f"{i}.png" not in have]
        if missing:
            raise DataError(
                f"{len(missing)} of {len(self.ids)} pseudo labels are missing from "
                f"{self.label_dir} (first: {missing[0]}.png). Rerun the crf rule for this split."
            )

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, item: tuple[int, int]) -> dict[str, Any]:
        index, seed = item
        image_id = self.ids[index]
        image = load_image(self.index.image_path(image_id))  # [H, W, 3]
        label = load_mask(self.label_dir / f"{image_id}.png")  # [H, W]
        if label.shape != image.shape[:2]:
            raise DataError(
                f"pseudo label {self.label_dir / image_id}.png is {label.shape} but the image is "
                f"{image.shape[:2]}: the labels belong to another dataset."
            )
        top = int(label[label != IGNORE_INDEX].max(initial=0))
        if top > self.num_classes:
            raise DataError(
                f"pseudo label {self.label_dir / image_id}.png holds label {top} > C = "
                f"{self.num_classes}."
            )
        x, y = augment_pair(image, label, np.random.default_rng(seed), self.augment)
        return {"id": image_id, "image": x, "label": y}

"""Datasets: the PASCAL VOC 2012 reader and image-level label formats."""

from smaf.data.voc import (
    VOC_CLASSES,
    VOCLayout,
    VOCSegmentation,
    image_labels,
    labels_from_mask,
    load_legacy_cls_labels,
    read_labels_csv,
    write_labels_csv,
)

__all__ = [
    "VOC_CLASSES",
    "VOCLayout",
    "VOCSegmentation",
    "image_labels",
    "labels_from_mask",
    "load_legacy_cls_labels",
    "read_labels_csv",
    "write_labels_csv",
]

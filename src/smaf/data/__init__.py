"""Data: the dataset index every stage reads, its source adapters, label formats and Datasets."""

from smaf.data.index import DatasetIndex, ImageRecord, read_index
from smaf.data.labels import (
    labels_from_mask,
    labels_from_xml,
    load_legacy_cls_labels,
    read_labels_csv,
    write_labels_csv,
)

__all__ = [
    "DatasetIndex",
    "ImageRecord",
    "labels_from_mask",
    "labels_from_xml",
    "load_legacy_cls_labels",
    "read_index",
    "read_labels_csv",
    "write_labels_csv",
]

"""Your own data, end to end: folder datasets built from real VOC images run the whole workflow.

Each test builds a user-style folder (tests/folder_data.py) and runs Snakemake on it with a
tiny training budget; the numbers are not the point, the plumbing is: the index, partial
masks, saliency maps computed by a (tiny, test-made) ONNX model, evaluation on the images that
have masks, predictions of the unlabelled images, and `smaf predict` on held-out images.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pandas as pd
import pytest
import torch
from folder_data import VOC_FG, build_folder_dataset, write_coco_json
from workflow_utils import TINY_CONFIG, snakemake

from smaf.data.index import DatasetIndex

pytestmark = [pytest.mark.slow, pytest.mark.voc]


def _tiny_onnx_saliency(path) -> None:
    """A stand-in for U²-Net with its interface: [1, 3, 320, 320] → [1, 1, 320, 320]."""

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 1, 3, padding=1)

        def forward(self, x):
            return torch.sigmoid(self.conv(x))

    torch.manual_seed(0)
    torch.onnx.export(
        Tiny().eval(), torch.zeros(1, 3, 320, 320), str(path), dynamo=False, opset_version=17
    )


def _config(name: str, dataset: dict, **sections) -> dict:
    config = copy.deepcopy(TINY_CONFIG)
    config["dataset"] = name
    config["datasets"][name] = dataset
    for key, value in sections.items():
        config[key] = {**config.get(key, {}), **value}
    return config


def test_own_folder_with_partial_masks_and_computed_saliency(voc_mini_root, tmp_path) -> None:
    data = tmp_path / "leaves"
    built = build_folder_dataset(voc_mini_root, data, n=18, n_masks=10, n_unlabelled=3)
    model = tmp_path / "u2net-tiny.onnx"
    _tiny_onnx_saliency(model)
    config = _config(
        "leaves",
        {
            "source": "folder",
            "images": str(data / "images"),
            "labels": str(data / "labels.csv"),
            "masks": str(data / "masks"),
            "saliency": "compute",
            "classes": VOC_FG,
            "splits": {"val_fraction": 0.25, "seed": 0},
        },
        saliency={"model": str(model)},
    )
    work = tmp_path / "work"
    snakemake(work, "--cores", "2", config=config)

    index = DatasetIndex.read(work / "results/leaves/data/index.csv")
    saliency = work / "results/leaves/data/saliency"
    assert {p.stem for p in saliency.glob("*.png")} == set(index.ids("train_aug"))
    summary = pd.read_csv(work / "results/summary.csv")
    # Scored on the images that have a mask, and saying how many lack one.
    val = summary[summary["stage"] == "deeplab"].iloc[0]
    with_mask = [i for i in index.ids("val") if index.mask_path(i) is not None]
    assert val["n_images"] == len(with_mask)
    assert val["n_images_without_gt"] == len(index.ids("val")) - len(with_mask)
    assert summary["miou"].between(0, 1).all()
    # The unlabelled images are predicted (never trained on).
    test = DatasetIndex.read(work / "results/leaves/data/test_index.csv")
    assert sorted(test.table["name"]) == sorted(built["unlabelled"])
    preds = work / "results/leaves/default/deeplab/pred_test_crf"
    assert {p.stem for p in preds.glob("*.png")} == set(test.ids("test"))
    assert (work / "results/report.html").is_file()

    # Segment new images with the trained model, from the command line.
    new = tmp_path / "new images"
    (new / "sub").mkdir(parents=True)
    for k, name in enumerate(built["unlabelled"]):
        (new / "sub" / f"{k} {name.rsplit('/', 1)[-1]}").write_bytes(
            (data / "images" / name).read_bytes()
        )
    out = tmp_path / "predicted"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "smaf.cli",
            "predict",
            "--model",
            str(work / "results/leaves/default/deeplab/model.pt"),
            "--images",
            str(new),
            "--out",
            str(out),
            "--crf",
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(list((out / "masks" / "sub").glob("*.png"))) == len(built["unlabelled"])
    classes = json.loads((out / "classes.json").read_text())
    assert [c["name"] for c in classes["classes"]][1:] == VOC_FG


def test_binary_by_folder_without_masks_gives_no_miou_rows(voc_mini_root, tmp_path) -> None:
    """One class, labels by folder (photos/cat/*), background-only photos (photos/background/*,
    `negatives_folder`: trained on with no class), unsorted photos at the top: test images."""
    images = tmp_path / "photos"
    ids = (voc_mini_root / "ImageSets/Segmentation/subset_train.txt").read_text().split()
    for k, image_id in enumerate(ids[:14]):
        folder = images / "cat" if k < 8 else images / "background" if k < 11 else images
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{image_id}.jpg").write_bytes(
            (voc_mini_root / f"JPEGImages/{image_id}.jpg").read_bytes()
        )
    config = _config(
        "pets",
        {
            "source": "folder",
            "images": str(images),
            "labels": "by_folder",
            "negatives_folder": "background",
            "splits": {"val_fraction": 0.2},
        },
        pretrain={"method": "cam"},
    )
    work = tmp_path / "work"
    snakemake(work, "--cores", "2", config=config)
    index = DatasetIndex.read(work / "results/pets/data/index.csv")
    assert index.class_names == ["background", "cat"]
    negatives = [i for i in index.ids(["train_aug", "val"]) if not index.labels(i).any()]
    assert len(negatives) == 3 and all(i.startswith("background__") for i in negatives)
    summary = pd.read_csv(work / "results/summary.csv")
    assert summary.empty  # no masks: no mIoU, never a made-up one
    preds = work / "results/pets/default/deeplab/pred_test_crf"
    assert len(list(preds.glob("*.png"))) == 3
    assert (work / "results/report.html").is_file()


def test_coco_json_labels_train_a_classifier(voc_mini_root, tmp_path) -> None:
    data = tmp_path / "coco-like"
    built = build_folder_dataset(voc_mini_root, data, n=10, n_masks=0, n_unlabelled=2)
    coco = write_coco_json(data, built["labels"], VOC_FG)
    config = _config(
        "cocolike",
        {
            "source": "folder",
            "images": str(data / "images"),
            "labels": str(coco),
            "splits": {"val_fraction": 0.2},
        },
        pretrain={"method": "cam"},
    )
    work = tmp_path / "work"
    snakemake(work, "results/cocolike/pretrain/model.pt", "--cores", "2", config=config)
    index = DatasetIndex.read(work / "results/cocolike/data/index.csv")
    assert index.class_names[1:] == VOC_FG  # COCO category order
    assert len(index.ids("train_aug")) + len(index.ids("val")) == len(built["labels"])

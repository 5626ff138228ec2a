"""A binary problem learns: background-only images (negatives) are training images in every label
format of the folder source, the methods take their all-zero label vector, classes a classifier
cannot tell apart are warned about, and masks saved as 0/255 are converted or refused."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from folder_data import write_coco_json, write_noise_images
from PIL import Image

from smaf.cam import seed_labels
from smaf.data.index import DatasetIndex
from smaf.data.prepare import prepare_dataset
from smaf.errors import ConfigError, DataError
from smaf.io import load_mask
from smaf.losses import classification_loss, eps_saliency_loss
from smaf.stages.crf_stage import background_score

POS = [f"leaf_{k}.png" for k in range(8)]
NEG = [f"plain_{k}.png" for k in range(4)]


def _prepare(tmp_path, settings):
    path = tmp_path / "results" / "index.csv"
    info = prepare_dataset(
        source="folder", settings=settings, out_index=path, name="own", threads=1
    )
    return DatasetIndex.read(path), info


def _csv(tmp_path, rows) -> str:
    path = tmp_path / "labels.csv"
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([["image", "labels"], *rows])
    return str(path)


def _negatives(index: DatasetIndex) -> set[str]:
    trained = index.ids(["train_aug", "val"])
    return {index.table.loc[i, "name"] for i in trained if not index.labels(i).any()}


@pytest.fixture()
def images(tmp_path):
    write_noise_images(tmp_path / "images", POS + NEG)
    return tmp_path


def test_an_empty_labels_field_is_a_negative_training_image(images) -> None:
    labels = _csv(images, [[n, "rust"] for n in POS] + [[n, ""] for n in NEG])
    settings = {"images": str(images / "images"), "labels": labels}
    index, info = _prepare(images, {**settings, "splits": {"val_fraction": 0.25}})
    assert index.class_names == ["background", "rust"]
    assert _negatives(index) == set(NEG)  # trained on (or held out), not test images
    assert index.ids("test", allow_empty=True) == []
    assert info["negative_images"] == 4 and "warnings" not in info


def test_coco_xml_and_by_folder_negatives(images) -> None:
    tags = {**{n: ["rust"] for n in POS}, **{n: [] for n in NEG}}
    coco = write_coco_json(images, tags, ["rust"])  # a negative: an image without annotations
    index, _ = _prepare(images, {"images": str(images / "images"), "labels": str(coco)})
    assert _negatives(index) == set(NEG)

    xml = images / "xml"
    xml.mkdir()
    for n in POS + NEG:
        objects = "<object><name>rust</name></object>" if n in POS else ""
        (xml / n.replace(".png", ".xml")).write_text(f"<annotation>{objects}</annotation>")
    index, _ = _prepare(images, {"images": str(images / "images"), "labels": str(xml)})
    assert _negatives(index) == set(NEG)

    folders = images / "by_folder"
    write_noise_images(folders, [f"rust/{n}" for n in POS] + [f"healthy/{n}" for n in NEG])
    settings = {"images": str(folders), "labels": "by_folder", "negatives_folder": "healthy"}
    index, _ = _prepare(images, settings)
    assert index.class_names == ["background", "rust"]  # the negatives folder is no class
    assert _negatives(index) == {f"healthy/{n}" for n in NEG}


def test_a_class_in_every_training_image_is_warned_about(images, caplog) -> None:
    labels = _csv(images, [[n, "rust;spot"] for n in POS + NEG])
    _, info = _prepare(images, {"images": str(images / "images"), "labels": labels})
    assert any("rust, spot are in every training image" in w for w in info["warnings"])
    assert "negatives" in caplog.text

    rows = [[n, "rust;spot" if k % 2 else ""] for k, n in enumerate(POS + NEG)]
    _, info = _prepare(images, {"images": str(images / "images"), "labels": _csv(images, rows)})
    assert info["warnings"] == [
        "classes rust and spot always appear together in the training images: they cannot be "
        "told apart. Add images that show one without the other."
    ]


def test_no_training_image_with_a_class_is_refused(images) -> None:
    labels = _csv(images, [[n, ""] for n in POS + NEG])
    with pytest.raises(DataError, match="none of the .* training images of dataset own shows"):
        _prepare(images, {"images": str(images / "images"), "labels": labels, "classes": ["x"]})


# ------------------------------------------------------------------------- 0/255 masks
def _binary_masks(tmp_path) -> str:
    masks = tmp_path / "masks"
    masks.mkdir()
    for k, n in enumerate(POS + NEG):
        mask = np.zeros((20, 24), np.uint8)
        if n in POS:
            mask[2 : 10 + k, 3:12] = 255
        Image.fromarray(mask, mode="L").save(masks / n)
    return str(masks)


def test_masks_saved_as_0_255_stop_with_the_hint(images) -> None:
    labels = _csv(images, [[n, "rust"] for n in POS] + [[n, ""] for n in NEG])
    settings = {"images": str(images / "images"), "labels": labels, "masks": _binary_masks(images)}
    with pytest.raises(DataError, match=r"hold only 0 and 255.*mask_values: binary_255"):
        _prepare(images, settings)


def test_binary_255_masks_are_read_as_class_1(images) -> None:
    labels = _csv(images, [[n, "rust"] for n in POS] + [[n, ""] for n in NEG])
    masks = _binary_masks(images)
    settings = {"images": str(images / "images"), "labels": labels, "masks": masks}
    index, _ = _prepare(images, {**settings, "mask_values": "binary_255"})
    for image_id in index.ids():
        name = index.table.loc[image_id, "name"]
        source = load_mask(f"{masks}/{name}")
        converted = load_mask(index.mask_path(image_id))
        np.testing.assert_array_equal(converted, (source == 255).astype(np.uint8))
    assert index.mask_path(index.ids()[0]).parent.name == "masks_binary"
    # The test images' index converts into a folder of its own: the index's masks stay.
    unlabelled = _csv(images, [[n, "rust"] for n in POS[:6]] + [[n, ""] for n in NEG])
    settings = {**settings, "labels": unlabelled, "mask_values": "binary_255"}
    index, _ = _prepare(images, settings)
    path = images / "results" / "test_index.csv"
    prepare_dataset(source="folder", settings=settings, out_index=path, name="own", roles=("test",))
    test = DatasetIndex.read(path)
    assert test.mask_path(test.ids()[0]).parent.name == "test_index.masks_binary"
    assert all(index.mask_path(i).is_file() for i in index.ids())
    with pytest.raises(ConfigError, match="binary_255 is for one class"):
        two = _csv(images, [[n, "rust;spot" if k % 2 else "rust"] for k, n in enumerate(POS)])
        _prepare(images, {**settings, "labels": two, "mask_values": "binary_255"})


# ------------------------------------------------- the methods take an all-zero label vector
def test_the_losses_seeds_and_crf_take_a_negative() -> None:
    labels = torch.zeros(2, 1)
    logits = torch.randn(2, 1, requires_grad=True)
    loss = classification_loss(logits, labels)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    assert (logits.grad > 0).all()  # pushes the class score down: the negative teaches
    cam = torch.randn(2, 2, 8, 8, requires_grad=True)
    eps, _ = eps_saliency_loss(cam, torch.rand(2, 1, 8, 8), labels)
    eps.backward()
    assert torch.isfinite(eps) and torch.isfinite(cam.grad).all()
    # No class: no maps, seeds and the CRF's background score are all background.
    assert not seed_labels(np.zeros((0, 8, 8), np.float32), 0.2).any()
    assert (background_score(np.zeros((0, 8, 8), np.float32)) == 1).all()


def test_json_info_records_negatives(images) -> None:
    labels = _csv(images, [[n, "rust"] for n in POS] + [[n, ""] for n in NEG])
    _prepare(images, {"images": str(images / "images"), "labels": labels})
    info = json.loads((images / "results" / "dataset.json").read_text())
    assert info["negative_images"] == 4

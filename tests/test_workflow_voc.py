"""The real-VOC path of the workflow, end to end and offline.

A miniature ``VOCtrainval_11-May-2012.tar`` and ``SegmentationClassAug.zip`` are built from the
real VOC 2012 subset (same layout as the official archives) and served from 127.0.0.1; the
workflow downloads them (checksum-verified), extracts them, derives train_aug from the aug
masks and indexes the dataset. Also: a checksum mismatch, a manual item, and a VOC folder that
is already on disk (``download: false``). Nothing here leaves the machine.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import serve_folder
from workflow_utils import REPO_ROOT, snakemake

from smaf.data.index import DatasetIndex
from smaf.data.sources.voc import VOC_CLASSES

pytestmark = pytest.mark.usefixtures("direct_localhost")  # reach 127.0.0.1 directly

VOC_TAR = "VOCtrainval_11-May-2012.tar"
AUG_ZIP = "SegmentationClassAug.zip"
N_TRAIN, N_VAL = 12, 8
#: The target. workflow_utils appends the arguments after ``--configfile FILE``, which takes
#: one or more values: a target there would be read as a second config file, so an option
#: (``--cores N``, ``-n``) always comes first.
DATASET_JSON = "results/voc2012/data/dataset.json"
#: Google Drive id of EPS's saliency maps, which the manual item's instructions must name.
SALIENCY_DRIVE_ID = "19AjSmgdMlIZH4FXVZ5zjlUZcoZZCkwrI"


def _voc_config() -> dict:
    """config/voc2012.yaml as a dict (the override must carry `dataset` and the whole entry).

    The miniature has no saliency maps, which EPS pretraining needs and the dataset stage
    checks for: these tests stop at the index, so they pretrain with CAM (no saliency)."""
    config = yaml.safe_load((REPO_ROOT / "config" / "voc2012.yaml").read_text())
    config["pretrain"]["method"] = "cam"
    return config


def _read_ids(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------------------
# Fixtures: the miniature archives and a local HTTP server
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mini_archives(voc_mini_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The two archives in ``<tmp>/srv/mirror/`` plus their md5s and the ids they hold."""
    seg_dir = voc_mini_root / "ImageSets" / "Segmentation"
    train = _read_ids(seg_dir / "subset_train.txt")[:N_TRAIN]
    val = _read_ids(seg_dir / "subset_val.txt")[:N_VAL]
    base = tmp_path_factory.mktemp("voc_archives")
    srv = base / "srv" / "mirror"
    srv.mkdir(parents=True)

    # VOCtrainval: VOCdevkit/VOC2012/{JPEGImages,SegmentationClass,ImageSets/Segmentation}.
    # No Annotations, so label_source auto falls back to the masks.
    tar_path = srv / VOC_TAR
    with tarfile.open(tar_path, "w") as tf:
        top = "VOCdevkit/VOC2012"
        for image_id in train + val:
            tf.add(
                voc_mini_root / "JPEGImages" / f"{image_id}.jpg", f"{top}/JPEGImages/{image_id}.jpg"
            )
            tf.add(
                voc_mini_root / "SegmentationClass" / f"{image_id}.png",
                f"{top}/SegmentationClass/{image_id}.png",
            )
        for name, ids in (("train", train), ("val", val)):
            lst = base / f"{name}.txt"
            lst.write_text("".join(f"{i}\n" for i in ids))
            tf.add(lst, f"{top}/ImageSets/Segmentation/{name}.txt")

    # SegmentationClassAug.zip: one top folder of <id>.png (the subset's masks are identical
    # to SegmentationClassAug's), for the same 20 ids and nothing else.
    zip_path = srv / AUG_ZIP
    with zipfile.ZipFile(zip_path, "w") as zf:
        zf.writestr("SegmentationClassAug/", "")
        for image_id in train + val:
            zf.write(
                voc_mini_root / "SegmentationClass" / f"{image_id}.png",
                f"SegmentationClassAug/{image_id}.png",
            )
    return {
        "dir": srv.parent,
        "train": train,
        "val": val,
        "md5": {VOC_TAR: _md5(tar_path), AUG_ZIP: _md5(zip_path)},
    }


@pytest.fixture(scope="module")
def http_mirror(mini_archives: dict) -> Iterator[str]:
    """Base URL of a throw-away HTTP server on 127.0.0.1 serving the archives."""
    with serve_folder(mini_archives["dir"]) as url:
        yield url


def _download_config(base_url: str, md5: dict[str, str]) -> dict:
    config = _voc_config()
    config["downloads"] = {
        name: {"url": f"{base_url}/{name}", "md5": md5[name]} for name in (VOC_TAR, AUG_ZIP)
    }
    return config


# ------------------------------------------------------------------------------------------------
# Tests
# ------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.voc
def test_download_extract_prepare_real_voc(
    tmp_path: Path, mini_archives: dict, http_mirror: str, voc_mini: Path
) -> None:
    config = _download_config(http_mirror, mini_archives["md5"])
    snakemake(tmp_path, "--cores", "2", DATASET_JSON, config=config)

    train, val = mini_archives["train"], mini_archives["val"]
    data = tmp_path / "results/voc2012/data"
    info = json.loads((tmp_path / DATASET_JSON).read_text())
    assert info["images"] == {"train_aug": N_TRAIN, "train": N_TRAIN, "val": N_VAL}
    assert info["class_names"] == list(VOC_CLASSES) and len(info["class_names"]) == 21
    assert info["class_names"][0] == "background"
    assert info["num_classes"] == 20 and info["aug_masks_train"] == N_TRAIN
    # train_aug was derived: every SegmentationClassAug mask minus val.
    index = DatasetIndex.read(data / "index.csv")
    assert index.ids("train_aug") == sorted(train)
    assert index.ids("train") == train
    assert index.ids("val") == val
    for image_id in train + val:  # every image has its SegmentationClassAug mask
        aug_mask = index.mask_path(image_id, "SegmentationClassAug")
        assert aug_mask == Path("resources/voc2012/SegmentationClassAug") / f"{image_id}.png"
        assert (tmp_path / aug_mask).is_file()  # paths are relative to the workflow's folder

    # Image labels derived from the masks agree with the field's cls_labels.npy.
    reference = np.load(voc_mini / "extras" / "cls_labels.npy", allow_pickle=True).item()
    reference = {f"{str(k)[:4]}_{str(k)[4:]}": v for k, v in reference.items()}
    header = (data / "index.csv").read_text().splitlines()[0].split(",")
    assert [c for c in header if c.startswith("label_")] == [f"label_{n}" for n in VOC_CLASSES[1:]]
    assert index.class_names == list(VOC_CLASSES)
    assert sorted(index.ids()) == sorted(train + val)
    for image_id, labels in index.label_map().items():
        np.testing.assert_array_equal(labels, reference[image_id], err_msg=image_id)

    # The downloads were verified and logged, the archives extracted behind their markers.
    for name in (VOC_TAR, AUG_ZIP):
        assert _md5(tmp_path / "resources/downloads" / name) == mini_archives["md5"][name]
        assert not (tmp_path / "resources/downloads" / f"{name}.part").exists()
        assert (tmp_path / "logs/downloads" / f"{name}.log").read_text()
    assert (tmp_path / "resources/voc2012/VOCtrainval.extracted").is_file()
    assert (tmp_path / "resources/voc2012/SegmentationClassAug.zip.extracted").is_file()
    root = tmp_path / "resources/voc2012/VOCdevkit/VOC2012"
    assert len(list((root / "JPEGImages").glob("*.jpg"))) == N_TRAIN + N_VAL
    aug = tmp_path / "resources/voc2012/SegmentationClassAug"
    assert len(list(aug.glob("*.png"))) == N_TRAIN + N_VAL
    assert (tmp_path / "logs/voc2012/prepare_dataset.log").read_text()

    proc = snakemake(tmp_path, "-n", DATASET_JSON, config=config)
    assert "Nothing to be done" in proc.stdout + proc.stderr


@pytest.mark.slow
@pytest.mark.voc
def test_checksum_mismatch_fails_and_leaves_nothing(
    tmp_path: Path, mini_archives: dict, http_mirror: str
) -> None:
    md5 = {**mini_archives["md5"], VOC_TAR: "0" * 32}
    config = _download_config(http_mirror, md5)
    proc = snakemake(tmp_path, "--cores", "2", DATASET_JSON, config=config, check=False)
    assert proc.returncode != 0
    log = tmp_path / "logs/downloads" / f"{VOC_TAR}.log"
    out = proc.stdout + proc.stderr + (log.read_text() if log.is_file() else "")
    assert "checksum mismatch" in out
    assert mini_archives["md5"][VOC_TAR] in out  # the message names the md5 actually received
    downloads = tmp_path / "resources/downloads"
    assert not (downloads / VOC_TAR).exists()
    assert not (downloads / f"{VOC_TAR}.part").exists()
    assert not (tmp_path / "resources/voc2012/VOCtrainval.extracted").exists()
    assert not (tmp_path / DATASET_JSON).exists()


@pytest.mark.slow
def test_manual_item_stops_with_instructions_until_in_place(tmp_path: Path) -> None:
    target = "resources/manual/voc2012_saliency.ok"
    proc = snakemake(tmp_path, target, "--cores", "1", check=False)
    assert proc.returncode != 0
    log = tmp_path / "logs/manual/voc2012_saliency.log"
    out = proc.stdout + proc.stderr
    for text in (out, log.read_text()):
        assert SALIENCY_DRIVE_ID in text
        assert "resources/voc2012/SALImages" in text
    assert not (tmp_path / target).exists()

    sal = tmp_path / "resources/voc2012/SALImages"
    sal.mkdir(parents=True)
    (sal / "2007_000032.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    snakemake(tmp_path, target, "--cores", "1")
    assert "SALImages" in (tmp_path / target).read_text()


@pytest.mark.slow
@pytest.mark.voc
def test_existing_voc_root_is_indexed_without_download(tmp_path: Path, voc_mini_root: Path) -> None:
    config = _voc_config()
    config["datasets"]["voc2012"].update(
        download=False,
        root=str(voc_mini_root),
        aug_source="none",
        label_source="masks",
        splits={"train_aug": "subset_train", "train": "subset_train", "val": "subset_val"},
    )
    snakemake(tmp_path, "--cores", "2", DATASET_JSON, config=config)
    info = json.loads((tmp_path / DATASET_JSON).read_text())
    assert info["images"] == {"train_aug": 330, "train": 330, "val": 346}
    assert info["root"] == str(voc_mini_root)
    assert info["aug_masks_train"] is None
    assert not (tmp_path / "resources/downloads").exists()
    assert not (tmp_path / "logs/downloads").exists()

"""The MS-COCO 2014 path of the workflow, end to end and offline.

A miniature COCO is made from the real VOC 2012 subset (tests/coco_data.py: VOC masks turned
into instance annotations, images packed like the official zips) and served from 127.0.0.1;
the workflow downloads the three zips (md5-verified), extracts them, converts the annotations
to masks in 2 shards per set and indexes the dataset with config/coco2014.yaml. The converted
masks must be the VOC masks with VOC's classes renamed to COCO's (the 255 boundary band, which
no annotation covers, becomes background), with the two instances added on purpose painted by
the convention (smaller on top). Also: a copy already on disk (``download: false``) and a
truncated annotation file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from coco_data import (
    COCO_CATEGORIES,
    COCO_LABEL,
    VOC_VALUE_TO_COCO_LABEL,
    ZIPS,
    MiniSet,
    build_set,
    write_layout,
    write_saliency,
    write_zips,
)
from helpers import serve_folder
from PIL import Image
from workflow_utils import REPO_ROOT, TINY_CONFIG, snakemake

from smaf.config import deep_merge
from smaf.data.index import DatasetIndex
from smaf.io import load_mask

N_TRAIN, N_VAL = 10, 6
INDEX = "results/coco2014/data/index.csv"
DATASET_JSON = "results/coco2014/data/dataset.json"


pytestmark = pytest.mark.usefixtures("direct_localhost")  # reach 127.0.0.1 directly


def _coco_config() -> dict:
    config = yaml.safe_load((REPO_ROOT / "config" / "coco2014.yaml").read_text())
    config["datasets"]["coco2014"]["mask_shards"] = 2
    return config


def _tiny_training(config: dict) -> dict:
    """The COCO preset with the demo's thin networks and the tests' tiny training budget."""
    demo = yaml.safe_load((REPO_ROOT / "config.yaml").read_text())
    tiny = {k: demo[k] for k in ("model", "train", "pretrain", "self_train", "seeds", "deeplab")}
    tiny["deeplab"]["test"]["submission"] = False  # COCO has no test split here
    return deep_merge({**config, **tiny}, {k: v for k, v in TINY_CONFIG.items() if k != "datasets"})


def _ids(voc_root: Path, name: str) -> list[str]:
    path = voc_root / "ImageSets" / "Segmentation" / f"{name}.txt"
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def mini_coco(voc_mini_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The miniature's two sets, its zips in ``<tmp>/srv/mirror/`` and their md5s."""
    train = _ids(voc_mini_root, "subset_train")
    val = _ids(voc_mini_root, "subset_val")
    sets = [
        build_set(
            voc_mini_root,
            "train2014",
            train[:N_TRAIN],
            empty_ids=[train[N_TRAIN]],
            crowd_id=train[1],
            overlap_id=train[2],
        ),
        build_set(voc_mini_root, "val2014", val[:N_VAL], empty_ids=[val[N_VAL]]),
    ]
    base = tmp_path_factory.mktemp("coco_archives")
    zips = write_zips(voc_mini_root, sets, base / "srv" / "mirror")
    md5 = {name: hashlib.md5(path.read_bytes()).hexdigest() for name, path in zips.items()}
    return {"dir": base / "srv", "sets": sets, "md5": md5, "voc_root": voc_mini_root}


@pytest.fixture(scope="module")
def http_mirror(mini_coco: dict) -> Iterator[str]:
    """Base URL of a throw-away HTTP server on 127.0.0.1 serving the zips."""
    with serve_folder(mini_coco["dir"]) as url:
        yield url


def _expected_mask(voc_root: Path, mini: MiniSet, stem: str) -> np.ndarray:
    """The VOC mask in COCO labels: the band and background 0, the added instances by area."""
    voc = np.asarray(Image.open(voc_root / "SegmentationClass" / f"{mini.voc_ids[stem]}.png"))
    lut = np.zeros(256, np.uint8)
    for value, label in VOC_VALUE_TO_COCO_LABEL.items():
        lut[value] = label
    want = lut[voc]
    for name, region in mini.rects.get(stem, []):
        if name == "cat":  # larger than every object: beneath them all
            want[region & ((voc == 0) | (voc == 255))] = COCO_LABEL["cat"]
    for name, region in mini.rects.get(stem, []):
        if name == "dog":  # inside the largest object, smaller: on top of it
            want[region] = COCO_LABEL["dog"]
    return want


def _check_masks_and_labels(workdir: Path, mini_coco: dict) -> None:
    """Every converted mask is the expected one; the index has the annotated images only."""
    voc_root = mini_coco["voc_root"]
    index = DatasetIndex.read(workdir / INDEX)
    for mini in mini_coco["sets"]:
        for stem in mini.voc_ids:
            got = load_mask(workdir / "resources/coco2014/masks" / mini.name / f"{stem}.png")
            if stem in mini.empty:
                assert not got.any() and stem not in index, stem
                continue
            want = _expected_mask(voc_root, mini, stem)
            np.testing.assert_array_equal(got, want, err_msg=stem)
            # Image labels: the classes of the annotations, i.e. those of the expected mask.
            labels = np.flatnonzero(index.labels(stem)) + 1
            np.testing.assert_array_equal(labels, sorted(set(np.unique(want).tolist()) - {0}))
            assert Path(index.mask_path(stem)) == Path(
                "resources/coco2014/masks", mini.name, f"{stem}.png"
            )


@pytest.mark.slow
@pytest.mark.voc
def test_download_extract_convert_and_index_mini_coco(
    tmp_path: Path, mini_coco: dict, http_mirror: str
) -> None:
    config = _coco_config()
    config["downloads"] = {
        name: {"url": f"{http_mirror}/{name}", "md5": mini_coco["md5"][name]} for name in ZIPS
    }
    # EPS's saliency maps are a manual item: put in place by hand (here, from the VOC masks).
    write_saliency(
        mini_coco["voc_root"], mini_coco["sets"], tmp_path / "resources/coco2014/SALImages"
    )
    snakemake(tmp_path, "--cores", "2", INDEX, config=config)

    info = json.loads((tmp_path / DATASET_JSON).read_text())
    assert info["images"] == {"train_aug": N_TRAIN, "train": N_TRAIN, "val": N_VAL}
    assert info["images_without_annotations"] == {"train2014": 1, "val2014": 1}
    assert info["images_in_sets"] == {"train2014": N_TRAIN + 1, "val2014": N_VAL + 1}
    assert info["class_names"] == ["background", *(n for _, n in COCO_CATEGORIES)]
    assert info["num_classes"] == 80 and info["saliency_maps_train_aug"] == N_TRAIN
    train = mini_coco["sets"][0]
    assert len(train.rects) == 1 and len(train.crowd) == 1  # the cases made on purpose
    index = DatasetIndex.read(tmp_path / INDEX)
    assert index.ids("train_aug") == sorted(s for s in train.voc_ids if s not in train.empty)
    _check_masks_and_labels(tmp_path, mini_coco)
    # The crowd region (an uncompressed RLE) is painted with its class.
    (stem, region), = train.crowd.items()  # fmt: skip
    mask = load_mask(tmp_path / "resources/coco2014/masks/train2014" / f"{stem}.png")
    assert len(np.unique(mask[region])) == 1 and mask[region][0] > 0

    # Downloads verified, archives extracted behind their markers, shards gathered.
    for name in ZIPS:
        assert not (tmp_path / "resources/downloads" / f"{name}.part").exists()
        assert (tmp_path / "resources/coco2014" / f"{name}.extracted").is_file()
    assert len(list((tmp_path / "resources/coco2014/train2014").glob("*.jpg"))) == N_TRAIN + 1
    for coco_set, n in (("train2014", N_TRAIN + 1), ("val2014", N_VAL + 1)):
        masks = tmp_path / "resources/coco2014/masks" / coco_set
        shards = [json.loads((masks / f"shard{k}of2.done").read_text()) for k in (1, 2)]
        assert [len(s["stems"]) for s in shards] == [n // 2, n - n // 2]
        gathered = json.loads((tmp_path / f"resources/coco2014/masks/{coco_set}.done").read_text())
        assert (gathered["images"], gathered["without_annotations"]) == (n, 1)
        assert len(list(masks.glob("*.png"))) == n
    proc = snakemake(tmp_path, "-n", INDEX, config=config)
    assert "Nothing to be done" in proc.stdout + proc.stderr

    # A shard killed half-way resumes: as if the run had stopped while it converted, its marker
    # and one of its masks are gone, and nothing after it was made; its other masks are kept.
    masks = tmp_path / "resources/coco2014/masks/train2014"
    marker = masks / "shard2of2.done"
    lost = json.loads(marker.read_text())["stems"][0]
    for path in (marker, masks / f"{lost}.png", masks.with_suffix(".done")):
        path.unlink()
    for path in (tmp_path / "results/coco2014/data").iterdir():
        path.unlink()
    snakemake(tmp_path, "--cores", "2", INDEX, config=config)
    again = json.loads(marker.read_text())
    assert (again["written"], again["skipped"]) == (1, len(again["stems"]) - 1)
    assert json.loads((masks / "shard1of2.done").read_text())["written"] == (N_TRAIN + 1) // 2
    _check_masks_and_labels(tmp_path, mini_coco)

    # Then the whole pipeline on it to the scores, with the tiny training budget: 81 classes
    # end to end (the figures and report are the tiny runs' to test).
    snakemake(tmp_path, "--cores", "2", "results/summary.csv", config=_tiny_training(config))
    summary = pd.read_csv(tmp_path / "results/summary.csv")
    assert set(summary["stage"]) == {
        "eps_seed", "eps_crf", "smaf_seed", "smaf_crf", "deeplab", "deeplab_crf"
    }  # fmt: skip
    assert summary["miou"].between(0, 1).all()
    per_class = pd.read_csv(
        tmp_path / "results/coco2014/default/eval/deeplab_crf_val_SegmentationClass.csv"
    )
    assert len(per_class) == 82  # 81 labels and the mean


@pytest.mark.slow
@pytest.mark.voc
def test_existing_copy_is_converted_without_download_and_bad_json_stops(
    tmp_path: Path, mini_coco: dict
) -> None:
    root = write_layout(mini_coco["voc_root"], mini_coco["sets"], tmp_path / "shared" / "coco")
    config = _coco_config()
    config["datasets"]["coco2014"].update(download=False, root=str(root))
    config["pretrain"] = {**config["pretrain"], "method": "cam"}  # no saliency maps here
    val_json = root / "annotations" / "instances_val2014.json"
    text = val_json.read_text()
    val_json.write_text(text[: len(text) // 2])  # truncated

    proc = snakemake(tmp_path, "--cores", "2", INDEX, config=config, check=False)
    assert proc.returncode != 0
    logs = "".join(p.read_text() for p in (tmp_path / "logs/coco2014/coco_masks").glob("val*.log"))
    assert f"annotation file {val_json} is not valid JSON" in logs
    assert not list((tmp_path / "resources/coco2014/masks/val2014").glob("*.done"))
    assert not list((tmp_path / "resources/coco2014/masks/val2014").glob("*.png"))
    assert not (tmp_path / INDEX).exists()

    val_json.write_text(text)
    snakemake(tmp_path, "--cores", "2", INDEX, config=config)
    info = json.loads((tmp_path / DATASET_JSON).read_text())
    assert info["root"] == str(root)
    assert info["images"] == {"train_aug": N_TRAIN, "train": N_TRAIN, "val": N_VAL}
    assert not (tmp_path / "resources/downloads").exists()
    assert not list((tmp_path / "resources/coco2014").glob("*.extracted"))
    index = DatasetIndex.read(tmp_path / INDEX)
    assert str(index.image_path(index.ids("val")[0])).startswith(str(root / "val2014"))
    _check_masks_and_labels(tmp_path, mini_coco)

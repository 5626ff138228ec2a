"""smaf predict: reading any image, DeepLab masks equal to predict_split's, CRF, CAMs, resume."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from smaf.cam import CAMConfig, class_maps, seed_labels
from smaf.crf import DenseCRF
from smaf.data.images import find_images, folder_fingerprint
from smaf.data.index import DatasetIndex, ImageRecord
from smaf.errors import ConfigError, DataError, SmafError
from smaf.inference import infer_logits, upsampled_probs
from smaf.io import load_image as read_rgb
from smaf.io import load_mask, voc_palette
from smaf.models.build import ModelConfig, build_classifier
from smaf.models.checkpoint import save_model
from smaf.models.deeplab import DeepLabConfig, build_deeplab, load_deeplab, save_deeplab
from smaf.predict.folder import predict_folder
from smaf.predict.model import batch_logits, load_predictor, read_class_names
from smaf.predict.outputs import class_fractions, heat_map, overlay_image
from smaf.stages.deeplab import predict_split
from smaf.transforms import normalize

#: Tiny networks: one torch thread (the machine is shared).
pytestmark = pytest.mark.usefixtures("one_torch_thread")

C = 3
NAMES = ["background", "cat", "dog", "bird"]


def _smooth_rgb(h: int, w: int, seed: int) -> np.ndarray:
    """A blurry colour image (regions, not noise: the CRF and the network see structure)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 8 + 2, w // 8 + 2, 3), dtype=np.uint8)
    big = Image.fromarray(small).resize((w, h), Image.BILINEAR)
    return np.asarray(big)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    deeplab = build_deeplab(
        DeepLabConfig(backbone="resnet38d", width=0.125, freeze_bn=False, num_classes=C)
    )
    save_deeplab(tmp / "deeplab.pt", deeplab, {"stage": "deeplab", "class_names": NAMES})
    torch.manual_seed(0)
    clf = build_classifier(
        ModelConfig(width=0.125, head="eps", num_classes=C, freeze_bn=False, freeze_stem=False)
    )
    # Backbone features are >= 0 (after a ReLU): positive weights make class 1 present in
    # every image, negative ones make classes 2 and 3 absent.
    with torch.no_grad():
        w = clf.head.fc8.weight  # [C+1, F, 1, 1]
        w[1] = w[1].abs() + 1e-2
        w[2:] = -(w[2:].abs() + 1e-2)
    save_model(tmp / "classifier.pt", clf, {"stage": "self_train", "class_names": NAMES})
    return {"deeplab": tmp / "deeplab.pt", "classifier": tmp / "classifier.pt", "tmp": tmp}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Images of every kind in nested folders; returns the root and the expected (H, W)."""
    root = tmp_path_factory.mktemp("images") / "photos"
    (root / "sub" / "deeper").mkdir(parents=True)
    sizes = {}

    def put(rel, img, **kw):
        img.save(root / rel, **kw)
        sizes[rel] = (img.height, img.width)

    put("plain.png", Image.fromarray(_smooth_rgb(40, 56, 0)))
    put("sub/photo.jpg", Image.fromarray(_smooth_rgb(48, 40, 1)), quality=95)
    put("sub/deeper/grey.png", Image.fromarray(_smooth_rgb(32, 44, 2)[:, :, 0]))
    put("sixteen.png", Image.fromarray(_smooth_rgb(36, 36, 3)[:, :, 1].astype(np.uint16) * 257))
    rgba = np.dstack([_smooth_rgb(40, 40, 4), np.full((40, 40), 128, np.uint8)])
    put("alpha.png", Image.fromarray(rgba, mode="RGBA"))
    put("sub/name with spaceé.png", Image.fromarray(_smooth_rgb(33, 47, 5)))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    Image.fromarray(_smooth_rgb(24, 40, 6)).save(root / "rotated.jpg", exif=exif, quality=95)
    sizes["rotated.jpg"] = (40, 24)  # displayed size: the stored 24 × 40 turned upright
    (root / "notes.txt").write_text("not an image")
    Image.fromarray(_smooth_rgb(16, 16, 7)).save(root / ".hidden.png")
    return root, sizes


# ----------------------------------------------------------------------- reading images
def test_read_rgb_converts_every_mode(tmp_path):
    v = np.array([[0, 25700, 65535, 300, 128, 129]], dtype=np.uint16)
    Image.fromarray(v).save(tmp_path / "16.png")
    with Image.open(tmp_path / "16.png") as im:
        assert im.mode.startswith("I")  # really stored as 16-bit
    # round(v / 257) by hand: 0, 100, 255, 1.17 -> 1, 0.498 -> 0, 0.502 -> 1
    expected = np.array([[0, 100, 255, 1, 0, 1]], dtype=np.uint8)
    got = read_rgb(tmp_path / "16.png")
    assert got.dtype == np.uint8 and got.shape == (1, 6, 3)
    assert (got == expected[:, :, None]).all()

    rgb = _smooth_rgb(8, 8, 0)
    rgba = np.dstack([rgb, np.arange(64, dtype=np.uint8).reshape(8, 8)])  # alpha 0 included
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    assert (read_rgb(tmp_path / "a.png") == rgb).all()  # alpha dropped, colours kept

    grey = rgb[:, :, 0]
    Image.fromarray(grey).save(tmp_path / "g.png")
    assert (read_rgb(tmp_path / "g.png") == grey[:, :, None]).all()

    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "c.jpg")
    with Image.open(tmp_path / "c.jpg") as im:
        assert im.mode == "CMYK"
        assert (read_rgb(tmp_path / "c.jpg") == np.asarray(im.convert("RGB"))).all()


def test_read_rgb_applies_exif_orientation(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(_smooth_rgb(24, 40, 0)).save(tmp_path / "r.jpg", exif=exif)
    with Image.open(tmp_path / "r.jpg") as im:
        stored = np.asarray(im.convert("RGB"))  # [24, 40, 3] as stored
    got = read_rgb(tmp_path / "r.jpg")
    assert got.shape == (40, 24, 3)
    assert (got == np.rot90(stored, k=-1)).all()  # turned clockwise


def test_unreadable_image_is_a_data_error(tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(DataError, match="broken.jpg"):
        read_rgb(tmp_path / "broken.jpg")


def test_find_images_lists_nested_images_and_refuses_name_clashes(folder, tmp_path):
    root, sizes = folder
    found = find_images(root)
    assert [str(f.rel) for f in found] == sorted(sizes)
    assert {str(f.output(".png")) for f in found} >= {"sub/name with spaceé.png", "rotated.png"}
    # an output folder inside the images is not read back as images
    assert not any(str(f.rel).startswith("sub/") for f in find_images(root, (root / "sub",)))
    (tmp_path / "a.jpg").write_bytes(b"")
    (tmp_path / "a.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"a\.jpg and a\.png"):
        find_images(tmp_path)


def test_folder_fingerprint_follows_the_files(tmp_path):
    Image.fromarray(_smooth_rgb(8, 8, 0)).save(tmp_path / "x.png")
    before = folder_fingerprint(tmp_path)
    assert folder_fingerprint(tmp_path) == before
    (tmp_path / "notes.txt").write_text("ignored")
    assert folder_fingerprint(tmp_path) == before
    Image.fromarray(_smooth_rgb(8, 9, 0)).save(tmp_path / "y.png")
    assert folder_fingerprint(tmp_path) != before


# ---------------------------------------------------------------------------- the pieces
def test_overlay_and_fractions_by_hand():
    image = np.array([[[10, 20, 30], [100, 100, 100]]], dtype=np.uint8)  # [1, 2, 3]
    mask = np.array([[0, 1]], dtype=np.uint8)
    out = overlay_image(image, mask, alpha=0.5)
    assert out[0, 0].tolist() == [10, 20, 30]  # background untouched
    assert out[0, 1].tolist() == [114, 50, 50]  # (100 + VOC colour 1 = (128, 0, 0)) / 2
    assert class_fractions(np.array([[0, 1, 1, 3]]), 3).tolist() == [0.25, 0.5, 0.0, 0.25]
    # jet(0) is dark blue (0, 0, 0.5): alpha 1 shows the colour map alone
    assert heat_map(image[:, :1], np.zeros((1, 1)), alpha=1.0)[0, 0].tolist() == [0, 0, 128]


def test_class_names_files(tmp_path, models):
    (tmp_path / "c.txt").write_text("cat\ndog\n\nbird\n")
    (tmp_path / "c.json").write_text(json.dumps({"class_names": NAMES}))
    assert read_class_names(tmp_path / "c.txt") == NAMES[1:]
    assert read_class_names(tmp_path / "c.json") == NAMES
    assert load_predictor(models["deeplab"], tmp_path / "c.txt").class_names == NAMES
    (tmp_path / "two.txt").write_text("cat\ndog\n")
    with pytest.raises(SmafError, match="trained for 3 classes but .*two.txt names 2"):
        load_predictor(models["deeplab"], tmp_path / "two.txt")


def test_batched_logits_equal_single_image_logits(models):
    model, _ = load_deeplab(models["deeplab"])
    model.eval()
    images = [_smooth_rgb(40, 48, s) for s in range(3)]
    batched = batch_logits(model, images, torch.device("cpu"), flip=True)
    for image, lg in zip(images, batched, strict=True):
        single = infer_logits(model, image, torch.device("cpu"), flip=True)
        torch.testing.assert_close(lg, single, atol=1e-5, rtol=1e-4)


def test_batches_of_same_size_images_give_the_single_image_masks(models, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for k, (h, w) in enumerate([(40, 48), (40, 48), (36, 52), (40, 48)]):
        Image.fromarray(_smooth_rgb(h, w, 10 + k)).save(images / f"{k}.png")
    one = predict_folder(models["deeplab"], images, tmp_path / "one", device="cpu", flip=True)
    three = predict_folder(
        models["deeplab"], images, tmp_path / "three", device="cpu", flip=True, batch_size=3
    )
    assert one["predicted"] == three["predicted"] == 4
    for k in range(4):
        a = load_mask(tmp_path / "one" / "masks" / f"{k}.png")
        b = load_mask(tmp_path / "three" / "masks" / f"{k}.png")
        # equal up to float rounding between batch sizes (a pixel whose top logits tie)
        assert a.shape == b.shape and np.mean(a != b) < 1e-3


# --------------------------------------------------------------------------- DeepLab end to end
def _masks(out):
    return {str(p.relative_to(out / "masks")): p for p in (out / "masks").rglob("*.png")}


def test_deeplab_masks_match_predict_split(models, folder, tmp_path):
    root, sizes = folder
    out = tmp_path / "out"
    summary = predict_folder(models["deeplab"], root, out, device="cpu", overlay=True, batch_size=2)
    assert summary["predicted"] == len(sizes) and summary["skipped"] == 0
    masks = _masks(out)
    assert set(masks) == {os.path.splitext(r)[0] + ".png" for r in sizes}
    for rel, (h, w) in sizes.items():
        stem = os.path.splitext(rel)[0]
        with Image.open(out / "masks" / f"{stem}.png") as im:
            assert im.mode == "P" and im.size == (w, h)
        assert load_mask(out / "masks" / f"{stem}.png").max() <= C
        with Image.open(out / "overlay" / f"{stem}.jpg") as im:
            assert im.size == (w, h)

    # The same model through the pipeline's own inference on the plain RGB files.
    plain = ["plain.png", "sub/photo.jpg", "sub/name with spaceé.png"]
    records = [
        ImageRecord(image_id=f"img{k}", image=str(root / rel), roles={"test"})
        for k, rel in enumerate(plain)
    ]
    index = DatasetIndex.build(records, NAMES)
    predict_split(models["deeplab"], index, "test", tmp_path / "ref", device="cpu")
    for k, rel in enumerate(plain):
        ours = load_mask(out / "masks" / (os.path.splitext(rel)[0] + ".png"))
        ref = load_mask(tmp_path / "ref" / f"img{k}.png")
        assert (ours == ref).all()

    doc = json.loads((out / "classes.json").read_text())
    pal = voc_palette()
    assert [c["name"] for c in doc["classes"]] == NAMES
    assert [c["color"] for c in doc["classes"]] == [pal[3 * v : 3 * v + 3] for v in range(C + 1)]

    areas = pd.read_csv(out / "areas.csv", keep_default_na=False)
    assert list(areas.columns) == ["image", "width", "height", *NAMES]
    assert sorted(areas["image"]) == sorted(sizes)
    np.testing.assert_allclose(areas[NAMES].sum(axis=1), 1.0, atol=1e-9)
    for row in areas.itertuples(index=False):
        mask = load_mask(out / "masks" / (os.path.splitext(row.image)[0] + ".png"))
        counts = np.array([(mask == v).sum() for v in range(C + 1)]) / mask.size
        np.testing.assert_allclose([getattr(row, n) for n in NAMES], counts)
        assert (row.height, row.width) == sizes[row.image]


def test_resume_skips_finished_images_and_refuses_other_settings(models, folder, tmp_path):
    root, sizes = folder
    out = tmp_path / "out"
    predict_folder(models["deeplab"], root, out, device="cpu")
    masks = _masks(out)
    mtimes = {k: p.stat().st_mtime_ns for k, p in masks.items()}
    again = predict_folder(models["deeplab"], root, out, device="cpu", overlay=True)
    assert again["predicted"] == 0 and again["reused"] == len(sizes)
    assert {k: p.stat().st_mtime_ns for k, p in masks.items()} == mtimes
    assert len(list((out / "overlay").rglob("*.jpg"))) == len(sizes)  # made from the masks
    masks["plain.png"].unlink()
    third = predict_folder(models["deeplab"], root, out, device="cpu")
    assert third["predicted"] == 1 and third["reused"] == len(sizes) - 1
    with pytest.raises(SmafError, match="other settings .*crf"):
        predict_folder(models["deeplab"], root, out, device="cpu", crf=True)
    redo = predict_folder(models["deeplab"], root, out, device="cpu", crf=True, overwrite=True)
    assert redo["predicted"] == len(sizes)
    assert not (out / "overlay").exists()  # outputs of the old settings removed


def test_a_replaced_photo_is_predicted_again_never_served_stale(models, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for k in range(2):
        Image.fromarray(_smooth_rgb(40, 48, 20 + k)).save(images / f"{k}.png")
    out = tmp_path / "out"
    predict_folder(models["deeplab"], images, out, device="cpu")
    kept = (out / "masks" / "1.png").stat().st_mtime_ns
    # The user replaces photo 0 by another one of the same size (a later mtime).
    photo = images / "0.png"
    before = photo.stat()
    Image.fromarray(_smooth_rgb(40, 48, 99)).save(photo)
    os.utime(photo, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))
    again = predict_folder(models["deeplab"], images, out, device="cpu")
    assert again["predicted"] == 1 and again["reused"] == 1
    assert (out / "masks" / "1.png").stat().st_mtime_ns == kept
    fresh = tmp_path / "fresh"
    predict_folder(models["deeplab"], images, fresh, device="cpu")
    np.testing.assert_array_equal(
        load_mask(out / "masks" / "0.png"), load_mask(fresh / "masks" / "0.png")
    )


def test_crf_equals_densecrf_by_hand(models, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    image = _smooth_rgb(48, 64, 3)
    Image.fromarray(image).save(images / "x.png")
    predict_folder(models["deeplab"], images, tmp_path / "crf", device="cpu", crf=True)
    model, _ = load_deeplab(models["deeplab"])
    probs = upsampled_probs(infer_logits(model.eval(), image, torch.device("cpu")), (48, 64))
    expected = DenseCRF()(image, probs.numpy()).argmax(0)
    assert (load_mask(tmp_path / "crf" / "masks" / "x.png") == expected).all()


def test_unreadable_images_are_skipped_or_stop_the_run(models, tmp_path, caplog):
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(_smooth_rgb(32, 32, 0)).save(images / "good.png")
    (images / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    with caplog.at_level(logging.WARNING, logger="smaf.predict"):
        summary = predict_folder(models["deeplab"], images, tmp_path / "out", device="cpu")
    assert summary["skipped_images"] == ["broken.jpg"] and summary["predicted"] == 1
    assert any("skipping broken.jpg" in r.getMessage() for r in caplog.records)
    manifest = json.loads((tmp_path / "out" / "predict.json").read_text())
    assert manifest["skipped_images"] == ["broken.jpg"] and manifest["finished"]
    with pytest.raises(DataError, match="broken.jpg"):
        predict_folder(models["deeplab"], images, tmp_path / "strict", device="cpu", strict=True)


def test_bad_input_is_one_clear_error(models, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no images"):
        predict_folder(models["deeplab"], empty, tmp_path / "o1", device="cpu")
    (tmp_path / "notes.pt").write_text("not a model")
    with pytest.raises(SmafError, match="not a SMAF model file"):
        predict_folder(tmp_path / "notes.pt", empty, tmp_path / "o2", device="cpu")
    with pytest.raises(SmafError, match="CAMs need a classifier"):
        predict_folder(models["deeplab"], empty, tmp_path / "o3", device="cpu", cams=True)
    with pytest.raises(ConfigError, match="CRF"):
        predict_folder(models["classifier"], empty, tmp_path / "o4", device="cpu", crf=True)
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o3").exists()


# ------------------------------------------------------------------------------------- CAMs
def test_classifier_cams_heat_maps_and_seed_masks(models, folder, tmp_path):
    root, sizes = folder
    out = tmp_path / "cams"
    cfg = {"scales": [0.5, 1.0], "flip": True}
    summary = predict_folder(models["classifier"], root, out, device="cpu", **cfg, thr=0.3)
    assert summary["predicted"] == len(sizes) and summary["settings"]["kind"] == "classifier"
    heat = sorted(str(p.relative_to(out / "cams")) for p in (out / "cams").rglob("*.png"))
    assert heat == sorted(os.path.splitext(r)[0] + "_cat.png" for r in sizes)  # class 1 only

    clf = load_predictor(models["classifier"]).model
    image = read_rgb(root / "plain.png")
    with torch.no_grad():
        present = (clf(normalize(image)[None])["logits"][0] > 0).numpy()
    assert present.tolist() == [True, False, False]
    maps = class_maps(clf, image, present.astype(np.float32), CAMConfig((0.5, 1.0), flip=True))
    assert (load_mask(out / "masks" / "plain.png") == seed_labels(maps, 0.3)).all()
    with Image.open(out / "cams" / "plain_cat.png") as im:
        assert (np.asarray(im) == heat_map(image, maps[0].numpy())).all()


# ------------------------------------------------------------------------------ real images
@pytest.mark.voc
def test_real_voc_images_in_a_user_layout(models, voc_mini_root, tmp_path):
    """Real photos copied into nested folders (a JPEG as is, a PNG, a grey and an EXIF-rotated
    re-save): masks of the displayed size; the untouched JPEG gives predict_split's mask."""
    jpegs = sorted((voc_mini_root / "JPEGImages").glob("*.jpg"))[:4]
    images = tmp_path / "field photos"
    (images / "day 1").mkdir(parents=True)
    (images / "day 2").mkdir()
    (images / "day 1" / "as_is.jpg").write_bytes(jpegs[0].read_bytes())
    with Image.open(jpegs[1]) as im:
        im.save(images / "day 1" / "resaved.png")
    with Image.open(jpegs[2]) as im:
        im.convert("L").save(images / "day 2" / "grey.jpg")
    exif = Image.Exif()
    exif[0x0112] = 8  # Orientation: rotate 90° counter-clockwise to display
    with Image.open(jpegs[3]) as im:
        im.save(images / "day 2" / "phone.jpg", exif=exif)
        stored = im.size  # (W, H)
    summary = predict_folder(models["deeplab"], images, tmp_path / "out", device="cpu")
    assert summary["predicted"] == 4
    with Image.open(tmp_path / "out" / "masks" / "day 2" / "phone.png") as im:
        assert im.size == stored[::-1]  # upright: width and height swapped
    index = DatasetIndex.build(
        [ImageRecord(image_id="a", image=str(jpegs[0]), roles={"test"})], NAMES
    )
    predict_split(models["deeplab"], index, "test", tmp_path / "ref", device="cpu")
    ours = load_mask(tmp_path / "out" / "masks" / "day 1" / "as_is.png")
    assert (ours == load_mask(tmp_path / "ref" / "a.png")).all()


# ------------------------------------------------------------------ what predict may delete
def _dataset_folder(tmp_path):
    """A user's dataset folder: images/ and their ground-truth masks/ (and labels.csv)."""
    ds = tmp_path / "leaves"
    (ds / "images").mkdir(parents=True)
    (ds / "masks" / "sub").mkdir(parents=True)
    for i in range(4):
        Image.fromarray(_smooth_rgb(32, 32, i)).save(ds / "images" / f"a{i}.png")
        Image.fromarray(np.full((32, 32), 1, np.uint8)).save(ds / "masks" / f"a{i}.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(ds / "masks" / "sub" / "b.png")
    (ds / "labels.csv").write_text("image,labels\na0.png,cat\n")
    return ds


def test_predict_never_deletes_files_it_did_not_write(models, tmp_path):
    ds = _dataset_folder(tmp_path)
    before = sorted(p.relative_to(ds) for p in ds.rglob("*"))
    for overwrite in (False, True):
        with pytest.raises(SmafError, match=r"holds 10 file\(s\) smaf did not write \(labels.c"):
            predict_folder(models["deeplab"], ds / "images", ds, device="cpu", overwrite=overwrite)
    assert sorted(p.relative_to(ds) for p in ds.rglob("*")) == before  # nothing touched


def test_overwrite_removes_only_the_files_its_manifest_lists(models, tmp_path):
    images = _dataset_folder(tmp_path) / "images"
    out = tmp_path / "pred"
    predict_folder(models["deeplab"], images, out, device="cpu", overlay=True)
    manifest = json.loads((out / "predict.json").read_text())
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert manifest["files"] == written and "masks/a0.png" in written
    assert not (out / "predict-files.txt").exists()  # folded into the manifest
    redo = predict_folder(models["deeplab"], images, out, device="cpu", crf=True, overwrite=True)
    assert redo["predicted"] == 4 and not (out / "overlay").exists()
    # A file the user put there is named, refused and kept, --overwrite or not.
    (out / "masks" / "mine.png").write_bytes(b"user data")
    with pytest.raises(SmafError, match=r"1 file\(s\) smaf did not write \(masks/mine.png\)"):
        predict_folder(models["deeplab"], images, out, device="cpu", overwrite=True)
    assert (out / "masks" / "mine.png").read_bytes() == b"user data"
    assert (out / "masks" / "a0.png").is_file()


def test_an_interrupted_run_knows_its_files(models, tmp_path, monkeypatch):
    images = _dataset_folder(tmp_path) / "images"
    out = tmp_path / "pred"
    import smaf.predict.outputs as outputs

    real, calls = outputs.save_mask, []

    def crash_on_third(path, mask):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt
        real(path, mask)

    monkeypatch.setattr(outputs, "save_mask", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        predict_folder(models["deeplab"], images, out, device="cpu")
    monkeypatch.undo()
    assert (out / "predict-files.txt").is_file()
    summary = predict_folder(models["deeplab"], images, out, device="cpu", crf=True, overwrite=True)
    assert summary["predicted"] == 4


# ---------------------------------------------------------------------------- messages
def test_images_may_be_files_or_several_paths(models, folder, tmp_path):
    root, _ = folder
    one = predict_folder(models["deeplab"], root / "plain.png", tmp_path / "one", device="cpu")
    assert one["predicted"] == 1 and (tmp_path / "one" / "masks" / "plain.png").is_file()
    both = [root / "sub", root / "plain.png"]
    many = predict_folder(models["deeplab"], both, tmp_path / "many", device="cpu")
    masks = tmp_path / "many" / "masks"
    assert many["predicted"] == 4  # named under their folder, or by their file name
    assert sorted(p.relative_to(masks).as_posix() for p in masks.rglob("*.png")) == [
        "deeper/grey.png",
        "name with spaceé.png",
        "photo.png",
        "plain.png",
    ]
    with pytest.raises(DataError, match=r"notes.txt is not an image file"):
        predict_folder(models["deeplab"], root / "notes.txt", tmp_path / "x", device="cpu")
    with pytest.raises(DataError, match=r"nothing.jpg: no such file or folder"):
        predict_folder(models["deeplab"], tmp_path / "nothing.jpg", tmp_path / "x", device="cpu")
    with pytest.raises(DataError, match=r"would both be written as masks/plain.png"):
        predict_folder(models["deeplab"], [root, root / "plain.png"], tmp_path / "x", device="cpu")


def test_out_equal_to_images_and_a_model_folder_are_named(models, tmp_path):
    images = _dataset_folder(tmp_path) / "images"
    with pytest.raises(SmafError, match=r"--out .*images is the images folder"):
        predict_folder(models["deeplab"], images, images, device="cpu")
    with pytest.raises(SmafError, match=r"is a folder, not a model file.*deeplab.pt"):
        predict_folder(models["tmp"], images, tmp_path / "o", device="cpu")
    empty = tmp_path / "empty_folder"
    empty.mkdir()
    with pytest.raises(SmafError, match=r"is a folder, not a model file.*model.pt of deeplab"):
        predict_folder(empty, images, tmp_path / "o", device="cpu")


def test_an_unreadable_photo_is_named_as_corrupt(models, tmp_path):
    images = tmp_path / "photos"
    images.mkdir()
    (images / "IMG_1.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(DataError) as exc:
        predict_folder(models["deeplab"], images, tmp_path / "o", device="cpu", strict=True)
    message = str(exc.value)
    assert "IMG_1.jpg" in message and "corrupt" in message and "dataset" not in message

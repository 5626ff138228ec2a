"""The report's figures: the maps they show come from the pipeline's own functions (the teacher's
multi-scale attention bit for bit, the seeds' stored maps), drawn with matplotlib (jet overlays
with a colour bar, label maps with a class legend, training curves); the figure rules and
Snakemake's report on the tiny workflow."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.image import AxesImage
from PIL import Image
from workflow_utils import TINY_CONFIG, snakemake

from smaf.cam import CAMConfig, class_maps, class_maps_per_scale
from smaf.data.index import DatasetIndex, ImageRecord
from smaf.fusion import reactivate
from smaf.io import load_image, save_image, save_maps, save_mask
from smaf.models.build import ModelConfig, build_classifier
from smaf.models.checkpoint import save_model
from smaf.report import curves, plots
from smaf.report.figures import make_scale_figures
from smaf.report.samples import Sample, pick_class_samples, pick_scale_samples, seed_maps
from smaf.report.saved_figures import make_eps_smaf_figure, make_label_figures

C = 3
NAMES = ["background", "a", "b", "c"]
#: The released code's settings (config/voc2012.yaml): what the old report ignored.
RELEASED_CAM = CAMConfig(scales=(0.5, 1.0, 1.5), flip=True, resize_mode="bicubic", eps=1e-5)


@pytest.fixture(scope="module")
def tiny_model() -> Iterator[torch.nn.Module]:
    """A random width-0.125 classifier; one torch thread meanwhile (tiny convolutions)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield build_classifier(ModelConfig(width=0.125, head="smaf", num_classes=C)).eval()
    torch.set_num_threads(threads)


def _image(seed: int, h: int = 40, w: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """A random image and a mask with one object of class 1 + seed % C (255 on its top edge)."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), dtype=np.uint8)
    mask[8:30, 10 : 10 + 6 * (seed + 1)] = 1 + seed % C
    mask[8, 10:40] = 255
    return image, mask


def _dataset(tmp: Path, n: int = 4) -> Path:
    """A 4-image dataset index (train: the first two, val: the others); returns index.csv."""
    records = []
    for i in range(n):
        image, mask = _image(i)
        save_image(tmp / "img" / f"im{i}.png", image)
        save_mask(tmp / "gt" / f"im{i}.png", mask)
        labels = np.zeros(C, np.float32)
        labels[i % C] = 1.0
        records.append(
            ImageRecord(
                f"im{i}",
                str(tmp / "img" / f"im{i}.png"),
                mask=str(tmp / "gt" / f"im{i}.png"),
                roles={"train"} if i < 2 else {"val"},
                labels=labels,
                width=48,
                height=40,
            )
        )
    DatasetIndex.build(records, NAMES, {"name": "tiny"}).write(tmp / "index.csv")
    return tmp / "index.csv"


def _heat_images(fig) -> list[AxesImage]:
    return [im for ax in fig.axes for im in ax.get_images() if im.get_array().ndim == 2]


# ------------------------------------------------------------------------------ the maps
def test_per_scale_maps_share_the_teachers_fused_map(tiny_model) -> None:
    image, _ = _image(0)
    labels = np.array([1.0, 0.0, 1.0], dtype=np.float32)
    per_scale, fused = class_maps_per_scale(tiny_model, image, labels, RELEASED_CAM)
    assert per_scale.shape == (3, C, 40, 48) and fused.shape == (C, 40, 48)
    assert torch.equal(fused, class_maps(tiny_model, image, labels, RELEASED_CAM))
    # Each scale alone = the teacher's computation restricted to that scale (and its flip).
    for k, s in enumerate(RELEASED_CAM.scales):
        one = CAMConfig(scales=(s,), flip=True, resize_mode="bicubic", eps=1e-5)
        torch.testing.assert_close(per_scale[k], class_maps(tiny_model, image, labels, one))
    assert torch.all(per_scale[:, 1] == 0)  # absent class denoised
    assert per_scale.amax() < 1.0  # eps: max / (max + 1e-5)


def test_sample_choice() -> None:
    areas = {
        "x": np.array([0.5, 0.4, 0.0, 0.1]),
        "y": np.array([0.9, 0.0, 0.0, 0.002]),  # below min_area: never chosen
        "z": np.array([0.7, 0.0, 0.3, 0.0]),
    }
    picked = pick_scale_samples(areas)
    assert [(i, c) for i, c, _ in picked] == [("x", 1), ("x", 3)]
    assert picked[0][2] == "large object (40% of the image)"
    assert pick_class_samples(areas, 2) == (3, ["x", "y"])  # class 3 is in the most images


def test_seed_maps_read_the_seeds_stage_files(tmp_path: Path) -> None:
    image, mask = _image(1)
    labels = np.array([0.0, 1.0, 0.0], dtype=np.float32)
    stored = np.zeros((C, 40, 48), dtype=np.float32)
    stored[1, :10] = 1.0
    save_maps(tmp_path / "img1.npz", torch.from_numpy(stored), labels)
    sample = Sample("img1", image, mask, labels, cls=2)
    np.testing.assert_array_equal(seed_maps(tmp_path, sample), stored)
    assert seed_maps(tmp_path / "absent", sample) is None


# ----------------------------------------------------------------------------- the plots
def test_attention_figures_overlay_jet_with_a_colour_bar(tiny_model) -> None:
    image, mask = _image(0)
    labels = np.array([1.0, 0.0, 1.0], dtype=np.float32)
    per_scale, fused = (
        m.numpy() for m in class_maps_per_scale(tiny_model, image, labels, RELEASED_CAM)
    )
    sample = Sample("img0", image, mask, labels, cls=1, note="test")
    fig = plots.scale_attention_figure([sample], [per_scale], [fused], NAMES, scales=(0.5, 1, 1.5))
    heat = _heat_images(fig)
    assert len(heat) == 4  # 3 scales + fused, each over its image
    assert {im.get_cmap().name for im in heat} == {"jet"}
    assert all(im.norm.vmin == 0.0 and im.norm.vmax == 1.0 for im in heat)
    np.testing.assert_array_equal(heat[-1].get_array(), fused[0])  # the class's fused channel
    titles = [ax.get_title() for ax in fig.axes]
    assert "fused (Eq. 5-6)" in titles and "scale ×1.5" in titles
    colorbars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(colorbars) == 1 and colorbars[0].get_xlabel() == "attention"

    target = reactivate(torch.from_numpy(fused)[None], 0.2)[0].numpy()
    fig4 = plots.reactivation_figure(
        [sample], [per_scale[1]], [fused], [target], NAMES, student=[fused]
    )
    assert len(_heat_images(fig4)) == 4
    reactivated = _heat_images(fig4)[2].get_array()
    # Eq. 8 by hand: class / max(thr, classes) at every pixel.
    expected = fused[0] / np.maximum(0.2, fused.max(0))
    np.testing.assert_allclose(reactivated, expected, rtol=1e-6)
    fig3 = plots.eps_smaf_figure([sample, sample], [fused, fused], [fused, fused], NAMES)
    assert len(_heat_images(fig3)) == 4 and fig3.axes[0].get_title() == "img0"
    # On the CLIP base the base's row and the title say CLIP, not EPS (issue 22).
    clip = plots.eps_smaf_figure([sample], [fused], [fused], NAMES, base="CLIP")
    texts = [t.get_text() for t in clip.texts] + [clip._suptitle.get_text()]
    assert any("CLIP vs SMAF" in t for t in texts) and not any("EPS" in t for t in texts)


def test_label_figure_has_a_legend_of_the_classes_that_occur(tmp_path: Path) -> None:
    image, mask = _image(1)  # classes 0, 2 and 255
    fig = plots.label_figure(
        [("im1", image, {"ground truth": mask, "seed": None})], NAMES, title="Fig. 5a"
    )
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["0: background", "2: b", "255: ignore"]
    colours = [tuple(np.round(np.array(p.get_facecolor()[:3]) * 255)) for p in legend.get_patches()]
    assert colours == [(0, 0, 0), (0, 128, 0), (224, 224, 192)]  # VOC palette
    label_ax = fig.axes[1]
    np.testing.assert_array_equal(label_ax.get_images()[0].get_array(), plots.colorize(mask))
    assert "missing" in [t.get_text() for t in fig.axes[2].texts]
    plots.save_figure(fig, tmp_path / "f.png")
    assert Image.open(tmp_path / "f.png").format == "PNG"


def test_training_curves() -> None:
    steps = np.arange(1, 101)
    history = pd.DataFrame(
        {"step": steps, "lr": 0.01, "loss": 100.0 / steps, "cls": 0.5 / np.sqrt(steps)}
    )
    fig = curves.curves_figure(
        {"self <train>": history, "flat": history[["step", "cls"]]}, smooth=5
    )
    ax, flat = fig.axes
    assert len(ax.get_lines()) == 4  # loss and cls, each raw (faint) + smoothed; never lr
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["loss", "cls"]
    assert ax.get_yscale() == "log" and ax.get_ylabel() == "loss (log scale)"  # 0.05 .. 100
    assert ax.get_title() == "self <train>"
    smoothed = ax.get_lines()[1].get_ydata()
    assert smoothed[4] == pytest.approx(np.mean(100.0 / steps[:5]))  # trailing window of 5
    assert flat.get_yscale() == "linear" and len(flat.get_lines()) == 2
    assert curves.moving_average(np.array([1.0, 3.0, 5.0]), 2).tolist() == [1.0, 2.0, 4.0]


def test_make_curves_writes_png_and_svg(tmp_path: Path) -> None:
    for stage in ("pretrain", "self_train"):
        (tmp_path / stage).mkdir()
        pd.DataFrame({"step": [1, 2, 3], "loss": [3.0, 2.0, 1.0]}).to_csv(
            tmp_path / stage / "history.csv", index=False
        )
    fig = curves.make_curves(
        [tmp_path / "pretrain/history.csv", tmp_path / "self_train/history.csv"],
        tmp_path / "c.png",
        tmp_path / "c.svg",
    )
    assert [ax.get_title() for ax in fig.axes] == ["EPS pretraining", "SMAF self-training"]
    assert Image.open(tmp_path / "c.png").size[0] > 2 * 300
    assert (tmp_path / "c.svg").read_text().lstrip().startswith("<?xml")


# ---------------------------------------------------------------------- the figure rules
def test_scale_figures_show_what_the_teacher_computes(tmp_path: Path, tiny_model) -> None:
    index_csv = _dataset(tmp_path)
    save_model(tmp_path / "model.pt", tiny_model, {})
    figs = make_scale_figures(
        index=index_csv,
        eps_model=tmp_path / "model.pt",
        smaf_model=tmp_path / "model.pt",
        out_scales=tmp_path / "fig1.png",
        out_reactivation=tmp_path / "fig4.png",
        out_data=tmp_path / "maps.npz",
        cam={"scales": [0.5, 1.0, 1.5], "flip": True, "resize_mode": "bicubic", "eps": 1e-5},
        device="cpu",
        threads=1,
    )
    index = DatasetIndex.read(index_csv)
    expected = {
        i: class_maps(
            tiny_model, load_image(index.image_path(i)), index.labels(i), RELEASED_CAM
        ).numpy()
        for i in ("im0", "im1")
    }
    with np.load(tmp_path / "maps.npz") as data:
        # The largest object (im1, class 2), then the smallest (im0, class 1).
        assert data["ids"].tolist() == ["im1", "im0"] and data["classes"].tolist() == [2, 1]
        for k, image_id in enumerate(["im1", "im0"]):
            np.testing.assert_array_equal(data[f"fused_{k}"], expected[image_id])
            assert data[f"per_scale_{k}"].shape == (3, C, 40, 48)
    # The figure's fused column (row 0: image, GT, 3 scales, fused) is the teacher's map.
    fused_column = _heat_images(figs["fig1"])[3].get_array()
    np.testing.assert_array_equal(fused_column, expected["im1"][1])
    assert expected["im1"][1].max() > 0
    assert Image.open(tmp_path / "fig1.png").format == "PNG"
    assert Image.open(tmp_path / "fig4.png").size[0] > 6 * 100


def test_eps_smaf_and_label_figures_from_the_folders(tmp_path: Path) -> None:
    index_csv = _dataset(tmp_path)
    index = DatasetIndex.read(index_csv)
    for model, value in (("eps", 0.5), ("smaf", 1.0)):
        for image_id in index.ids("train"):
            maps = np.full((C, 40, 48), value, dtype=np.float32)
            save_maps(tmp_path / model / f"{image_id}.npz", maps, index.labels(image_id))
    fig3 = make_eps_smaf_figure(
        index=index_csv,
        eps_maps=tmp_path / "eps",
        smaf_maps=tmp_path / "smaf",
        out=tmp_path / "3.png",
    )
    heat = _heat_images(fig3)
    assert [float(im.get_array().max()) for im in heat] == [0.5, 1.0]  # EPS row, SMAF row
    assert (tmp_path / "3.png").is_file()

    missing = make_eps_smaf_figure(
        index=index_csv,
        eps_maps=tmp_path / "eps",
        smaf_maps=tmp_path / "nope",
        out=tmp_path / "m.png",
    )
    assert missing.get_suptitle() == "Fig. 3: not available"

    image, mask = _image(0)
    save_mask(tmp_path / "seeds" / "im0.png", np.where(mask == 255, 0, mask))
    figs = make_label_figures(
        index=index_csv,
        label_dirs={"seed": tmp_path / "seeds"},
        pred_dirs={"DeepLab": tmp_path / "pred"},
        out_train=tmp_path / "5a.png",
        out_val=tmp_path / "5b.png",
    )
    fig5a = figs["fig5a"]
    assert [ax.get_title() for ax in fig5a.axes[:3]] == ["image", "ground truth", "seed"]
    assert len(fig5a.axes) == 2 * 3  # the two train images
    assert "missing" in [t.get_text() for t in fig5a.axes[5].texts]  # no seed PNG for im1
    assert [ax.get_ylabel() for ax in figs["fig5b"].axes[::3]] == ["im2", "im3"]
    assert (tmp_path / "5a.png").is_file() and (tmp_path / "5b.png").is_file()


# -------------------------------------------------------------------- Snakemake's report
@pytest.mark.slow
def test_snakemake_report_has_the_figures_and_tables(tiny_run: Path, tmp_path: Path) -> None:
    figures = tiny_run / "results/synthetic/default/figures"
    assert sorted(p.name for p in figures.glob("*.png")) == [
        "curves.png",
        "fig1_scales.png",
        "fig3_eps_vs_smaf.png",
        "fig4_reactivation.png",
        "fig5a_pseudo_labels.png",
        "fig5b_segmentation.png",
    ]
    snakemake(tiny_run, "--report", str(tmp_path / "report.html"), config=TINY_CONFIG)
    report = (tmp_path / "report.html").read_text()
    categories = re.search(r"var categories = (\{.*?\});", report)
    assert categories, "no categories in Snakemake's report"
    for category in ("Figures", "Tables", "Training curves"):
        assert f'"{category}"' in categories.group(1)
    for name in (
        "fig1_scales.png",
        "fig4_reactivation.png",
        "table1_segmentation.html",
        "curves.svg",
    ):
        assert name in report
    assert "Computed exactly as the offline teacher computes its maps" in report  # a caption


def test_sam_masks_are_drawn_largest_first_in_cycling_colours() -> None:
    from smaf.report.saved_figures import sam_segments
    from smaf.sam import SamMasks

    big = np.zeros((4, 6), bool)
    big[:, :4] = True
    small = np.zeros((4, 6), bool)
    small[1:3, 1:3] = True  # nested in the big one: painted after it, stays visible
    other = np.zeros((4, 6), bool)
    other[0, 5] = True
    masks = SamMasks.from_stack(np.stack([small, big, other]), [0.9] * 3, [0.9] * 3)
    out = sam_segments(masks, colours=2)
    assert out[0, 0] == 1 and out[1, 1] == 2  # big first (1), then small (2)
    assert out[0, 5] == 1  # the third mask cycles back to colour 1
    assert out[3, 5] == 0  # no mask


def test_fig5a_draws_the_sam_masks_and_the_sam_refined_labels_beside_the_crf(
    tmp_path: Path,
) -> None:
    """The columns the workflow gives Fig. 5a with refine [crf, sam] (figure_label_dirs): a
    folder of SAM masks (<id>.sam.json) is drawn as segments, a label folder as labels."""
    from smaf.report.saved_figures import label_rows, sam_segments
    from smaf.sam import SamMasks, save_masks

    index = DatasetIndex.read(_dataset(tmp_path))
    masks_dir, refined, crf = tmp_path / "sam_masks", tmp_path / "sam", tmp_path / "crf"
    for i in ("im0", "im1"):
        stack = np.zeros((2, 40, 48), bool)
        stack[0, :20], stack[1, 20:, :10] = True, True
        save_masks(masks_dir / f"{i}.sam.json", SamMasks.from_stack(stack, [0.9] * 2, [0.9] * 2))
        save_mask(refined / f"{i}.png", _image(0)[1])
        save_mask(crf / f"{i}.png", _image(1)[1])
    columns = {"SMAF seed + CRF": crf, "SAM masks": masks_dir, "SMAF seed + SAM": refined}
    rows = label_rows(index, ["im0", "im1"], columns)
    (_, _, labels) = rows[0]
    assert list(labels)[-3:] == list(columns)
    drawn = sam_segments(SamMasks.from_stack(stack, [0.9] * 2, [0.9] * 2), C)
    np.testing.assert_array_equal(labels["SAM masks"], drawn)
    assert set(np.unique(drawn)) == {0, 1, 2}
    np.testing.assert_array_equal(labels["SMAF seed + SAM"], _image(0)[1])
    figs = make_label_figures(
        index=index,
        label_dirs=columns,
        pred_dirs={},
        out_train=tmp_path / "fig5a.png",
        out_val=tmp_path / "fig5b.png",
    )
    assert (tmp_path / "fig5a.png").is_file() and "fig5a" in figs

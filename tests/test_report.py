"""The report: table builders on hand-made summaries, the SVG chart, a figure of a tiny random
classifier, and build_report end to end on a scratch folder (and with nothing but a summary)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from smaf.cam import CAMConfig, class_maps, save_maps
from smaf.io import save_image, save_mask, write_id_list
from smaf.models.build import ModelConfig, build_classifier
from smaf.models.checkpoint import save_model
from smaf.report import (
    PAPER,
    Sample,
    ablation_tables,
    build_report,
    eps_smaf_figure,
    format_miou,
    fused_maps,
    jet,
    paper_ablation_miou,
    per_class_table,
    pseudo_label_table,
    raw_attention,
    reactivation_figure,
    replicate_group,
    scale_attention_figure,
    scale_maps,
    segmentation_table,
    svg_line_chart,
    with_replicates,
)

C = 3
SVG = "{http://www.w3.org/2000/svg}"


def _rows(dataset: str, experiment: str, values: dict[str, float], **extra) -> list[dict]:
    """Summary rows of one run: stage → mIoU (split val for DeepLab stages, else train)."""
    return [
        {
            "dataset": dataset,
            "experiment": experiment,
            "stage": stage,
            "split": "val" if stage.startswith("deeplab") else "train",
            "gt": "SegmentationClass",
            "miou": miou,
            "model": "smaf" if stage.startswith("deeplab") else stage.split("_")[0],
            **extra,
        }
        for stage, miou in values.items()
    ]


ALL_STAGES = {
    "deeplab": 0.40,
    "deeplab_crf": 0.42,
    "eps_seed": 0.50,
    "eps_crf": 0.55,
    "smaf_seed": 0.60,
    "smaf_crf": 0.65,
}


# ------------------------------------------------------------------------------------ tables
def test_format_miou() -> None:
    assert format_miou([0.7234]) == "72.3"
    assert format_miou([0.50, 0.52]) == "51.0 ± 1.4 (n=2)"  # sample std: 0.01·√2
    assert format_miou([0.5, float("nan")]) == "50.0"
    assert format_miou([]) == "–"


def test_replicate_group_and_derived_columns() -> None:
    assert replicate_group("default_seed12") == "default"
    assert replicate_group("seedless") == "seedless"
    assert replicate_group("a_seed1_b") == "a_seed1_b"  # only a trailing suffix
    df = with_replicates(pd.DataFrame({"experiment": ["x_seed0", "y"]}))
    assert df["group"].tolist() == ["x", "y"]
    assert df["seed"].isna().all()


def test_replicates_are_grouped_and_no_paper_columns_off_voc() -> None:
    rows = _rows("synthetic", "a_seed0", ALL_STAGES) + _rows(
        "synthetic", "a_seed1", {k: v + 0.02 for k, v in ALL_STAGES.items()}
    )
    rows += _rows("synthetic", "b", ALL_STAGES)
    summary = pd.DataFrame(rows)  # no group / seed columns: derived from the names

    t1 = segmentation_table(summary)
    assert t1["experiment"].tolist() == ["a", "b"]
    assert t1.loc[0, "DeepLab (MSC)"] == "41.0 ± 1.4 (n=2)"
    assert t1.loc[1, "DeepLab (MSC) + CRF"] == "42.0"
    assert not any(c.startswith("paper") for c in t1.columns)

    t2 = pseudo_label_table(summary)
    assert t2[["experiment", "method"]].values.tolist() == [
        ["a", "EPS"],
        ["a", "SMAF"],
        ["b", "EPS"],
        ["b", "SMAF"],
    ]
    assert t2.loc[1, "seed"] == "61.0 ± 1.4 (n=2)"
    assert t2.loc[3, "+CRF"] == "65.0"
    assert not any(c.startswith("paper") for c in t2.columns)


def test_paper_columns_for_voc_and_explicit_group() -> None:
    rows = _rows("voc2012", "run1", ALL_STAGES, group="released", seed=1)
    rows += _rows("voc2012", "run2", ALL_STAGES, group="released", seed=2)
    summary = pd.DataFrame(rows)
    t1 = segmentation_table(summary)
    assert t1["experiment"].tolist() == ["released"]  # the group column wins over the names
    assert t1.loc[0, "DeepLab (MSC)"] == "40.0 ± 0.0 (n=2)"
    assert (t1.loc[0, "paper val"], t1.loc[0, "paper test"]) == ("72.4", "72.4")
    t2 = pseudo_label_table(summary).set_index("method")
    assert (t2.loc["SMAF", "paper seed"], t2.loc["SMAF", "paper +CRF"]) == ("72.0", "73.8")
    assert (t2.loc["EPS", "paper seed"], t2.loc["EPS", "paper +CRF"]) == ("69.5", "71.4")


def test_paper_ablation_rows() -> None:
    assert paper_ablation_miou("table3", "{0.5, 1}") == 71.1
    assert paper_ablation_miou("table3", "{1, 2}") == 70.5
    assert paper_ablation_miou("table3", "{0.5, 1, 1.5, 2}") == 72.0
    assert paper_ablation_miou("table4", "scale 1.5") == 67.7
    assert paper_ablation_miou("table4", "fused") == PAPER["table4"]["fused"]
    assert paper_ablation_miou("table5", "w/o reactivation") == 71.1
    assert paper_ablation_miou("table5", "w/ reactivation") == 72.0
    assert paper_ablation_miou("table3", "{3}") is None


def test_ablation_tables_keep_file_order_and_aggregate_seeds() -> None:
    ablations = pd.DataFrame(
        [
            ("table4", "2", "t4_s2_seed0", 0, "smaf_seed", 0.40),
            ("table4", "2", "t4_s2_seed1", 1, "smaf_seed", 0.44),
            ("table4", "2", "t4_s2_seed0", 0, "smaf_crf", 0.50),
            ("table4", "fused", "default_seed0", 0, "smaf_seed", 0.60),
            ("table5", "w/o reactivation", "t5_off", 0, "smaf_seed", 0.55),
        ],
        columns=["table", "row", "experiment", "seed", "stage", "miou"],
    )
    tables = ablation_tables(ablations, paper=True)
    assert list(tables) == ["table4", "table5"]
    t4 = tables["table4"]
    assert t4["row"].tolist() == ["2", "fused"]  # file order, not sorted
    assert t4.loc[0, "seed mIoU"] == "42.0 ± 2.8 (n=2)"
    assert t4.loc[0, "+CRF mIoU"] == "50.0"
    assert t4.loc[1, "+CRF mIoU"] == "–"
    assert t4.loc[0, "experiments"] == "t4_s2"
    assert t4["paper seed mIoU"].tolist() == ["63.0", "72.0"]
    assert tables["table5"].loc[0, "paper seed mIoU"] == "71.1"
    assert "paper seed mIoU" not in ablation_tables(ablations)["table4"].columns


def test_per_class_table(tmp_path: Path) -> None:
    for name, ious in (("a", [0.9, 0.5]), ("b", [0.8, 0.25])):
        pd.DataFrame(
            {"class": ["background", "cat", "mean"], "iou": [*ious, np.mean(ious)]}
        ).to_csv(tmp_path / f"{name}.csv", index=False)
    t = per_class_table({"a": tmp_path / "a.csv", "b": tmp_path / "b.csv"})
    assert t.index.tolist() == ["background", "cat", "mean"]
    assert t.loc["cat", "b"] == 25.0 and t.loc["mean", "a"] == 70.0


# ------------------------------------------------------------------------------------- chart
def test_svg_line_chart_is_valid_xml() -> None:
    steps = np.arange(1, 101)
    history = pd.DataFrame(
        {"step": steps, "lr": 0.01, "loss": 100.0 / steps, "cls": 0.5 / np.sqrt(steps)}
    )
    svg = svg_line_chart(history, title="self <train> & co", smooth=5)
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    lines = root.findall(f".//{SVG}polyline")
    assert len(lines) == 4  # loss and cls, each raw (faint) + smoothed; never lr
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert "self <train> & co" in texts and "loss" in texts and "cls" in texts
    assert "lr" not in texts
    assert "loss (log scale)" in texts  # 0.05 .. 100 spans > 1.5 decades
    flat = svg_line_chart(history[["step", "cls"]], smooth=1)
    assert len(ET.fromstring(flat).findall(f".//{SVG}polyline")) == 1
    assert "log scale" not in flat


# ------------------------------------------------------------------------------------ figures
def test_jet_endpoints() -> None:
    out = jet(np.array([0.0, 0.5, 1.0]))
    assert out.dtype == np.uint8 and out.shape == (3, 3)
    assert out[0].tolist() == [0, 0, 128] and out[2].tolist() == [128, 0, 0]
    assert out[1].tolist() == [128, 255, 128]


@pytest.fixture(scope="module")
def tiny_model() -> Iterator[torch.nn.Module]:
    """A random width-0.125 classifier; one torch thread meanwhile (tiny convolutions)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield build_classifier(ModelConfig(width=0.125, head="smaf", num_classes=C)).eval()
    torch.set_num_threads(threads)


def _image(seed: int, h: int = 40, w: int = 48) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), dtype=np.uint8)
    mask[8:30, 10:40] = 1 + seed % C
    mask[8, 10:40] = 255
    return image, mask


def test_scale_maps_match_class_maps_and_figures(tiny_model) -> None:
    image, mask = _image(0)
    labels = np.array([1.0, 0.0, 1.0], dtype=np.float32)
    per_scale, fused = scale_maps(tiny_model, image, labels, (0.5, 1.0), flip=True)
    assert per_scale.shape == (2, C, 40, 48) and fused.shape == (C, 40, 48)
    expected = class_maps(tiny_model, image, labels, CAMConfig(scales=(0.5, 1.0), flip=True))
    np.testing.assert_allclose(fused, expected.numpy(), atol=1e-6)
    assert np.all(per_scale[:, 1] == 0)  # absent class denoised
    names = ["bg", "a", "b", "c"]
    sample = Sample("img0", image, mask, labels, cls=1, note="test")
    fig = scale_attention_figure([sample], [per_scale], [fused], names, scales=(0.5, 1.0), tile=64)
    assert isinstance(fig, Image.Image) and fig.mode == "RGB"
    assert fig.width > 5 * 64 and fig.height > 64  # image, GT, 2 scales, fused + titles
    student = raw_attention(tiny_model, image, labels)
    assert student.shape == (C, 40, 48) and student.min() >= 0 and student.max() <= 1
    fig4 = reactivation_figure([sample], [per_scale[1]], [fused], names, student=[student], tile=64)
    assert fig4.width > 6 * 64
    fig3 = eps_smaf_figure([sample, sample], [fused, fused], [fused, fused], names, tile=64)
    assert fig3.height > 4 * 64 and fig3.width > 2 * 64


def test_fused_maps_prefer_the_seed_maps(tmp_path: Path) -> None:
    image, mask = _image(1)
    labels = np.array([0.0, 1.0, 0.0], dtype=np.float32)
    stored = np.zeros((C, 40, 48), dtype=np.float32)
    stored[1, :10] = 1.0
    save_maps(tmp_path / "img1.npz", torch.from_numpy(stored), labels)
    sample = Sample("img1", image, mask, labels, cls=2)
    np.testing.assert_array_equal(fused_maps(None, sample, (1.0,), False, tmp_path), stored)
    assert fused_maps(None, sample, (1.0,), False, tmp_path / "absent") is None


# ------------------------------------------------------------------------------- end to end
def _fake_project(tmp: Path, model: torch.nn.Module) -> dict:
    """A summary, histories, eval CSVs, a 4-image VOC-layout dataset, models and label PNGs."""
    root = tmp / "VOC2012"
    ids = [f"im{i}" for i in range(4)]
    for i, image_id in enumerate(ids):
        image, mask = _image(i)
        save_image(root / "JPEGImages" / f"{image_id}.jpg", image)
        save_mask(root / "SegmentationClass" / f"{image_id}.png", mask)
        for folder in ("seeds", "crf", "pred"):
            save_mask(tmp / folder / f"{image_id}.png", np.where(mask == 255, 0, mask))
    write_id_list(tmp / "train.txt", ids[:2])
    write_id_list(tmp / "val.txt", ids[2:])
    info = {"root": str(root), "num_classes": C, "class_names": ["background", "a", "b", "c"]}
    (tmp / "dataset.json").write_text(json.dumps(info))
    save_model(tmp / "model.pt", model, {})
    pd.DataFrame(_rows("synthetic", "default", ALL_STAGES)).to_csv(tmp / "summary.csv", index=False)
    steps = np.arange(1, 31)
    pd.DataFrame({"step": steps, "lr": 0.1, "loss": 1 / steps, "cls": 0.5 / steps}).to_csv(
        tmp / "history.csv", index=False
    )
    pd.DataFrame({"class": ["background", "a", "mean"], "iou": [0.9, 0.3, 0.6]}).to_csv(
        tmp / "smaf_crf_train_SegmentationClass.csv", index=False
    )
    return {
        "histories": [tmp / "history.csv"],
        "eval_csvs": [tmp / "smaf_crf_train_SegmentationClass.csv"],
        "dataset_json": tmp / "dataset.json",
        "train_split": tmp / "train.txt",
        "val_split": tmp / "val.txt",
        "eps_model": tmp / "model.pt",
        "smaf_model": tmp / "model.pt",
        "label_dirs": {"seed": tmp / "seeds", "CRF": tmp / "crf"},
        "pred_dirs": {"DeepLab": tmp / "pred"},
    }


def test_build_report_end_to_end(tmp_path: Path, tiny_model) -> None:
    inputs = _fake_project(tmp_path, tiny_model)
    out = build_report(
        tmp_path / "summary.csv",
        tmp_path / "out" / "report.html",
        ablations_csv=tmp_path / "ablations.csv",  # absent: a note, not an error
        scales=(0.5, 1.0),
        n_images=2,
        tile=48,
        figure_dir=tmp_path / "figs",
        threads=1,
        **inputs,
    )
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert "Table 1." in page and "Table 2." in page and page.count("<table") == 3
    assert "57.7" not in page and "65.0" in page  # smaf_crf of the fake summary
    assert page.count('<img src="data:image/png;base64,') == 5  # Fig. 1, 3, 4, 5a, 5b
    assert page.count("<svg") == 1
    assert "ablations: not available" in page
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == [
        "fig1_scales.png",
        "fig3_eps_vs_smaf.png",
        "fig4_reactivation.png",
        "fig5a_pseudo_labels.png",
        "fig5b_segmentation.png",
    ]


def test_build_report_with_only_a_summary(tmp_path: Path) -> None:
    pd.DataFrame(_rows("voc2012", "default", ALL_STAGES)).to_csv(
        tmp_path / "summary.csv", index=False
    )
    out = build_report(
        tmp_path / "summary.csv",
        tmp_path / "report.html",
        histories=[tmp_path / "missing_history.csv"],
        dataset_json=tmp_path / "missing.json",
    )
    page = out.read_text()
    assert "paper val" in page and "72.4" in page
    assert "missing_history.csv is missing" in page and "figures: not available" in page
    assert "<img" not in page

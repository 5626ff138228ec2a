"""The report's tables and pages: table builders on hand-made summaries, build_report end to end
on a scratch folder (figures embedded, notes for what is missing) and the tables' own pages.
The figures themselves are tested in test_figures.py."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from smaf.report import build_report, write_tables
from smaf.report.page import FIGURES
from smaf.report.tables import (
    PAPER,
    ablation_tables,
    format_miou,
    paper_ablation_miou,
    per_class_table,
    pseudo_label_table,
    replicate_group,
    segmentation_table,
    with_replicates,
)
from smaf.stages.evaluate import write_summary


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


def test_the_clip_base_has_table2_rows_before_smaf_and_no_paper_value() -> None:
    stages = {"clip_seed": 0.5, "clip_crf": 0.6, "smaf_seed": 0.55, "smaf_crf": 0.65}
    t2 = pseudo_label_table(pd.DataFrame(_rows("voc2012", "clip", stages)))
    assert t2["method"].tolist() == ["CLIP", "SMAF"]
    clip = t2.set_index("method").loc["CLIP"]
    assert (clip["seed"], clip["+CRF"], clip["paper seed"]) == ("50.0", "60.0", "–")


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


# ------------------------------------------------------------------------------- the page
def _png(path: Path, color: tuple[int, int, int]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 6), color).save(path)
    return path


def _fake_outputs(tmp: Path) -> dict:
    """A summary, an evaluation CSV, the figure PNGs of every figure rule and one curve PNG."""
    pd.DataFrame(_rows("synthetic", "default", ALL_STAGES)).to_csv(tmp / "summary.csv", index=False)
    pd.DataFrame({"class": ["background", "a", "mean"], "iou": [0.9, 0.3, 0.6]}).to_csv(
        tmp / "smaf_crf_train_SegmentationClass.csv", index=False
    )
    return {
        "eval_csvs": [tmp / "smaf_crf_train_SegmentationClass.csv"],
        "figures": {
            k: _png(tmp / "figs" / f"{k}.png", (i * 40, 0, 0)) for i, k in enumerate(FIGURES)
        },
        "curves": {"default": _png(tmp / "figs" / "curves.png", (0, 0, 255))},
    }


def test_build_report_end_to_end(tmp_path: Path) -> None:
    inputs = _fake_outputs(tmp_path)
    out = build_report(
        tmp_path / "summary.csv",
        tmp_path / "out" / "report.html",
        ablations_csv=tmp_path / "ablations.csv",  # absent: a note, not an error
        tables_dir=tmp_path / "tables",
        **inputs,
    )
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert "Table 1." in page and "Table 2." in page and page.count("<table") == 3
    assert "57.7" not in page and "65.0" in page  # smaf_crf of the fake summary
    # Fig. 1, 3, 4, 5a, 5b and the curves, embedded byte for byte, figures in paper order.
    uris = [u.split('"')[0] for u in page.split('<img src="data:image/png;base64,')[1:]]
    assert len(uris) == 6
    pngs = [inputs["curves"]["default"], *inputs["figures"].values()]
    assert [base64.b64decode(u) for u in uris] == [p.read_bytes() for p in pngs]
    assert "Fig. 3. Fused multi-scale attention" in page  # the figure's caption
    assert "ablations: not available" in page
    assert sorted(p.name for p in (tmp_path / "tables").iterdir()) == [
        "ablations.html",
        "per_class_iou.csv",
        "per_class_iou.html",
        "table1_segmentation.csv",
        "table1_segmentation.html",
        "table2_pseudo_labels.csv",
        "table2_pseudo_labels.html",
    ]


def test_build_report_with_only_a_summary(tmp_path: Path) -> None:
    pd.DataFrame(_rows("voc2012", "default", ALL_STAGES)).to_csv(
        tmp_path / "summary.csv", index=False
    )
    out = build_report(
        tmp_path / "summary.csv",
        tmp_path / "report.html",
        curves={"default": tmp_path / "missing_curves.png"},
    )
    page = out.read_text()
    assert "paper val" in page and "72.4" in page
    assert "missing_curves.png is missing" in page and "figures: not available" in page
    assert "<img" not in page


def test_the_page_of_one_dataset_lists_the_others_in_the_summary(tmp_path: Path) -> None:
    rows = [
        *_rows("voc2012", "default", ALL_STAGES),
        *_rows("leaves", "default", {"eps_seed": 0.3}),
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "summary.csv", index=False)
    page = build_report(tmp_path / "summary.csv", tmp_path / "r.html", dataset="leaves").read_text()
    assert "also holds\nvoc2012 (6 evaluations)" in page and "30.0" in page and "65.0" not in page


def test_a_dataset_without_masks_gets_one_note_and_no_paper(tmp_path: Path) -> None:
    """Issue 21 item 12: no masks, no scores: one note says why, once; no VOC or paper text."""
    write_summary([], tmp_path / "summary.csv", {})  # what rule summary writes for it
    (tmp_path / "fake").mkdir()
    inputs = _fake_outputs(tmp_path / "fake")
    page = build_report(
        tmp_path / "summary.csv",
        tmp_path / "report.html",
        dataset="leaves",
        ablations_csv=tmp_path / "results/leaves/ablations.csv",
        curves=inputs["curves"],
        figures=inputs["figures"],
        tables_dir=tmp_path / "tables",
        masks=False,
    ).read_text()
    notes = re.findall(r'<p class="note">(.*?)</p>', page, flags=re.DOTALL)
    assert len(notes) == 1 and "has no ground-truth masks" in notes[0], notes
    assert "datasets.leaves" in notes[0]
    assert "paper" not in page.lower() and "VOC" not in page and "Table 1." not in page
    assert (
        "has no ground-truth masks" in (tmp_path / "tables/table2_pseudo_labels.html").read_text()
    )


def test_missing_figure_is_a_note_and_text_is_escaped(tmp_path: Path) -> None:
    pd.DataFrame(_rows("syn<b>", "exp&1", ALL_STAGES)).to_csv(tmp_path / "summary.csv", index=False)
    page = build_report(
        tmp_path / "summary.csv",
        tmp_path / "report.html",
        figures={"fig1_scales": tmp_path / "fig1_scales.png"},
    ).read_text()
    assert "Fig. 1: not available" in page and "fig1_scales.png is missing" in page
    assert "syn&lt;b&gt;" in page and "exp&amp;1" in page and "syn<b>" not in page


def test_write_tables_pages_and_csvs(tmp_path: Path) -> None:
    rows = _rows("voc2012", "a", ALL_STAGES)
    pd.DataFrame(rows).to_csv(tmp_path / "summary.csv", index=False)
    pd.DataFrame(
        [("table5", "w/o reactivation", "t5_off", 0, "smaf_seed", 0.55)],
        columns=["table", "row", "experiment", "seed", "stage", "miou"],
    ).to_csv(tmp_path / "ablations.csv", index=False)
    written = write_tables(
        tmp_path / "summary.csv", tmp_path / "t", ablations_csv=tmp_path / "ablations.csv"
    )
    t1 = pd.read_csv(written["table1_segmentation.csv"], dtype=str)
    assert t1.loc[0, "DeepLab (MSC) + CRF"] == "42.0" and t1.loc[0, "paper val"] == "72.4"
    ablations = written["ablations.html"].read_text()
    assert "Table 5. Reactivation" in ablations and "55.0" in ablations and "71.1" in ablations
    assert "per-class IoU: not available" in written["per_class_iou.html"].read_text()


def test_table2_has_sam_columns_only_where_sam_was_scored() -> None:
    plain = pseudo_label_table(pd.DataFrame(_rows("synthetic", "a", ALL_STAGES)))
    assert "+SAM" not in plain.columns and "+SAM+CRF" not in plain.columns
    stages = {**ALL_STAGES, "eps_sam": 0.57, "smaf_sam": 0.67}
    t2 = pseudo_label_table(pd.DataFrame(_rows("synthetic", "a", stages))).set_index("method")
    assert list(t2.columns[-3:]) == ["seed", "+CRF", "+SAM"]
    assert (t2.loc["EPS", "+SAM"], t2.loc["SMAF", "+SAM"]) == ("57.0", "67.0")


def test_table2_supervision_names_sam_for_its_columns_in_one_cell() -> None:
    rows = _rows("synthetic", "a", ALL_STAGES, base="clip", supervision="CLIP")
    rows += _rows("synthetic", "a", {"smaf_sam": 0.67}, base="clip", supervision="CLIP; SAM")
    t2 = pseudo_label_table(pd.DataFrame(rows)).set_index("method")
    assert t2.loc["SMAF", "supervision"] == "CLIP; SAM (+SAM columns)"
    assert t2.loc["EPS", "supervision"] == "CLIP"  # no SAM column of its own here

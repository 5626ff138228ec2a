"""`thr: auto`: the background score chosen on held-out images, used by the workflow."""

from __future__ import annotations

import copy
import json
import re

import pandas as pd
import pytest
import yaml
from conftest import REPO_ROOT
from test_thr_sweep import _toy_sweep
from workflow_utils import TINY_CONFIG, snakemake

from smaf.config import chosen_thr, is_auto
from smaf.data.index import DatasetIndex
from smaf.errors import ConfigError, DataError
from smaf.experiments import Experiments, canonical_config
from smaf.report.tables import pseudo_label_table, threshold_notes
from smaf.stages.evaluate import THR_AUTO_SOURCE, write_summary
from smaf.stages.thr_sweep import EVALUATION_ROLES, auto_thr


def test_auto_thr_chooses_the_best_held_out_threshold_by_hand(tmp_path):
    # One held-out image (h; a is in train): thr 0.2 and 0.25 give exact seeds, 0.2 is the
    # smaller (see test_thr_sweep.test_seed_miou_per_threshold_by_hand).
    index, seeds = _toy_sweep(tmp_path)
    out = tmp_path / "thr_auto" / "smaf.json"
    record = auto_thr(
        index,
        target="smaf",
        values=[0.5, 0.25, 0.05, 0.2],
        holdout=1.0,
        seed=0,
        gt="SegmentationClass",
        out_json=out,
        maps_dir=seeds,
    )
    assert record["thr"] == 0.2 and record["miou"] == pytest.approx(1.0)
    assert record["holdout"] == ["h"] and record["target"] == "smaf"
    assert record["scores"]["0.05"] == pytest.approx(3 / 8)
    assert json.loads(out.read_text()) == record
    assert chosen_thr("auto", out) == 0.2
    assert chosen_thr(0.3, None) == 0.3 and not is_auto(0.3) and is_auto("auto")
    with pytest.raises(DataError, match="rerun the thr_auto rule"):
        chosen_thr("auto", tmp_path / "missing.json")


def test_auto_thr_computes_the_maps_of_held_out_images_only(tiny_index, tiny_model, tmp_path):
    index = DatasetIndex.read(tiny_index)
    record = auto_thr(
        tiny_index,
        target="eps",
        values=[0.1, 0.3, 0.6],
        holdout=0.25,
        seed=0,
        gt="SegmentationClass",
        out_json=tmp_path / "eps.json",
        model_path=tiny_model,
        cam={"scales": [1.0], "flip": False},
        device="cpu",
        num_threads=1,
    )
    evaluated = set().union(*(index.ids(r, allow_empty=True) for r in EVALUATION_ROLES))
    assert record["holdout"] and not set(record["holdout"]) & evaluated
    best = max(record["scores"].values())
    assert record["thr"] == min(float(t) for t, m in record["scores"].items() if m == best)
    assert record["maps_from"].startswith("computed by")


@pytest.fixture(scope="module")
def demo_config() -> dict:
    return yaml.safe_load((REPO_ROOT / "config.yaml").read_text())


def _exp(cfg: dict, **sections) -> Experiments:
    cfg = copy.deepcopy(cfg)
    for name, values in sections.items():
        cfg[name] = {**cfg.get(name, {}), **values}
    return Experiments(canonical_config(cfg))


def test_auto_without_held_out_masks_is_one_config_error(demo_config, tmp_path):
    voc = {"source": "voc", "root": str(tmp_path / "VOC2012"), "aug_source": "none"}
    folder = {"source": "folder", "images": str(tmp_path / "photos")}
    for name, dataset in (("voc", voc), ("mine", folder)):
        datasets = {**demo_config["datasets"], name: dataset}
        for section in ("seeds", "self_train"):
            exp = _exp(demo_config, datasets=datasets, **{section: {"thr": "auto"}})
            with pytest.raises(ConfigError, match=rf"{section}\.thr: auto .* '{name}' has no"):
                exp.check_thr_auto(name)
        _exp(demo_config, datasets=datasets).check_thr_auto(name)  # numbers: fine
    _exp(demo_config, seeds={"thr": "auto"}).check_thr_auto("synthetic")  # masks everywhere


def test_auto_seeds_get_their_own_folder_and_a_computed_sweep(demo_config):
    exp = _exp(demo_config, seeds={"thr": "auto"}, self_train={"thr": "auto"})
    run = next(exp.runs())
    assert not exp.teacher_is_eps_seeds(run)  # the teacher maps never wait for the choice
    assert exp.thr_auto_source("synthetic", run, "smaf")["model_path"].endswith("model.pt")
    teacher = exp.thr_auto_source("synthetic", run, "teacher")
    assert teacher == {"maps_dir": f"results/synthetic/{run}/teacher_maps"}
    assert exp.thr_auto_record("synthetic", run, "eps").endswith("thr_auto/eps.json")


def test_summary_and_table2_name_the_automatic_choice(tmp_path):
    record = tmp_path / "thr_auto.json"
    record.write_text(json.dumps({"thr": 0.35}))
    rows = [
        {"dataset": "d", "experiment": "e", "group": "e", "seed": 0, "stage": stage,
         "split": "train", "gt": "SegmentationClass", "miou": 0.5, "thr": "auto",
         "thr_from": str(record)}
        for stage in ("smaf_seed", "smaf_crf")
    ]  # fmt: skip
    df = write_summary(rows, tmp_path / "summary.csv")
    assert list(df["thr"]) == [0.35, 0.35] and set(df["thr_source"]) == {THR_AUTO_SOURCE}
    assert "thr_from" not in df.columns
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert pseudo_label_table(summary, paper=False)["thr"].tolist() == ["0.35 (auto, held-out)"]
    (note,) = threshold_notes(summary)
    assert "thr 0.35 was chosen automatically" in note and "no evaluation split" in note


def _inputs(dry_run: str, rule: str) -> list[str]:
    """The input files of every planned job of ``rule`` in a dry run's output."""
    blocks = re.findall(rf"^(?:local)?rule {rule}:\n((?:    .*\n)+)", dry_run, flags=re.M)
    assert blocks, f"no {rule} job planned"
    return [f.strip() for b in blocks for m in re.findall(r"input: (.*)", b) for f in m.split(",")]


@pytest.mark.slow
def test_auto_seeds_wait_for_the_held_out_sweep(tmp_path):
    config = json.loads(json.dumps(TINY_CONFIG))
    config["seeds"] = {**config["seeds"], "thr": "auto"}
    config["self_train"] = {**config["self_train"], "thr": "auto"}
    out = snakemake(tmp_path, "-n", config=config).stdout
    seeds = _inputs(out, "seeds")
    for model in ("eps", "smaf"):
        assert any(re.search(rf"/thr_auto/{model}\.json$", f) for f in seeds), seeds
    assert any(f.endswith("/thr_auto/teacher.json") for f in _inputs(out, "self_train"))
    sweeps = _inputs(out, "thr_auto")
    assert not any("/seeds/" in f for f in sweeps)  # computed, not read from the seeds
    assert not (tmp_path / "resources").exists()  # planned only


def test_auto_on_voc_without_held_out_masks_stops_before_any_job(tmp_path):
    splits = {r: r for r in ("train_aug", "train", "val")}
    voc = {"source": "voc", "root": str(tmp_path / "VOC2012"), "num_classes": 20, "splits": splits}
    config = {
        "dataset": "voc",
        "datasets": {"voc": {**voc, "download": False, "aug_source": "none"}},
        "seeds": {"thr": "auto"},
    }
    proc = snakemake(tmp_path, "-n", config=config, check=False)
    assert proc.returncode != 0
    assert "seeds.thr: auto tunes the threshold" in proc.stdout + proc.stderr
    assert not (tmp_path / "resources").exists() and not (tmp_path / "results").exists()

"""CPU benchmarks of the pipeline (`make bench`): results/bench/cpu.csv and BENCHMARKS.md.

Measures, on this machine:

* ``demo``: the default config's whole workflow from an empty folder (wall s, peak RSS MB);
* ``noop_dryrun``: ``snakemake -n`` on that finished run (median of 3);
* ``seeds`` / ``crf`` / ``teacher_maps``: images/s of those rules in the demo run (their
  Snakemake benchmark files); the teacher maps' size on disk per image (and as dense float32);
* ``evaluate``: images/s of scoring the demo's SMAF CRF labels on train (median of 3);
* ``crf``, ``speedup_2_vs_1``: the CRF stage with 2 processes over 1 (median of 3 each) on
  40 real VOC images of ../shared/data/voc2012-mini when present, else on the demo's
  train_aug seeds (small images: pool start-up weighs more there).

Writes ``results/bench/cpu.csv`` (``benchmark,metric,value,unit``) and replaces the section
between the ``bench:cpu`` markers of BENCHMARKS.md with a table (date, machine, versions).
The demo runs in ``results/bench/demo/`` (deleted first), never in the checkout's results/.

* ``clip_cams``: images/s, CPU s per image and peak RSS of the CLIP base's CAMs
  (bench/clip_cams.py: random ViT-B/16, VOC-sized images, 2 timed after 1 warm-up: ~25 CPU-s);
  ``--no-clip`` leaves it out.

    .venv/bin/python bench/cpu.py              # ~8 min on 2 cores
    .venv/bin/python bench/cpu.py --no-clip    # without the CLIP CAMs
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from markdown_section import replace_section

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "results" / "bench"
VOC_MINI = REPO.parent / "shared" / "data" / "voc2012-mini"


def snakemake(workdir: Path, *args: str) -> float:
    """Run this checkout's workflow in ``workdir``; return the wall time in seconds."""
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile")]
    cmd += ["--directory", str(workdir), *args]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def rule_rate(workdir: Path, bench: str, images: int) -> float:
    """images / wall seconds of one rule's Snakemake benchmark file."""
    path = workdir / "benchmarks" / "synthetic" / "default" / f"{bench}.tsv"
    with path.open() as f:
        row = next(csv.DictReader(f, delimiter="\t"))
    return images / float(row["s"])


def crf_rates(demo: Path) -> tuple[str, float, float]:
    """(data, 1-process images/s, 2-process images/s): medians of 3 CRF stage runs."""
    from smaf.data.index import DatasetIndex
    from smaf.settings import CRFSettings
    from smaf.stages.crf_stage import refine_seeds

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if (VOC_MINI / "VOCdevkit").is_dir():
            sys.path.insert(0, str(REPO / "bench"))
            from crf_speed import make_inputs

            index, role, seeds = make_inputs(VOC_MINI, 40, work)
            data = "40 VOC images"
        else:
            index = DatasetIndex.read(demo / "results" / "synthetic" / "data" / "index.csv")
            role = "train_aug"
            seeds = demo / "results" / "synthetic" / "default" / "seeds" / "smaf"
            data = f"{len(index.ids(role))} demo images"
        n = len(index.ids(role))
        rates = {}
        for procs in (1, 2):
            runs = []
            for r in range(3):
                t0 = time.perf_counter()
                refine_seeds(index, role, seeds, work / f"out{procs}_{r}", CRFSettings(), procs)
                runs.append(n / (time.perf_counter() - t0))
            rates[procs] = statistics.median(runs)
    return data, rates[1], rates[2]


def evaluate_rate(demo: Path) -> float:
    """images/s of scoring the demo's SMAF CRF labels of train (median of 3)."""
    from smaf.data.index import DatasetIndex
    from smaf.stages.evaluate import evaluate_split

    index = DatasetIndex.read(demo / "results" / "synthetic" / "data" / "index.csv")
    n = len(index.ids("train"))
    runs = []
    for _ in range(3):
        t0 = time.perf_counter()
        evaluate_split(demo / "results" / "synthetic" / "default" / "crf" / "smaf", index, "train")
        runs.append(n / (time.perf_counter() - t0))
    return statistics.median(runs)


def teacher_map_sizes(demo: Path) -> tuple[float, float]:
    """(stored kB per image, kB of the same maps as dense float32 ``[C, H, W]``).

    The offline teacher keeps only the image's classes, as float16, in a compressed ``.npz``
    (:func:`smaf.io.save_maps`).
    """
    import numpy as np

    # The demo's teacher maps are its EPS seeds' (same settings: one pass, smaf.experiments).
    files = sorted((demo / "results/synthetic/default/seeds/eps/maps").glob("*.npz"))
    stored = sum(f.stat().st_size for f in files)
    dense = 0
    for f in files:
        with np.load(f, allow_pickle=False) as z:
            dense += int(np.prod(z["shape"])) * 4
    return stored / len(files) / 1000, dense / len(files) / 1000


def clip_rows(images: int = 2) -> list[tuple[str, str, float, str]]:
    """CLIP CAM throughput measured by bench/clip_cams.py in a child (its own peak RSS)."""
    cmd = [sys.executable, str(REPO / "bench" / "clip_cams.py"), "--images", str(images)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    unit = "images/s (random ViT-B/16, 500x375, 2 classes)"
    return [
        ("clip_cams", "images_per_s", result["images_per_s"], unit),
        ("clip_cams", "cpu_s_per_image", result["cpu_s_per_image"], "CPU s/image (all threads)"),
        ("clip_cams", "peak_rss_mb", result["peak_rss_mb"], "MB"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description="CPU benchmarks (make bench)")
    parser.add_argument(
        "--no-clip", action="store_true", help="leave out the CLIP base's CAMs (~25 CPU-s)"
    )
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    demo = OUT / "demo"
    shutil.rmtree(demo, ignore_errors=True)
    cores = str(os.cpu_count() or 1)
    print("demo workflow from an empty folder ...", flush=True)
    demo_s = snakemake(demo, "--cores", cores, "--resources", "gpu=1")
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    noop = statistics.median(snakemake(demo, "-n") for _ in range(3))
    print("CRF 1 vs 2 processes, evaluation ...", flush=True)
    crf_data, crf1, crf2 = crf_rates(demo)
    stored_kb, dense_kb = teacher_map_sizes(demo)
    rows = [
        ("demo", "wall_s", demo_s, "s"),
        ("demo", "peak_rss_mb", peak_mb, "MB"),
        ("noop_dryrun", "wall_s", noop, "s"),
        ("crf", "images_per_s_1_process", crf1, f"images/s ({crf_data})"),
        ("crf", "images_per_s_2_processes", crf2, f"images/s ({crf_data})"),
        ("crf", "speedup_2_vs_1", crf2 / crf1, "x"),
        ("teacher_maps", "kb_per_image", stored_kb, "kB (present classes, float16, npz)"),
        ("teacher_maps", "kb_per_image_dense_fp32", dense_kb, "kB (all classes, float32)"),
        # EPS seeds = the teacher pass (train_aug ∪ train: 240 images); SMAF seeds and CRF
        # cover train_aug ∪ train too (one shard each on the demo).
        ("seeds", "images_per_s", rule_rate(demo, "seeds/smaf.1of1", 240), "images/s"),
        ("crf_stage_demo", "images_per_s", rule_rate(demo, "crf/smaf.1of1", 240), "images/s"),
        ("evaluate", "images_per_s", evaluate_rate(demo), "images/s"),
    ]
    if not args.no_clip:
        print("CLIP CAMs (random ViT-B/16) ...", flush=True)
        rows += clip_rows()
    with (OUT / "cpu.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["benchmark", "metric", "value", "unit"])
        w.writerows((b, m, f"{v:.3f}", u) for b, m, v, u in rows)

    import snakemake as smk
    import torch

    table = [
        f"`make bench` on {dt.date.today()}: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, torch {torch.__version__}, "
        f"snakemake {smk.__version__}. Targets: demo ≤ 600 s and ≤ 4096 MB, CRF speedup ≥ 1.7, "
        "no-op dry-run ≤ 10 s.",
        "",
        "| benchmark | metric | value | unit |",
        "|---|---|---|---|",
        *(f"| {b} | {m} | {v:.2f} | {u} |" for b, m, v, u in rows),
    ]
    md = REPO / "BENCHMARKS.md"
    md.write_text(replace_section(md.read_text(), "cpu", "## `make bench` (CPU)", table))
    print("\n".join(table))


if __name__ == "__main__":
    main()

"""CRF stage throughput (images/s) on real VOC 2012 images, by worker count and CRF variant.

Seeds are the ground-truth masks with 10 % of the pixels relabelled at random (255 → 0); the
soft maps of the ``probs`` variant are the blurred one-hot ground truth (``noisy_seeds`` of
tests/helpers.py, which the CRF stage's tests use too). Each run is a whole
:func:`smaf.stages.crf_stage.refine_seeds` call (pool start-up, PNG I/O included) into a fresh
folder; the median of ``--repeats`` runs is reported.

    .venv/bin/python bench/crf_speed.py                       # 40 images, 1 and 2 processes
    .venv/bin/python bench/crf_speed.py --processes 1 2 4 8 --json crf_speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from smaf.settings import CRFSettings
from smaf.stages.crf_stage import refine_seeds

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = REPO.parent / "shared/data/voc2012-mini"
#: Seeds of the 40 images: ground truth with 10 % noise; maps blurred over 9 × 9 px.
NOISE, BLUR = 0.1, 9


def make_inputs(voc_mini: Path, images: int, work: Path, seed: int = 0):
    """Index the first ``images`` images of the subset's train half and write their noisy seeds
    and soft maps (tests/helpers.py, as the CRF stage's tests make them); return
    ``(index, role, seeds folder)``."""
    # Imported here: the spawned CRF workers re-import this file and should start light
    # (helpers imports pandas through the index; torch only inside noisy_seeds).
    sys.path.insert(0, str(REPO / "tests"))
    from helpers import VOC_MINI_SPLITS, index_dataset, noisy_seeds

    from smaf.data.index import DatasetIndex

    root = voc_mini / "VOCdevkit" / "VOC2012"
    full = DatasetIndex.read(
        index_dataset(
            root, work / "data", 20, source="voc", label_source="masks", splits=VOC_MINI_SPLITS
        )
    )
    index = full.subset(full.ids("train")[:images])
    seeds = noisy_seeds(index, index.ids(), work / "seeds", noise=NOISE, blur=BLUR, seed=seed)
    return index, "train", seeds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--voc", type=Path, default=DEFAULT_ROOT, help="voc2012-mini folder")
    ap.add_argument("--images", type=int, default=40)
    ap.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--methods", nargs="+", default=["labels", "probs"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        index, role, seeds_dir = make_inputs(args.voc, args.images, work)
        n = len(index.ids(role))
        for method in args.methods:
            for procs in args.processes:
                rates = []
                for r in range(args.repeats):
                    out = work / f"out_{method}_{procs}_{r}"
                    t0 = time.perf_counter()
                    refine_seeds(index, role, seeds_dir, out, CRFSettings(method=method), procs)
                    rates.append(n / (time.perf_counter() - t0))
                row = {
                    "method": method,
                    "processes": procs,
                    "images": n,
                    "images_per_s_median": round(statistics.median(rates), 3),
                    "images_per_s_runs": [round(x, 3) for x in rates],
                }
                results.append(row)
                print(json.dumps(row), flush=True)
    info = {
        "host_cpus": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "results": results,
    }
    if args.json is not None:
        args.json.write_text(json.dumps(info, indent=2))


if __name__ == "__main__":
    main()

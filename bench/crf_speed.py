"""CRF stage throughput (images/s) on real VOC 2012 images, by worker count and CRF variant.

Seeds are the ground-truth masks with 10 % of the pixels relabelled at random (255 → 0); the
soft maps of the ``probs`` variant are the blurred one-hot ground truth. Each run is a whole
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
import tempfile
import time
from pathlib import Path

import numpy as np

from smaf.io import load_mask, read_id_list, save_mask, write_id_list
from smaf.stages.crf_stage import refine_seeds

C = 20
DEFAULT_ROOT = Path(__file__).resolve().parents[1].parent / "shared/data/voc2012-mini"


def make_inputs(root: Path, ids: list[str], work: Path, seed: int = 0) -> tuple[Path, Path]:
    """Write the noisy seeds and soft maps of ``ids``; return (split file, seeds folder)."""
    # torch only here: the spawned CRF workers re-import this file and should start light.
    import torch

    from smaf.cam import save_maps

    rng = np.random.default_rng(seed)
    seeds_dir = work / "seeds"
    for image_id in ids:
        gt = load_mask(root / "SegmentationClass" / f"{image_id}.png")
        clean = np.where(gt == 255, 0, gt).astype(np.uint8)  # [H, W] 0..C
        present = np.unique(clean[clean > 0])
        labels = np.zeros(C, dtype=np.float32)
        labels[present - 1] = 1
        noise = rng.random(clean.shape) < 0.1
        seeds = np.where(noise, rng.choice(np.r_[0, present], clean.shape), clean)
        save_mask(seeds_dir / f"{image_id}.png", seeds.astype(np.uint8))
        onehot = torch.from_numpy(np.stack([clean == k for k in range(1, C + 1)])).float()
        soft = torch.nn.functional.avg_pool2d(onehot[None], 9, 1, 4, count_include_pad=False)[0]
        save_maps(seeds_dir / "maps" / f"{image_id}.npz", soft, labels)
    split = work / "split.txt"
    write_id_list(split, ids)
    return split, seeds_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--voc", type=Path, default=DEFAULT_ROOT, help="voc2012-mini folder")
    ap.add_argument("--images", type=int, default=40)
    ap.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--methods", nargs="+", default=["labels", "probs"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()

    root = args.voc / "VOCdevkit" / "VOC2012"
    ids = read_id_list(root / "ImageSets" / "Segmentation" / "subset_train.txt")[: args.images]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        split, seeds_dir = make_inputs(root, ids, work)
        for method in args.methods:
            for procs in args.processes:
                rates = []
                for r in range(args.repeats):
                    out = work / f"out_{method}_{procs}_{r}"
                    t0 = time.perf_counter()
                    refine_seeds(root, split, seeds_dir, out, C, method, None, procs)
                    rates.append(len(ids) / (time.perf_counter() - t0))
                row = {
                    "method": method,
                    "processes": procs,
                    "images": len(ids),
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

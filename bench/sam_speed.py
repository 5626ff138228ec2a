"""SAM automatic masks per image on this CPU: seconds, masks kept, peak memory, file size.

No weights are downloaded: each model is the real segment_anything architecture with random
weights, which costs the same time as the trained one. Random weights make SAM's own quality
scores meaningless, so each model runs twice: with SAM's default thresholds (few masks survive:
the cost of prompting and filtering) and with both thresholds at 0 (every mask survives until
NMS: an upper bound on the post-processing and storage of a real model). Models:

* ``tiny``: width 32, 2 blocks, 1024 px input: the generator's cost (1024 prompts through the
  mask decoder, 1024² mask logits per prompt, NMS, RLE) with an almost free image encoder;
* ``vit_b``: SAM ViT-B (the smallest official SAM): adds the image encoder.

Each run is its own process (peak RSS is per process). Wall seconds depend on what else runs
on the machine; CPU seconds (all threads) do much less: on a shared machine read those. The image is a VOC 2012 image of
../shared/data/voc2012-mini (500×375) when present, else random pixels of that size.

    .venv/bin/python bench/sam_speed.py                  # tiny and vit_b, points_per_side 32
    .venv/bin/python bench/sam_speed.py --models tiny --points 16 32 --json sam.json
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
VOC_IMAGE = REPO.parent / "shared/data/voc2012-mini/VOCdevkit/VOC2012/JPEGImages/2007_000032.jpg"


def build(model: str):
    """A random SAM of ``model`` ("tiny" or an official name)."""
    import torch

    from smaf.sam import build_sam, sam_architecture

    torch.manual_seed(0)
    if model == "tiny":
        sys.path.insert(0, str(REPO / "tests"))
        from dataclasses import replace

        from sam_utils import TINY_SAM

        arch = replace(TINY_SAM, image_size=1024, patch_size=16, window_size=14)
    else:
        from segment_anything import sam_model_registry

        with torch.device("meta"):
            arch = sam_architecture(sam_model_registry[model]().state_dict())
    return build_sam(arch)


def one_run(model: str, points: int, loose: bool) -> dict:
    """Time one image in this process; return the measurements."""
    import tempfile

    import torch

    from smaf.io import load_image
    from smaf.sam import SamSettings, generate_masks, save_masks

    torch.set_num_threads(torch.get_num_threads())
    image = (
        load_image(VOC_IMAGE)
        if VOC_IMAGE.is_file()
        else (np.random.default_rng(0).random((375, 500, 3)) * 255).astype(np.uint8)
    )
    sam = build(model)
    rss_model = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    thresholds = {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0} if loose else {}
    settings = SamSettings(points_per_side=points, **thresholds)
    t0, c0 = time.perf_counter(), time.process_time()
    with torch.no_grad():
        sam_input = torch.zeros(1, 3, sam.image_encoder.img_size, sam.image_encoder.img_size)
        sam.image_encoder(sam_input)
    encoder_s, encoder_cpu = time.perf_counter() - t0, time.process_time() - c0
    t0, c0 = time.perf_counter(), time.process_time()
    masks = generate_masks(sam, image, settings)
    total_s, total_cpu = time.perf_counter() - t0, time.process_time() - c0
    with tempfile.TemporaryDirectory() as tmp:
        save_masks(Path(tmp) / "m.json", masks)
        size = (Path(tmp) / "m.json").stat().st_size
    return {
        "model": model,
        "points_per_side": points,
        "thresholds": "0 (all kept)" if loose else "SAM default",
        "image": f"{image.shape[1]}x{image.shape[0]}",
        "threads": torch.get_num_threads(),
        "s_per_image": round(total_s, 2),
        "cpu_s_per_image": round(total_cpu, 2),  # all threads' CPU time: robust to other load
        "encoder_s": round(encoder_s, 2),
        "encoder_cpu_s": round(encoder_cpu, 2),
        "masks": len(masks),
        "file_kb": round(size / 1024, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "model_rss_mb": round(rss_model),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["tiny", "vit_b"])
    ap.add_argument("--points", type=int, nargs="+", default=[32])
    ap.add_argument(
        "--thresholds",
        choices=["default", "zero", "both"],
        default="both",
        help="SAM's default quality thresholds, both at 0 (all masks kept), or both runs",
    )
    ap.add_argument("--json", type=Path, help="also write the rows here")
    ap.add_argument("--one", nargs=3, metavar=("MODEL", "POINTS", "LOOSE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        model, points, loose = args.one
        print(json.dumps(one_run(model, int(points), loose == "1")))
        return
    rows = []
    for model in args.models:
        for points in args.points:
            for loose in {"default": ("0",), "zero": ("1",), "both": ("0", "1")}[args.thresholds]:
                cmd = [sys.executable, __file__, "--one", model, str(points), loose]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                rows.append(json.loads(out.strip().splitlines()[-1]))
                print(rows[-1], flush=True)
    print(f"# {platform.processor() or platform.machine()}, python {platform.python_version()}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

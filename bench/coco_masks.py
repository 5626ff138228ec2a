"""COCO mask conversion at COCO scale (rule coco_masks): memory and time of one shard job.

Writes a synthetic ``instances_train2014.json`` the size of the real one (82,783 images of
640x480, 7.3 annotations per image on average, polygons of ~24 points: about 330 MB, COCO's
count and shape statistics; no real COCO file is needed), then, each in a fresh process:

* ``load``: :func:`smaf.data.coco_masks.load_annotations` of the whole file (s, peak RSS MB): what
  every shard job pays before converting, and what the rule's ``mem_mb`` must cover;
* ``shard``: :func:`smaf.data.coco_masks.convert_masks` of a 1/160 shard (about 520 images),
  images/s of the conversion itself (the load time subtracted).

    .venv/bin/python bench/coco_masks.py [--images 82783] [--out /tmp/coco_bench]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

_CHILD = """
import json, resource, sys, time
from smaf.data.coco_masks import convert_masks, load_annotations
path, out, k, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
t0 = time.perf_counter()
ann = load_annotations(path)
t1 = time.perf_counter()
res = convert_masks(ann, out, shard=(k, n)) if n else None
t2 = time.perf_counter()
print(json.dumps({"load_s": t1 - t0, "convert_s": t2 - t1,
                  "images": (res["end"] - res["start"]) if res else 0,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def synthetic_instances(n_images: int, seed: int = 0) -> dict:
    """COCO-shaped annotations: polygons (ellipse-like, 24 points) on 640x480 images."""
    rng = np.random.default_rng(seed)
    images, anns = [], []
    for k in range(n_images):
        image_id = k + 1
        images.append(
            {"license": 1, "file_name": f"COCO_train2014_{image_id:012d}.jpg", "height": 480,
             "width": 640, "id": image_id}
        )  # fmt: skip
        for _ in range(rng.poisson(7.3)):
            cx, cy = rng.uniform(40, 600), rng.uniform(40, 440)
            rx, ry = rng.uniform(5, 150, size=2)
            t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
            xs = np.clip(cx + rx * np.cos(t), 0, 639)
            ys = np.clip(cy + ry * np.sin(t), 0, 479)
            poly = np.round(np.stack([xs, ys], 1).ravel(), 2).tolist()
            anns.append(
                {"segmentation": [poly], "area": float(np.pi * rx * ry), "iscrowd": 0,
                 "image_id": image_id, "bbox": [float(xs.min()), float(ys.min()),
                 float(xs.max() - xs.min()), float(ys.max() - ys.min())],
                 "category_id": int(rng.choice([1, 3, 18, 62, 44])), "id": len(anns) + 1}
            )  # fmt: skip
    cats = [{"supercategory": "x", "id": c, "name": str(c)} for c in (1, 3, 18, 44, 62)]
    return {"images": images, "annotations": anns, "categories": cats}


def _child(path: Path, out: Path, k: int, n: int) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path), str(out), str(k), str(n)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=82783)
    parser.add_argument("--out", type=Path, default=Path("/tmp/coco_bench"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "instances_train2014.json"
    t0 = time.perf_counter()
    path.write_text(json.dumps(synthetic_instances(args.images)))
    size_mb = path.stat().st_size / 1e6
    print(f"wrote {path}: {size_mb:.0f} MB in {time.perf_counter() - t0:.0f} s")
    load = _child(path, args.out / "masks", 0, 0)
    print(f"load: {load['load_s']:.1f} s, peak RSS {load['rss_mb']:.0f} MB "
          f"({load['rss_mb'] / size_mb:.1f}x the file)")  # fmt: skip
    shard = _child(path, args.out / "masks", 1, 160)
    rate = shard["images"] / shard["convert_s"]
    print(f"shard 1/160: {shard['images']} images in {shard['convert_s']:.1f} s = {rate:.1f} "
          f"images/s (one core), peak RSS {shard['rss_mb']:.0f} MB")  # fmt: skip


if __name__ == "__main__":
    main()

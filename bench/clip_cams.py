"""Throughput of the CLIP base's CAMs (smaf.clip, CLIP-ES's method) on this machine's CPU.

A random model of ViT-B/16's shapes (the weights do not change the work), VOC-sized images
(500 x 375, resized to 512 x 384: 32 x 24 patches), two present classes (VOC train averages
about 1.5), CLIP-ES's settings (one scale, no flip): per image one forward, one backward per
present class, the affinity refinement and the resize to image size. The text features are
computed once before timing, as a run does once per dataset.

Prints one JSON line ``{"images_per_s": ..., "cpu_s_per_image": ..., "peak_rss_mb": ...,
"images": ...}``; ``cpu_s_per_image`` is the process's CPU time (all threads) per timed image,
which other processes on a shared machine change much less than the wall rate; the peak RSS
is this process's (model, activations, Python). bench/cpu.py runs it as a child (2 images).

    .venv/bin/python bench/clip_cams.py [--images 4] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import time

import numpy as np
import torch

from smaf.clip import ClipCAMConfig, background_words, class_prompts, image_cams, text_features
from smaf.clip.model import Clip, ClipArch

#: OpenAI's ViT-B/16 CLIP.
VIT_B16 = ClipArch(
    embed_dim=512,
    vision_width=768,
    vision_layers=12,
    patch_size=16,
    grid=14,
    context_length=77,
    vocab_size=49408,
    text_width=512,
    text_layers=12,
)
VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip


def random_clip(arch: ClipArch = VIT_B16, seed: int = 0) -> Clip:
    """A CLIP of ``arch``'s shapes with random weights (LayerNorms as initialised)."""
    torch.manual_seed(seed)
    model = Clip(arch)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2 or name.endswith(("class_embedding", "bias")):
                p.normal_(std=0.02)
        model.logit_scale.fill_(math.log(100.0))
    return model.eval()


def measure(
    images: int = 4, size: tuple[int, int] = (375, 500), arch: ClipArch = VIT_B16
) -> dict[str, float]:
    """Images/s of :func:`smaf.clip.image_cams` over ``images`` images after one warm-up."""
    model = random_clip(arch)
    cfg = ClipCAMConfig()
    prompts = class_prompts(VOC_CLASSES, "voc")
    class_text = text_features(model, prompts, cfg.template)
    bg_text = text_features(model, background_words(cfg, "voc", prompts), cfg.template)
    rng = np.random.default_rng(0)
    batch = [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(images + 1)]
    image_cams(model, batch[0], [0, 14], class_text, bg_text, cfg)  # warm-up
    t0, c0 = time.perf_counter(), time.process_time()
    for img in batch[1:]:
        image_cams(model, img, [0, 14], class_text, bg_text, cfg)
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "images_per_s": images / seconds,
        "cpu_s_per_image": cpu_seconds / images,
        "peak_rss_mb": peak,
        "images": images,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4, help="timed images (after 1 warm-up)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(json.dumps(measure(args.images)))


if __name__ == "__main__":
    main()

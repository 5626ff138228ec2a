"""The CLIP base's CAMs and SAM's automatic masks on a GPU (issues 22 and 23): bench/gpu.py's
``clip`` and ``sam`` benchmark groups.

* ``clip_cams``: :func:`smaf.clip.image_cams` (what the ``clip_maps`` stage runs per image) with
  a random CLIP of ViT-B/16's shapes on 500×375 images with two present classes (VOC train
  averages about 1.5), CLIP-ES's settings (one scale, no flip): one forward, one backward per
  present class, the affinity refinement, the resize to image size. The text features are made
  once before timing, as a run does once per dataset.
* ``sam_masks``: :func:`smaf.sam.generate_masks` (SAM's automatic mask generator) with random
  SAM ViT-B and ViT-H (the official architectures, segment_anything's builders' shapes) on a
  500×375 image at SAM's default settings (32 × 32 point prompts in batches of 64). Random
  weights make SAM's quality scores meaningless, so each model runs with SAM's thresholds (few
  masks survive: the cost of prompting and filtering) and with both thresholds at 0
  (``*_all_kept``: every mask survives until NMS, an upper bound on the post-processing).

Both run in fp32, as the stages do. FLOPs are counted with ``torch.utils.flop_counter``: CLIP's on
the run's device (forward and backward), SAM's on the ``meta`` device (no memory, no time):
the image encoder at its 1024² input and the mask decoder per prompt, times the prompts. Peak
memory is ``torch.cuda.max_memory_allocated`` (CUDA only). ``--smoke`` runs a tiny CLIP and a
tiny SAM (64 px input, 4 × 4 points) on a small image: every code path in seconds on the CPU.
"""

from __future__ import annotations

import importlib
import math
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from clip_cams import VIT_B16, VOC_CLASSES, random_clip
from gpu_common import Row, count_flops, fmt, median_time, peak_mb, reset_peak, synchronize

from smaf.clip import (
    ClipArch,
    ClipCAMConfig,
    arch_from_state_dict,
    background_words,
    class_prompts,
    image_cams,
    text_features,
)
from smaf.sam import (
    SamArchitecture,
    SamSettings,
    build_sam,
    generate_masks,
    require_segment_anything,
    sam_architecture,
)

#: bench/gpu.py's ``--benchmarks`` groups of this module.
GROUPS = ("clip", "sam")
VOC_HW = (375, 500)  # a VOC image (H, W)
CLIP_CLASSES = (0, 14)  # aeroplane, person: two present classes per image
#: Image counts of a real run on the GPU (a smoke run: 2 CLIP images, 1 SAM image).
CLIP_IMAGES, SAM_IMAGES = 16, 3
#: Dataset sizes of the on-paper lines: VOC 2012 train_aug, COCO 2014 train.
DATASETS = (("VOC train_aug", 10_582), ("COCO train", 82_783))
ALL_KEPT = {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}


@dataclass(frozen=True)
class BasesSetup:
    """Sizes of one run of the CLIP and SAM benchmarks."""

    clip_arch: ClipArch
    image_hw: tuple[int, int]  # (H, W) of the CLIP and SAM images
    clip_images: int  # timed CLIP images (after the warm-up)
    sam_models: tuple[str, ...]  # "vit_b", "vit_h" (official shapes) or "tiny"
    sam_images: int  # timed SAM images per model and thresholds
    points_per_side: int


def _tests_module(name: str):
    """A helper module of tests/ (the tests' tiny models), as bench/sam_speed.py imports it."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    return importlib.import_module(name)


def tiny_clip_arch() -> ClipArch:
    """The tests' tiny CLIP (tests/clip_checkpoint.py), read from its state dict's shapes."""
    return arch_from_state_dict(_tests_module("clip_checkpoint").tiny_clip_state())


def make_bases_setup(smoke: bool, images: int | None = None) -> BasesSetup:
    """Real runs: ViT-B/16 CLIP, SAM ViT-B and ViT-H, VOC-sized images; smoke runs: tiny ones."""
    if smoke:
        return BasesSetup(tiny_clip_arch(), (48, 64), images or 2, ("tiny",), 1, 4)
    return BasesSetup(VIT_B16, VOC_HW, images or CLIP_IMAGES, ("vit_b", "vit_h"), SAM_IMAGES, 32)


def random_images(n: int, hw: tuple[int, int], seed: int = 0) -> list[np.ndarray]:
    """``n`` uint8 RGB ``[H, W, 3]`` images of random pixels (the work does not depend on them)."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (*hw, 3), dtype=np.uint8) for _ in range(n)]


# -------------------------------------------------------------------------------- CLIP


def bench_clip(setup: BasesSetup, device: torch.device, warmup: int, peak: float) -> list[Row]:
    """``clip_cams`` rows: TFLOP, s/image, images/s, % of the bf16 matmul peak, peak memory."""
    print("CLIP CAMs ...", flush=True)
    model = random_clip(setup.clip_arch).to(device)
    cfg = ClipCAMConfig()
    prompts = class_prompts(VOC_CLASSES, "voc")
    class_text = text_features(model, prompts, cfg.template)
    bg_text = text_features(model, background_words(cfg, "voc", prompts), cfg.template)
    images = random_images(setup.clip_images, setup.image_hw)

    def cams(image: np.ndarray) -> None:
        image_cams(model, image, CLIP_CLASSES, class_text, bg_text, cfg)  # maps end on the host

    tflop = count_flops(lambda: cams(images[0]))
    for i in range(warmup):
        cams(images[i % len(images)])
    synchronize(device)
    reset_peak(device)
    times = []
    for image in images:
        t0 = time.perf_counter()
        cams(image)
        synchronize(device)
        times.append(time.perf_counter() - t0)
    s = statistics.median(times)
    (h, w), k = setup.image_hw, len(CLIP_CLASSES)
    arch = setup.clip_arch
    what = f"ViT width {arch.vision_width} × {arch.vision_layers}, patch {arch.patch_size}"
    rows: list[Row] = [
        ("clip_cams", "tflop_per_image", tflop, f"TFLOP ({what}; {w}×{h}; 1 fwd + {k} bwd)"),
        ("clip_cams", "classes_per_image", k, "present classes"),
        ("clip_cams", "vision_width", arch.vision_width, "channels"),
        ("clip_cams", "patch_size", arch.patch_size, "px"),
        ("clip_cams", "s_per_image", s, f"s/image (fp32, median of {len(images)})"),
        ("clip_cams", "images_per_s", 1 / s, "images/s"),
        ("clip_cams", "tflops", tflop / s, "TFLOP/s"),
        ("clip_cams", "pct_peak", 100 * tflop / s / peak, "% of bf16 matmul"),
    ]
    mb = peak_mb(device)
    return rows if mb is None else [*rows, ("clip_cams", "peak_mem_mb", mb, "MB")]


# --------------------------------------------------------------------------------- SAM


def sam_arch(model: str) -> SamArchitecture:
    """``tiny`` or an official model's architecture, read from segment_anything's builder on the
    ``meta`` device (no weights, no memory)."""
    if model == "tiny":  # the tests' tiny SAM (tests/sam_utils.py)
        return _tests_module("sam_utils").TINY_SAM
    sa = require_segment_anything()
    with torch.device("meta"):
        return sam_architecture(sa.sam_model_registry[model]().state_dict(), model)


def sam_flops(arch: SamArchitecture, points_per_side: int) -> tuple[float, float]:
    """(image encoder TFLOP, mask decoder TFLOP for ``points_per_side²`` prompts) per image,
    counted on the ``meta`` device. The decoder runs each prompt against the whole image
    embedding (three masks per prompt, upscaled 4×): its cost is linear in the prompts."""
    with torch.device("meta"):
        sam = build_sam(arch)
    side, grid, dim = arch.image_size, arch.image_size // arch.patch_size, arch.prompt_dim
    batch = 8
    meta = torch.device("meta")
    with torch.no_grad():
        x = torch.zeros(1, 3, side, side, device=meta)
        encoder = count_flops(lambda: sam.image_encoder(x))
        emb = torch.zeros(1, dim, grid, grid, device=meta)
        sparse = torch.zeros(batch, 2, dim, device=meta)  # a point and the padding point
        dense = torch.zeros(batch, dim, grid, grid, device=meta)  # the "no mask" embedding
        decoder = count_flops(
            lambda: sam.mask_decoder(
                image_embeddings=emb,
                image_pe=sam.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=True,
            )
        )
    return encoder, decoder / batch * points_per_side**2


def time_masks(
    sam: torch.nn.Module,
    images: Sequence[np.ndarray],
    settings: SamSettings,
    warmup: int,
    device: torch.device,
) -> tuple[float, float, float | None]:
    """(median s/image, mean masks kept, peak MB) of :func:`smaf.sam.generate_masks`."""
    for i in range(warmup):
        generate_masks(sam, images[i % len(images)], settings)
    synchronize(device)
    reset_peak(device)
    times, masks = [], []
    for image in images:
        t0 = time.perf_counter()
        masks.append(len(generate_masks(sam, image, settings)))  # RLEs end on the host
        times.append(time.perf_counter() - t0)
    return statistics.median(times), float(np.mean(masks)), peak_mb(device)


def bench_sam_model(
    model: str, setup: BasesSetup, device: torch.device, warmup: int, peak: float
) -> list[Row]:
    """``sam_masks`` rows of one model (metrics suffixed ``_<model>``)."""
    print(f"SAM masks ({model}) ...", flush=True)
    arch = sam_arch(model)
    pps = setup.points_per_side
    encoder_tflop, decoder_tflop = sam_flops(arch, pps)
    tflop = encoder_tflop + decoder_tflop
    torch.manual_seed(0)
    with torch.device(device):
        sam = build_sam(arch)
    sam = sam.to(device)  # the few buffers segment_anything makes with torch.Tensor(...)
    side = arch.image_size
    with torch.inference_mode():
        x = torch.zeros(1, 3, side, side, device=device)
        encoder_s = median_time(lambda: sam.image_encoder(x), warmup, 3, device)
    images = random_images(setup.sam_images, setup.image_hw, seed=1)
    (h, w), m = setup.image_hw, model
    rows: list[Row] = [
        ("sam_masks", f"tflop_encoder_{m}", encoder_tflop, f"TFLOP ({side}² input)"),
        ("sam_masks", f"tflop_decoder_{m}", decoder_tflop, f"TFLOP ({pps}² prompts)"),
        ("sam_masks", f"tflop_per_image_{m}", tflop, "TFLOP"),
        ("sam_masks", f"encoder_s_{m}", encoder_s, "s (median of 3)"),
    ]
    times = {}
    for suffix, thresholds in (("", {}), ("all_kept_", ALL_KEPT)):
        settings = SamSettings(points_per_side=pps, **thresholds)
        s, masks, mb = time_masks(sam, images, settings, warmup, device)
        times[suffix] = s
        rows += [
            ("sam_masks", f"s_per_image_{suffix}{m}", s, f"s/image ({w}×{h}, fp32)"),
            ("sam_masks", f"images_per_s_{suffix}{m}", 1 / s, "images/s"),
            ("sam_masks", f"masks_{suffix}{m}", masks, "masks kept per image"),
        ]
        if mb is not None:
            rows.append(("sam_masks", f"peak_mem_mb_{suffix}{m}", mb, "MB"))
    s = times[""]  # with SAM's thresholds
    rows += [
        ("sam_masks", f"tflops_{m}", tflop / s, "TFLOP/s"),
        ("sam_masks", f"pct_peak_{m}", 100 * tflop / s / peak, "% of bf16 matmul"),
    ]
    return rows


def bench_bases(
    groups: Sequence[str],
    smoke: bool,
    images: int | None,
    device: torch.device,
    warmup: int,
    peak: float,
) -> list[Row]:
    """The rows of the ``clip`` and ``sam`` groups named in ``groups``."""
    setup = make_bases_setup(smoke, images)
    rows: list[Row] = []
    if "clip" in groups:
        rows += bench_clip(setup, device, warmup, peak)
    if "sam" in groups:
        rows.append(("sam_masks", "points_per_side", setup.points_per_side, "points"))
        for model in setup.sam_models:
            rows += bench_sam_model(model, setup, device, warmup, peak)
            if device.type == "cuda":
                torch.cuda.empty_cache()  # the last model's cached blocks
    return rows


# ------------------------------------------------------------------------------ output


def hours(s_per_image: float, images: int) -> str:
    """``images`` at ``s_per_image`` as hours (or minutes below one hour) on one device."""
    total = s_per_image * images
    return f"{total / 3600:.1f} h" if total >= 3600 else f"{math.ceil(total / 60)} min"


def render_bases(rows: Sequence[Row]) -> list[str]:
    """Markdown lines of the CLIP and SAM rows (none when neither ran)."""
    get = {(b, m): v for b, m, v, _ in rows}
    lines: list[str] = []
    if ("clip_cams", "s_per_image") not in get and ("sam_masks", "points_per_side") not in get:
        return lines
    lines += [
        "| base pass | model | TFLOP/image | s/image | images/s | % of peak | peak MB | masks |",
        "|---|---|---|---|---|---|---|---|",
    ]
    per_dataset: list[tuple[str, float]] = []
    if ("clip_cams", "s_per_image") in get:
        s = get["clip_cams", "s_per_image"]
        cells = [get["clip_cams", "tflop_per_image"], s, 1 / s, get["clip_cams", "pct_peak"]]
        cells.append(get.get(("clip_cams", "peak_mem_mb")))
        width, patch = get["clip_cams", "vision_width"], get["clip_cams", "patch_size"]
        model = "ViT-B/16" if (width, patch) == (768, 16) else f"ViT {width:.0f}/{patch:.0f}"
        lines.append(f"| clip_cams | {model} | " + " | ".join(map(fmt, cells)) + " | |")
        per_dataset.append(("CLIP CAMs", s))
    models = sorted({m.removeprefix("tflop_per_image_") for b, m in get if b == "sam_masks"
                     and m.startswith("tflop_per_image_")})  # fmt: skip
    for m in models:
        for suffix, label in (("", "SAM thresholds"), ("all_kept_", "all kept")):
            s = get["sam_masks", f"s_per_image_{suffix}{m}"]
            pct = get["sam_masks", f"pct_peak_{m}"] if not suffix else None
            cells = [get["sam_masks", f"tflop_per_image_{m}"], s, 1 / s, pct]
            cells += [get.get(("sam_masks", f"peak_mem_mb_{suffix}{m}"))]
            cells += [get["sam_masks", f"masks_{suffix}{m}"]]
            lines.append(f"| sam_masks ({label}) | {m} | " + " | ".join(map(fmt, cells)) + " |")
            per_dataset.append((f"SAM {m} ({label})", s))
    lines.append("")
    lines.append(
        f"- CLIP and SAM run in fp32, as the stages do (float32 matmul precision "
        f"`{torch.get_float32_matmul_precision()}`); SAM at "
        f"{fmt(get.get(('sam_masks', 'points_per_side')))} points per side; masks: kept per image."
    )
    for name, n in DATASETS:
        lines.append(
            f"- {name} ({n:,} images) on this device at these rates: "
            + "; ".join(f"{what} {hours(s, n)}" for what, s in per_dataset)
            + "."
        )
    return lines

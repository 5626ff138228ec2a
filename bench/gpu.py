"""GPU benchmarks of the training and inference steps (issue 8): results/bench/gpu.csv, BENCHMARKS.md.

Measures, with the library's own step functions (what the pipeline runs) on random weights and
random / synthetic data, at the sizes of ``config/voc2012.yaml`` (the paper's):

* ``eps_step``: one EPS pretraining step (:func:`smaf.stages.pretrain.eps_step`), ResNet38d
  width 1.0, batch 8, crop 448;
* ``smaf_step_offline`` / ``smaf_step_online``: one SMAF self-training step
  (:func:`smaf.stages.self_train.smaf_step`), the teacher's maps given with the batch /
  computed by the frozen teacher at 4 scales × flip in the step (``tflop_teacher``);
* ``deeplab_step``: one DeepLab-v2 MSC step (:func:`smaf.stages.deeplab.deeplab_step`) of the
  preset's backbone (ResNet-101), batch 10 as 2 × 5 accumulated, crop 321;
* ``seeds``: :func:`smaf.cam.class_maps` + :func:`smaf.cam.seed_labels` (4 scales × flip) per
  500×375 image; ``crf``: the CRF stage's ``labels`` CRF in a process pool; ``seeds_crf_amortised``:
  the CRF of each image run by the pool while the GPU computes the next image's seeds;
  ``teacher_pass``: the offline teacher's per-image work (maps + their files, as
  :func:`smaf.stages.teacher.teacher_maps` does it);
* ``clip_cams`` / ``sam_masks`` (groups ``clip``, ``sam``; bench/gpu_bases.py): the CLIP base's
  CAMs (random ViT-B/16, 500×375, one forward + one backward per present class) and SAM's
  automatic masks (random ViT-B and ViT-H, 32 × 32 points, 500×375), in fp32 as the stages run;
* ``matmul_bf16``: the device's measured bf16 matmul rate (the "peak" of ``pct_peak_*``).

Every step and pass runs in several variants (``fp32``: no autocast, torch's default math
settings, under which cuDNN convolutions may use TF32; ``bf16``: bf16 autocast, what
``train.amp`` does; ``bf16_cl``: + channels_last model and inputs; ``bf16_cl_compile``: +
``torch.compile``). Batches live on the device already (no host-to-device copies are timed).
Times are medians of the timed steps after warm-up steps, each closed by a device
synchronisation; peak memory is ``torch.cuda.max_memory_allocated`` (CUDA only); FLOPs are
counted once per step kind in fp32 eager mode with ``torch.utils.flop_counter`` (matmuls and
convolutions, forward + backward), TFLOP/s = FLOPs / median time. Whether a variant "gives the
same numbers": ``loss_rel_diff_<variant>`` is the largest relative difference from the
reference variant (the first, normally fp32) of the losses of two steps from the same start on
the same batch, dropout off; ``seed_agreement_<variant>`` the share of seed pixels equal to the
reference's. ``best_*`` names the fastest variant within ``--tolerance`` of the reference.

The pipeline runs the seeds and CRF rules one after the other: ``s_per_image_sequential_*``
(seeds + CRF at the pool's rate) is what it spends per image today, ``s_per_image_overlapped_*``
what the overlapped design would.

Writes ``benchmark,metric,value,unit`` rows to ``--out`` (a failed ``torch.compile`` variant
leaves an ``error_<variant>`` row whose unit is the error) and, unless ``--smoke`` or
``--no-markdown``, replaces the section between the ``bench:gpu`` markers of BENCHMARKS.md.

    .venv/bin/python bench/gpu.py                          # CUDA, every benchmark and variant
    .venv/bin/python bench/gpu.py --benchmarks seeds --variants fp32,bf16 --no-markdown
    .venv/bin/python bench/gpu.py --smoke                  # tiny sizes on the CPU (~10 s)
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import functools
import gc
import math
import multiprocessing
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import gpu_bases
import numpy as np
import torch
import yaml
from gpu_common import (
    Row,
    count_flops,
    device_name,
    fmt,
    matmul_peak,
    median_time,
    peak_mb,
    reset_peak,
    write_csv,
)
from markdown_section import replace_section
from PIL import Image
from torch import nn

from smaf.cam import CAMConfig, class_maps, seed_labels
from smaf.config import dataclass_from, deep_merge
from smaf.crf import crf_from_labels
from smaf.data.synthetic_generator import SyntheticConfig, generate_sample
from smaf.io import save_maps, save_mask
from smaf.models.build import ModelConfig, build_classifier
from smaf.models.deeplab import DeepLabConfig, build_deeplab
from smaf.settings import (
    PREVIEW_THR,
    CRFSettings,
    DeepLabSettings,
    PretrainSettings,
    SeedsSettings,
    SelfTrainSettings,
)
from smaf.stages.deeplab import deeplab_step
from smaf.stages.pretrain import eps_step
from smaf.stages.self_train import smaf_step
from smaf.train import LoopConfig, OptimConfig, StepFn, build_optimizer, resolve_device
from smaf.transforms import DeepLabAugment

REPO = Path(__file__).resolve().parents[1]
HEADING = "## GPU (`bench/gpu.py`)"
C = 20  # VOC foreground classes
#: The issue's targets, repeated in the Markdown table.
TARGETS = "≤ 0.08 s/iter for EPS/SMAF steps, ≤ 0.15 s/img for seeds + CRF amortised"
#: Benchmark groups of ``--benchmarks``: training step kinds, the inference passes, then the
#: CLIP and SAM bases (bench/gpu_bases.py).
TRAIN_GROUPS = {
    "eps": "eps_step",
    "smaf_offline": "smaf_step_offline",
    "smaf_online": "smaf_step_online",
    "deeplab": "deeplab_step",
}
GROUPS = (*TRAIN_GROUPS, "seeds", *gpu_bases.GROUPS)


@dataclass(frozen=True)
class Variant:
    """One way of running the same step: precision, memory layout, compilation."""

    name: str
    amp: bool  # bf16 autocast
    channels_last: bool  # model and 4-D inputs in channels_last
    compile: bool  # nn.Module.compile() (torch.compile in place)


VARIANTS = {
    v.name: v
    for v in (
        Variant("fp32", amp=False, channels_last=False, compile=False),
        Variant("bf16", amp=True, channels_last=False, compile=False),
        Variant("bf16_cl", amp=True, channels_last=True, compile=False),
        Variant("bf16_cl_compile", amp=True, channels_last=True, compile=True),
    )
}


@dataclass(frozen=True)
class Setup:
    """The configuration preset and the sizes one run measures."""

    preset: dict[str, Any]  # merged workflow config (model, pretrain, self_train, ... sections)
    width: float  # classifier (ResNet38d) channel multiplier
    batch_size: int  # EPS / SMAF images per step
    crop: int  # EPS / SMAF square crop, px
    deeplab_batch: int  # DeepLab images per optimizer step
    deeplab_accum: int  # micro-batches per DeepLab step
    deeplab_crop: int  # DeepLab square crop, px
    image_hw: tuple[int, int]  # seed / teacher image size (H, W)
    images: int  # images of the seed, CRF and teacher passes
    matmul_n: int  # size of the square bf16 matmuls of the peak measurement


# ------------------------------------------------------------------------- pure helpers


def pct_of_peak(tflops: float, peak_tflops: float) -> float:
    """``tflops`` as a percentage of ``peak_tflops`` (both TFLOP/s)."""
    return 100.0 * tflops / peak_tflops


def rel_diff(values: Sequence[float], reference: Sequence[float]) -> float:
    """Largest ``|v - r| / |r|`` over paired values (``|r|`` floored at 1e-12); NaN if any is."""
    return max(abs(v - r) / max(abs(r), 1e-12) for v, r in zip(values, reference, strict=True))


def fastest_within(
    times: dict[str, float], diffs: dict[str, float], tolerance: float
) -> str | None:
    """The variant of ``times`` with the smallest time among those whose difference from the
    reference is at most ``tolerance`` (a variant missing from ``diffs`` counts as 0, a NaN
    difference as too large); ``None`` if there is none."""
    ok = {v: t for v, t in times.items() if diffs.get(v, 0.0) <= tolerance}
    return min(ok, key=ok.__getitem__) if ok else None


# ------------------------------------------------------------------------------- set-up


def load_preset(smoke: bool) -> dict[str, Any]:
    """``config.yaml`` (the CPU demo: smoke runs) or with ``config/voc2012.yaml`` merged over it."""
    preset = yaml.safe_load((REPO / "config.yaml").read_text())
    if not smoke:
        preset = deep_merge(preset, yaml.safe_load((REPO / "config/voc2012.yaml").read_text()))
    return preset


def deeplab_config(
    preset: dict[str, Any],
) -> tuple[DeepLabConfig, LoopConfig, OptimConfig, DeepLabAugment]:
    """The preset's ``deeplab`` settings' parts, without weights to load."""
    s = DeepLabSettings.from_dict({**preset["deeplab"], "pretrained": None})
    return replace(s.model, num_classes=C), s.loop, s.optim, s.augment


def make_setup(smoke: bool, images: int | None = None) -> Setup:
    """Real runs: the VOC preset's sizes and 500×375 images; smoke runs: tiny ones."""
    preset = load_preset(smoke)
    if smoke:
        return Setup(preset, 0.125, 2, 64, 2, 1, 64, (48, 64), images or 2, 256)
    pretrain = PretrainSettings.from_dict(preset["pretrain"])
    loop, augment = pretrain.loop, pretrain.augment
    _, dl_loop, _, dl_augment = deeplab_config(preset)
    return Setup(
        preset,
        width=float(preset["model"]["width"]),
        batch_size=loop.batch_size,
        crop=augment.crop_size,
        deeplab_batch=dl_loop.batch_size,
        deeplab_accum=dl_loop.grad_accum,
        deeplab_crop=dl_augment.crop_size,
        image_hw=(375, 500),
        images=images or 32,
        matmul_n=8192,
    )


def prepare(model: nn.Module, variant: Variant, device: torch.device) -> nn.Module:
    """A copy of ``model`` on ``device`` in the variant's memory layout, compiled if asked."""
    model = copy.deepcopy(model).to(device)
    if variant.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if variant.compile:
        model.compile()
    return model


def to_variant(batch: dict[str, torch.Tensor], variant: Variant) -> dict[str, torch.Tensor]:
    """The batch with its 4-D float tensors in the variant's memory layout."""
    if not variant.channels_last:
        return batch
    return {
        k: v.contiguous(memory_format=torch.channels_last)
        if v.ndim == 4 and v.is_floating_point()
        else v
        for k, v in batch.items()
    }


def set_dropout(model: nn.Module, active: bool) -> None:
    """Switch the dropout layers of ``model`` on (train mode) or off, leaving the rest as is."""
    for m in model.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            m.train(active)


def frozen_copy(model: nn.Module) -> nn.Module:
    """The online teacher as :func:`smaf.stages.self_train.self_train` makes it."""
    teacher = copy.deepcopy(model).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def peak_rows(bench: str, variant: Variant, device: torch.device) -> list[Row]:
    """The peak allocated memory since :func:`reset_peak` (CUDA only: none on the CPU)."""
    mb = peak_mb(device)
    return [] if mb is None else [(bench, f"peak_mem_mb_{variant.name}", mb, "MB")]


def free_memory(variant: Variant, device: torch.device) -> None:
    """Drop what the last variant left: compiled graphs, cached device memory."""
    gc.collect()
    if variant.compile:
        torch._dynamo.reset()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def error_row(bench: str, variant: Variant, exc: Exception) -> Row:
    """A failed (compiled) variant, recorded instead of its numbers."""
    message = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
    print(f"  {bench} {variant.name}: skipped ({message})", flush=True)
    return (bench, f"error_{variant.name}", math.nan, message)


# ------------------------------------------------------------------------ training steps


@dataclass
class TrainCase:
    """One training step kind: its starting weights, loss function and batch."""

    name: str  # benchmark name
    model: nn.Module  # the identical start of every variant (CPU)
    make_step: Callable[[nn.Module | None], StepFn]  # prepared teacher (or None) -> step fn
    batches: list[dict[str, torch.Tensor]]  # the micro-batches of one optimizer step, on device
    optim: OptimConfig  # the stage's optimizer settings
    teacher: nn.Module | None = None  # the online teacher's start (CPU), prepared like the model


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    step_fn: StepFn,
    batches: Sequence[dict[str, torch.Tensor]],
    device: torch.device,
    amp: bool,
) -> torch.Tensor:
    """One optimizer step as :func:`smaf.train.fit` makes it; returns the mean loss (no sync)."""
    optimizer.zero_grad(set_to_none=True)
    total = torch.zeros((), device=device)
    for batch in batches:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
            loss = step_fn(model, batch, device)["loss"]
        (loss / len(batches)).backward()
        total += loss.detach() / len(batches)
    optimizer.step()
    return total


def weak_batch(b: int, s: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Random EPS / SMAF batch: normalised images, labels, saliency, teacher maps, valid mask."""
    labels = (torch.rand(b, C, generator=gen) < 0.15).float()  # [B, C]
    labels[:, 0] = 1.0  # at least one class per image, as in VOC
    return {
        "image": torch.randn(b, 3, s, s, generator=gen),  # [B, 3, S, S]
        "labels": labels,
        "saliency": torch.rand(b, s, s, generator=gen),  # [B, S, S] in [0, 1]
        "teacher": torch.rand(b, C, s, s, generator=gen),  # [B, C, S, S] fused maps
        "valid": torch.ones(b, s, s, dtype=torch.bool),  # [B, S, S] no padding
    }


def train_cases(setup: Setup, groups: Sequence[str], device: torch.device) -> Iterator[TrainCase]:
    """The training step kinds of ``groups``, built one at a time; EPS and both SMAF steps share
    the classifier's random start and batch."""
    p = setup.preset
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)  # the random weights
    model_cfg = {**p["model"], "width": setup.width, "num_classes": C, "pretrained": None}
    classifier = build_classifier(dataclass_from(ModelConfig, model_cfg, "model"))
    on_device = [
        {k: v.to(device) for k, v in weak_batch(setup.batch_size, setup.crop, gen).items()}
    ]
    cfg = PretrainSettings.from_dict(p["pretrain"])
    if "eps" in groups:
        yield TrainCase("eps_step", classifier, lambda _t: eps_step(cfg), on_device, cfg.optim)
    st = SelfTrainSettings.from_dict(p["self_train"])
    optim, cam = st.optim, st.teacher_cam
    if "smaf_offline" in groups:
        step = smaf_step(st, None, cam)
        yield TrainCase("smaf_step_offline", classifier, lambda _t: step, on_device, optim)
    if "smaf_online" in groups:
        yield TrainCase(
            "smaf_step_online",
            classifier,
            lambda t: smaf_step(st, t, cam),
            on_device,
            optim,
            teacher=frozen_copy(classifier),
        )
    del on_device
    if "deeplab" in groups:
        dl_cfg, _, optim, _ = deeplab_config(p)
        net = build_deeplab(dl_cfg)
        micro, s = setup.deeplab_batch // setup.deeplab_accum, setup.deeplab_crop
        batches = []
        for _ in range(setup.deeplab_accum):
            label = torch.randint(0, C + 1, (micro, s, s), generator=gen)  # [b, S, S]
            label[:, : s // 8] = 255  # a padded band, as random crops of small images have
            image = torch.randn(micro, 3, s, s, generator=gen)  # [b, 3, S, S]
            batches.append({"image": image.to(device), "label": label.to(device)})
        yield TrainCase("deeplab_step", net, lambda _t: deeplab_step, batches, optim)


def case_flops(case: TrainCase, device: torch.device) -> list[Row]:
    """TFLOP of one step (forward + backward), of its forward, and of the online teacher."""
    model = prepare(case.model, VARIANTS["fp32"], device).train()
    teacher = prepare(case.teacher, VARIANTS["fp32"], device) if case.teacher else None
    step_fn = case.make_step(teacher)
    optimizer = build_optimizer(model.param_groups(), case.optim)
    step = count_flops(lambda: train_step(model, optimizer, step_fn, case.batches, device, False))
    with torch.no_grad():
        forward = count_flops(lambda: [step_fn(model, b, device) for b in case.batches])
        student = count_flops(lambda: [model(b["image"]) for b in case.batches])
    rows = [
        (case.name, "tflop_per_step", step, "TFLOP"),
        (case.name, "tflop_forward", forward, "TFLOP"),
    ]
    if case.teacher is not None:
        rows.append((case.name, "tflop_teacher", forward - student, "TFLOP"))
    return rows


def bench_train_variant(
    case: TrainCase,
    variant: Variant,
    args: argparse.Namespace,
    device: torch.device,
    tflop: float,
    peak: float,
) -> tuple[list[Row], list[float]]:
    """Rows of one variant of one step kind and its two check losses (dropout off)."""
    model = prepare(case.model, variant, device).train()
    teacher = prepare(case.teacher, variant, device) if case.teacher else None
    step_fn = case.make_step(teacher)
    batches = [to_variant(b, variant) for b in case.batches]
    optimizer = build_optimizer(model.param_groups(), case.optim)

    def step() -> torch.Tensor:
        return train_step(model, optimizer, step_fn, batches, device, variant.amp)

    set_dropout(model, False)
    losses = [float(step()) for _ in range(2)]
    set_dropout(model, True)
    reset_peak(device)
    s = median_time(step, args.warmup, args.steps, device)
    v = variant.name
    rows = [
        (case.name, f"s_per_iter_{v}", s, "s/iter"),
        (case.name, f"tflops_{v}", tflop / s, "TFLOP/s"),
        (case.name, f"pct_peak_{v}", pct_of_peak(tflop / s, peak), "% of bf16 matmul"),
        *peak_rows(case.name, variant, device),
        (case.name, f"loss_step1_{v}", losses[0], "loss"),
    ]
    return rows, losses


def bench_train(
    setup: Setup,
    groups: Sequence[str],
    variants: Sequence[Variant],
    args: argparse.Namespace,
    device: torch.device,
    peak: float,
) -> list[Row]:
    """Every training step kind of ``groups`` in every variant."""
    rows: list[Row] = []
    for case in train_cases(setup, groups, device):
        print(f"{case.name} ...", flush=True)
        batch = sum(len(b["image"]) for b in case.batches)
        crop = case.batches[0]["image"].shape[-1]
        rows += [(case.name, "batch_size", batch, "images"), (case.name, "crop", crop, "px")]
        flops = case_flops(case, device)
        rows += flops
        tflop = flops[0][2]
        ref: list[float] | None = None
        times: dict[str, float] = {}
        diffs: dict[str, float] = {}
        for variant in variants:
            try:
                vrows, losses = bench_train_variant(case, variant, args, device, tflop, peak)
            except Exception as exc:
                if not variant.compile:
                    raise
                rows.append(error_row(case.name, variant, exc))
                continue
            finally:
                free_memory(variant, device)
            rows += vrows
            times[variant.name] = vrows[0][2]
            if ref is None:
                ref = losses
            else:
                diffs[variant.name] = rel_diff(losses, ref)
                rows.append((case.name, f"loss_rel_diff_{variant.name}", diffs[variant.name], ""))
        best = fastest_within(times, diffs, args.tolerance)
        if best is not None:
            rows.append((case.name, "best_s_per_iter", times[best], f"s/iter ({best})"))
    return rows


# ------------------------------------------------------------------- seeds, CRF, teacher


def seed_images(setup: Setup) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Synthetic images (the project's generator, resized to ``image_hw``) and their labels."""
    h, w = setup.image_hw
    cfg = SyntheticConfig(num_classes=C, min_size=min(h, w), max_size=max(h, w))
    images, labels = [], []
    for i in range(setup.images):
        sample = generate_sample(cfg, i)
        resized = Image.fromarray(sample.image).resize((w, h), Image.Resampling.BILINEAR)
        images.append(np.asarray(resized))  # [H, W, 3] uint8
        labels.append(sample.labels)  # [C] 0/1
    return images, labels


def extract(
    model: nn.Module, image: np.ndarray, labels: np.ndarray, cam: CAMConfig, amp: bool
) -> torch.Tensor:
    """The seeds stage's per-image computation (:func:`smaf.stages.seeds.make_seeds`):
    fused, denoised maps ``[C, H, W]`` on the device."""
    device = next(model.parameters()).device
    with (
        torch.inference_mode(),
        torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp),
    ):
        return class_maps(model, image, labels, cam)


def pass_flops(
    model: nn.Module,
    image: np.ndarray,
    labels: np.ndarray,
    cams: Sequence[CAMConfig],
    device: torch.device,
) -> list[float]:
    """TFLOP of :func:`extract` on one image for each CAM setting (fp32 eager copy of ``model``)."""
    fp32 = prepare(model, VARIANTS["fp32"], device)
    return [count_flops(functools.partial(extract, fp32, image, labels, c, False)) for c in cams]


def seeds_variant(
    model: nn.Module,
    variant: Variant,
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    cams: tuple[CAMConfig, float, CAMConfig],
    submit_crf: Callable[[tuple[np.ndarray, np.ndarray]], Any],
    out_dir: Path,
    warmup: int,
) -> dict[str, Any]:
    """One variant's three passes over ``images`` with a prepared (eval) ``model``.

    Args:
        cams: (seed CAM settings, seed background score, teacher CAM settings).
        submit_crf: ``(image, seeds) -> AsyncResult`` of the CRF pool.
        out_dir: where the teacher pass writes its maps and previews.

    Returns:
        ``seeds_s`` (median s/image of maps + seeds), ``seeds`` (the label maps),
        ``overlapped_s`` (wall s/image of seeds with each CRF handed to the pool at once, until
        the last CRF is done), ``teacher_s`` (median s/image of the teacher pass with its files).
    """
    cam, thr, teacher_cam = cams
    device = next(model.parameters()).device
    n = len(images)

    def seeds_of(i: int) -> np.ndarray:
        return seed_labels(extract(model, images[i], labels[i], cam, variant.amp), thr)

    for i in range(warmup):
        seeds_of(i % n)
    reset_peak(device)
    per_image, seeds = [], []
    for i in range(n):
        t0 = time.perf_counter()
        seeds.append(seeds_of(i))  # seed_labels copies to the host: synchronised
        per_image.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    pending = [submit_crf((images[i], seeds_of(i))) for i in range(n)]
    for result in pending:
        result.get()
    overlapped = (time.perf_counter() - t0) / n
    teacher_times = []
    for i in range(n):
        t0 = time.perf_counter()
        maps = extract(model, images[i], labels[i], teacher_cam, variant.amp)  # [C, H, W]
        save_maps(out_dir / "maps" / f"{i}.npz", maps, labels[i])
        save_mask(out_dir / f"{i}.png", seed_labels(maps, PREVIEW_THR))
        teacher_times.append(time.perf_counter() - t0)
    return {
        "seeds_s": statistics.median(per_image),
        "seeds": seeds,
        "overlapped_s": overlapped,
        "teacher_s": statistics.median(teacher_times),
    }


def bench_seeds(
    setup: Setup,
    variants: Sequence[Variant],
    args: argparse.Namespace,
    device: torch.device,
    peak: float,
) -> list[Row]:
    """Seeds, CRF, seeds + CRF overlapped, and the offline teacher pass, per variant."""
    p = setup.preset
    seeds = SeedsSettings.from_dict(p["seeds"])
    cam, thr = seeds.cam, seeds.thr
    teacher_cam = SelfTrainSettings.from_dict(p["self_train"]).teacher_cam
    crf_params = CRFSettings.from_dict(p["crf"]).labels
    crf_fn = functools.partial(crf_from_labels, num_labels=C + 1, **asdict(crf_params))
    torch.manual_seed(0)
    model_cfg = {**p["model"], "width": setup.width, "num_classes": C, "pretrained": None}
    base = build_classifier(dataclass_from(ModelConfig, model_cfg, "model")).eval()
    print("seeds, CRF, teacher pass ...", flush=True)
    images, labels = seed_images(setup)
    n, (h, w) = len(images), setup.image_hw
    size = f"{n} images {w}×{h}, {len(cam.scales)} scales" + (" × flip" if cam.flip else "")

    tflop, tflop_teacher = pass_flops(base, images[0], labels[0], (cam, teacher_cam), device)
    rows: list[Row] = [
        ("seeds", "tflop_per_image", tflop, f"TFLOP ({size})"),
        ("teacher_pass", "tflop_per_image", tflop_teacher, "TFLOP"),
    ]
    processes = args.crf_processes
    ref_seeds: list[np.ndarray] | None = None
    times: dict[str, float] = {}
    diffs: dict[str, float] = {}
    overlapped: dict[str, float] = {}
    ctx = multiprocessing.get_context("spawn")  # the parent holds CUDA: no fork
    with ctx.Pool(processes) as pool, tempfile.TemporaryDirectory() as tmp:
        blank = np.zeros(images[0].shape[:2], np.uint8)
        pool.starmap(crf_fn, [(images[0], blank)] * processes)  # start-up out of the timings
        for variant in variants:
            v = variant.name
            try:
                run = seeds_variant(
                    prepare(base, variant, device),
                    variant,
                    images,
                    labels,
                    (cam, thr, teacher_cam),
                    functools.partial(pool.apply_async, crf_fn),
                    Path(tmp) / v,
                    args.warmup,
                )
            except Exception as exc:
                if not variant.compile:
                    raise
                rows.append(error_row("seeds", variant, exc))
                continue
            finally:
                free_memory(variant, device)
            s, t_s = run["seeds_s"], run["teacher_s"]
            times[v], overlapped[v] = s, run["overlapped_s"]
            rows += [
                ("seeds", f"s_per_image_{v}", s, "s/image"),
                ("seeds", f"images_per_s_{v}", 1 / s, "images/s"),
                ("seeds", f"tflops_{v}", tflop / s, "TFLOP/s"),
                ("seeds", f"pct_peak_{v}", pct_of_peak(tflop / s, peak), "% of bf16 matmul"),
                *peak_rows("seeds", variant, device),
                ("teacher_pass", f"s_per_image_{v}", t_s, "s/image"),
                ("teacher_pass", f"images_per_s_{v}", 1 / t_s, "images/s"),
                ("teacher_pass", f"tflops_{v}", tflop_teacher / t_s, "TFLOP/s"),
                (
                    "teacher_pass",
                    f"pct_peak_{v}",
                    pct_of_peak(tflop_teacher / t_s, peak),
                    "% of bf16 matmul",
                ),
            ]
            if ref_seeds is None:
                ref_seeds = run["seeds"]
            else:
                agree = float(
                    np.mean([np.mean(a == b) for a, b in zip(run["seeds"], ref_seeds, strict=True)])
                )
                diffs[v] = 1.0 - agree
                rows.append(("seeds", f"seed_agreement_{v}", agree, "fraction of pixels"))
        if ref_seeds is None:  # every variant failed
            return rows
        t0 = time.perf_counter()
        pool.starmap(crf_fn, list(zip(images, ref_seeds, strict=True)), chunksize=1)
        crf_s = (time.perf_counter() - t0) / n
    rows += [
        ("crf", "images_per_s", 1 / crf_s, f"images/s ({processes} CRF processes)"),
        ("crf", "processes", processes, "processes"),
    ]
    for v, s in times.items():
        rows += [
            ("seeds_crf_amortised", f"s_per_image_overlapped_{v}", overlapped[v], "s/image"),
            ("seeds_crf_amortised", f"s_per_image_sequential_{v}", s + crf_s, "s/image"),
        ]
    best = fastest_within(times, diffs, args.tolerance)
    if best is not None:
        rows += [
            ("seeds", "best_s_per_image", times[best], f"s/image ({best})"),
            ("seeds_crf_amortised", "best_s_per_image", overlapped[best], f"s/image ({best})"),
        ]
    return rows


# ------------------------------------------------------------------------------ output


def render_section(rows: Sequence[Row], header: str, variants: Sequence[str]) -> list[str]:
    """The Markdown between the markers: ``header``, then a table per kind of benchmark."""
    get = {(b, m): v for b, m, v, _ in rows}
    unit = {(b, m): u for b, m, _, u in rows}
    lines = [header, ""]
    train = [b for b in TRAIN_GROUPS.values() if (b, "tflop_per_step") in get]
    if train:
        lines += [
            "| step | TFLOP/step | variant | s/iter | TFLOP/s | % of peak | peak MB | loss rel. diff |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for b in train:
            for v in variants:
                if (b, f"error_{v}") in get:
                    lines.append(f"| {b} | | {v} | failed: {unit[b, f'error_{v}']} | | | | |")
                    continue
                if (b, f"s_per_iter_{v}") not in get:
                    continue
                cells = [get.get((b, f"{m}_{v}")) for m in ("s_per_iter", "tflops", "pct_peak")]
                cells += [get.get((b, f"peak_mem_mb_{v}")), get.get((b, f"loss_rel_diff_{v}"))]
                lines.append(
                    f"| {b} | {fmt(get[b, 'tflop_per_step'])} | {v} | "
                    + " | ".join(fmt(c) for c in cells)
                    + " |"
                )
        lines.append("")
        for b in train:
            line = (
                f"- {b}: batch {get[b, 'batch_size']:.0f}, crop {get[b, 'crop']:.0f}, "
                f"forward {fmt(get[b, 'tflop_forward'])} TFLOP"
            )
            if (b, "tflop_teacher") in get:
                line += f" (of which the teacher {fmt(get[b, 'tflop_teacher'])})"
            if (b, "best_s_per_iter") in get:
                line += (
                    f"; fastest with the same numbers: {fmt(get[b, 'best_s_per_iter'])} "
                    f"{unit[b, 'best_s_per_iter']}"
                )
            lines.append(line + ".")
        lines.append("")
    if ("seeds", "tflop_per_image") in get:
        lines += [
            "| pass | variant | s/image | images/s | TFLOP/s | % of peak | peak MB | seeds = ref. |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for b in ("seeds", "teacher_pass"):
            for v in variants:
                if (b, f"s_per_image_{v}") not in get:
                    continue
                cells = [
                    get.get((b, f"{m}_{v}"))
                    for m in ("s_per_image", "images_per_s", "tflops", "pct_peak", "peak_mem_mb")
                ]
                agree = get.get((b, f"seed_agreement_{v}"))
                lines.append(
                    f"| {b} | {v} | " + " | ".join(fmt(c) for c in cells) + f" | {fmt(agree)} |"
                )
        lines.append("")
        lines.append(
            f"- seeds: {fmt(get['seeds', 'tflop_per_image'])} TFLOP per image "
            f"({unit['seeds', 'tflop_per_image'].removeprefix('TFLOP (').removesuffix(')')}); "
            f"teacher pass {fmt(get['teacher_pass', 'tflop_per_image'])} TFLOP per image."
        )
        if ("crf", "images_per_s") in get:
            amortised = ", ".join(
                f"{v} {fmt(get[('seeds_crf_amortised', f's_per_image_overlapped_{v}')])} "
                f"(sequential {fmt(get[('seeds_crf_amortised', f's_per_image_sequential_{v}')])})"
                for v in variants
                if ("seeds_crf_amortised", f"s_per_image_overlapped_{v}") in get
            )
            lines.append(
                f"- CRF (`labels`): {fmt(get['crf', 'images_per_s'])} "
                f"{unit['crf', 'images_per_s']}; seeds + CRF overlapped, s/image: {amortised}."
            )
    return [*lines, *gpu_bases.render_bases(rows)]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command line; smoke runs change the defaults (CPU, fp32 and bf16, one step)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default=None, help="cuda (default) | cuda:1 | cpu (--smoke)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: every code path, quickly")
    ap.add_argument("--variants", default=None, help=f"comma list of {', '.join(VARIANTS)}")
    ap.add_argument(
        "--benchmarks", default=",".join(GROUPS), help="comma list of " + ", ".join(GROUPS)
    )
    ap.add_argument("--steps", type=int, default=None, help="timed steps (20; smoke 1)")
    ap.add_argument("--warmup", type=int, default=None, help="warm-up steps (5; smoke 1)")
    ap.add_argument(
        "--images", type=int, default=None, help="seed / CRF images (32), CLIP images (16); smoke 2"
    )
    ap.add_argument(
        "--crf-processes",
        type=int,
        default=max(1, (os.cpu_count() or 1) - 1),
        help="CRF worker processes (default: the CPU cores but one, which drives the GPU)",
    )
    ap.add_argument(
        "--tolerance",
        type=float,
        default=0.01,
        help="largest loss relative difference / seed pixel disagreement still 'the same'",
    )
    ap.add_argument("--out", type=Path, default=REPO / "results" / "bench" / "gpu.csv")
    ap.add_argument("--no-markdown", action="store_true", help="leave BENCHMARKS.md alone")
    args = ap.parse_args(argv)
    args.device = args.device or ("cpu" if args.smoke else "cuda")
    args.variants = args.variants or ("fp32,bf16" if args.smoke else ",".join(VARIANTS))
    args.steps = args.steps or (1 if args.smoke else 20)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.smoke else 5)
    unknown = set(args.variants.split(",")) - set(VARIANTS)
    unknown |= set(args.benchmarks.split(",")) - set(GROUPS)
    if unknown:
        ap.error(f"unknown variant(s) / benchmark(s): {', '.join(sorted(unknown))}")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    device = resolve_device(args.device)
    setup = make_setup(args.smoke, args.images)
    variants = [VARIANTS[v] for v in args.variants.split(",")]
    groups = args.benchmarks.split(",")
    peak = matmul_peak(device, setup.matmul_n)
    rows: list[Row] = [
        ("matmul_bf16", "tflops", peak, "TFLOP/s"),
        ("matmul_bf16", "size", setup.matmul_n, "n (n×n @ n×n)"),
    ]
    rows += bench_train(setup, groups, variants, args, device, peak)
    if "seeds" in groups:
        rows += bench_seeds(setup, variants, args, device, peak)
    rows += gpu_bases.bench_bases(groups, args.smoke, args.images, device, args.warmup, peak)
    write_csv(args.out, rows)
    width = max(len(b) + len(m) for b, m, _, _ in rows) + 2
    for b, m, v, u in rows:
        print(f"{b + '.' + m:<{width}} {v:>12.6g}  {u}")
    print(f"wrote {args.out}")
    if args.smoke or args.no_markdown:
        return
    dl_cfg = deeplab_config(setup.preset)[0]
    header = (
        f"`bench/gpu.py` on {dt.date.today()}: {device_name(device)}, torch {torch.__version__} "
        f"(CUDA {torch.version.cuda}, cuDNN TF32 {torch.backends.cudnn.allow_tf32}), "
        f"{os.cpu_count()} CPUs. ResNet38d width {setup.width:g}, EPS/SMAF batch "
        f"{setup.batch_size} crop {setup.crop}; DeepLab-v2 {dl_cfg.backbone} batch "
        f"{setup.deeplab_batch} ({setup.deeplab_accum} × {setup.deeplab_batch // setup.deeplab_accum}) "
        f"crop {setup.deeplab_crop}; medians of {args.steps} steps after {args.warmup}. bf16 "
        f"matmul peak measured: {peak:.0f} TFLOP/s ({setup.matmul_n}³). Targets: {TARGETS}."
    )
    md = REPO / "BENCHMARKS.md"
    md.write_text(
        replace_section(
            md.read_text(), "gpu", HEADING, render_section(rows, header, args.variants.split(","))
        )
    )
    print(f"updated {md}")


if __name__ == "__main__":
    main()

"""Stage 6: DeepLab-v2 (ASPP, MSC) trained on the CRF-refined SMAF pseudo labels.

Training (:func:`train_deeplab`), as deeplab-pytorch's VOC recipe: random scale from
``{0.5, 0.75, 1, 1.25, 1.5}``, random ``321×321`` crop (the image padded with the mean,
i.e. 0 after normalisation, the label with 255), horizontal flip; cross-entropy ignoring 255
on the logits of every MSC scale and on their max, each against the label map resized
(nearest) to that output's size, summed; SGD batch 10 as 5 × 2 accumulated, lr 2.5e-4
(ASPP weights ×10, biases ×20 without weight decay), momentum 0.9, wd 5e-4, poly 0.9, 20k
iterations; BN frozen. The loop is :func:`smaf.train.fit` (resumable, deterministic).

Inference (:func:`predict_split`): the full image, MSC (eval: the max over scales), optional
flip (logits averaged), bilinear upsampling to the image size, softmax, argmax → palette PNG.
The low-resolution logits can be kept for :func:`crf_split`, which applies DeepLab's dense
CRF (:class:`smaf.crf.DenseCRF`: pos_w 3, pos_xy_std 1, bi_w 4, bi_xy_std 67, bi_rgb_std 3,
10 iterations) to the same softmax with the raw image, one image per process. Scores come
from :mod:`smaf.stages.evaluate`; :func:`make_submission` packs test predictions in the layout
of the VOC evaluation server.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tarfile
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from smaf import distributed
from smaf.config import dataclass_from
from smaf.crf import DenseCRF, crf_images_parallel
from smaf.data.voc import VOCLayout
from smaf.errors import ConfigError, DataError
from smaf.io import IGNORE_INDEX, atomic_write, load_image, load_mask, read_id_list, save_mask
from smaf.models.deeplab import (
    MSC,
    DeepLabConfig,
    build_deeplab,
    load_classifier_backbone,
    load_deeplab,
    save_deeplab,
)
from smaf.stages.common import read_dataset_info
from smaf.stages.pretrain import split_stage_config, write_history
from smaf.stages.staging import file_identity, open_staging, publish
from smaf.train import (
    LoopConfig,
    OptimConfig,
    build_optimizer,
    fit,
    loop_identity,
    resolve_device,
    use_threads,
)
from smaf.transforms import AugmentConfig, normalize, train_augment

log = logging.getLogger(__name__)

#: Keys of the ``deeplab`` config section that build the network (the rest trains it).
MODEL_KEYS = ("backbone", "width", "freeze_bn", "pretrained", "atrous_rates", "msc_scales")
#: Where the VOC evaluation server expects segmentation results ("comp6": trained with data
#: beyond VOC — ImageNet, SBD), relative to the archive root.
SUBMISSION_SUBDIR = "results/VOC2012/Segmentation/comp6_test_cls"


@dataclass
class DeepLabAugment:
    """Training augmentation of DeepLab (config ``deeplab.augment``)."""

    crop_size: int = 321  # square crop (px); padded with mean / 255 when the image is smaller
    scales: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25, 1.5)  # one drawn uniformly per image
    hflip: bool = True  # random horizontal flip with probability 0.5

    def __post_init__(self) -> None:
        self.scales = tuple(float(s) for s in self.scales)
        if self.crop_size < 8 or not self.scales or min(self.scales) <= 0:
            raise ValueError(
                f"need crop_size >= 8 and scales > 0, got {self.crop_size}, {self.scales}"
            )


def augment_pair(
    image: np.ndarray, label: np.ndarray, rng: np.random.Generator, cfg: DeepLabAugment
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random scale, flip and crop of an image and its label map (the same geometry).

    Args:
        image: uint8 ``[H, W, 3]`` RGB.
        label: uint8 ``[H, W]`` labels 0..C or 255.
        rng: the sample's generator (all randomness comes from it).

    Returns:
        float32 ``[3, S, S]`` normalised image (0 = the mean in the padding) and int64
        ``[S, S]`` labels (255 in the padding).
    """
    scale = float(cfg.scales[int(rng.integers(len(cfg.scales)))])
    # train_augment draws a long side; a one-value range turns that into "this scale".
    long_side = max(8, round(max(image.shape[:2]) * scale))
    geometry = AugmentConfig(
        crop_size=cfg.crop_size,
        resize_long=(long_side, long_side),
        hflip=cfg.hflip,
        color_jitter=None,  # DeepLab uses none
    )
    # torch.tensor copies: masks read through PIL are read-only arrays.
    extras = {"label": (torch.tensor(label), "nearest", IGNORE_INDEX)}
    aug = train_augment(image, rng, geometry, extras)
    return aug.image, aug.extras["label"].long()


class PseudoLabelSet(torch.utils.data.Dataset):
    """Images of a split with their pseudo-label PNGs, augmented for DeepLab.

    Indexed by ``(index, aug_seed)`` (:class:`smaf.train.SampleStream`); items are
    ``{'id', 'image': float32 [3, S, S], 'label': int64 [S, S]}``.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split_file: str | os.PathLike[str],
        label_dir: str | os.PathLike[str],
        num_classes: int,
        augment: DeepLabAugment,
    ) -> None:
        self.layout = VOCLayout.from_root(root)
        self.ids = read_id_list(split_file)
        self.label_dir = Path(label_dir)
        self.num_classes = num_classes
        self.augment = augment
        have = {p.name for p in self.label_dir.iterdir()} if self.label_dir.is_dir() else set()
        missing = [i for i in self.ids if f"{i}.png" not in have]
        if missing:
            raise DataError(
                f"{len(missing)} of {len(self.ids)} pseudo labels are missing from "
                f"{self.label_dir} (first: {missing[0]}.png). Rerun the crf rule for this split."
            )

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, item: tuple[int, int]) -> dict[str, Any]:
        index, seed = item
        image_id = self.ids[index]
        image = load_image(self.layout.image_path(image_id))  # [H, W, 3]
        label = load_mask(self.label_dir / f"{image_id}.png")  # [H, W]
        if label.shape != image.shape[:2]:
            raise DataError(
                f"pseudo label {self.label_dir / image_id}.png is {label.shape} but the image is "
                f"{image.shape[:2]}: the labels belong to another dataset."
            )
        top = int(label[label != IGNORE_INDEX].max(initial=0))
        if top > self.num_classes:
            raise DataError(
                f"pseudo label {self.label_dir / image_id}.png holds label {top} > C = "
                f"{self.num_classes}."
            )
        x, y = augment_pair(image, label, np.random.default_rng(seed), self.augment)
        return {"id": image_id, "image": x, "label": y}


def resize_labels(labels: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Nearest-neighbour resize of int labels ``[B, H, W]`` to ``[B, h, w]``.

    ``nearest-exact`` samples pixel centres like PIL's NEAREST (deeplab-pytorch resizes with
    PIL because plain ``nearest`` shifts the labels by up to a pixel).
    """
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels
    out = F.interpolate(labels[:, None].float(), size=tuple(size), mode="nearest-exact")
    return out[:, 0].long()


def masked_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy ``[B, K, h, w]`` vs ``[B, h, w]`` over pixels whose label is not 255.

    A batch with no valid pixel gives 0 (not NaN): the loop would stop on a NaN loss.
    """
    loss = F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX, reduction="sum")
    return loss / (labels != IGNORE_INDEX).sum().clamp(min=1)


def msc_loss(outputs: Sequence[torch.Tensor], labels: torch.Tensor) -> list[torch.Tensor]:
    """Cross-entropy of every MSC output against the labels resized to its size.

    Args:
        outputs: training-mode :class:`~smaf.models.deeplab.MSC` outputs, each
            ``[B, C+1, h_i, w_i]`` (the scales, then the max).
        labels: int64 ``[B, H, W]`` with 255 = ignore.

    Returns:
        One scalar per output; deeplab-pytorch sums them.
    """
    return [masked_cross_entropy(o, resize_labels(labels, o.shape[-2:])) for o in outputs]


def deeplab_step(
    model: MSC, batch: dict[str, Any], device: torch.device
) -> dict[str, torch.Tensor]:
    """Loss of one micro-batch: the sum of the MSC cross-entropies (plus each, for the log)."""
    x = batch["image"].to(device, non_blocking=True)  # [B, 3, S, S]
    y = batch["label"].to(device, non_blocking=True)  # [B, S, S]
    losses = msc_loss(model(x), y)
    out = {"loss": torch.stack(losses).sum()}
    names = [f"ce_{s:g}" for s in model.scales] + ["ce_max"]
    out.update({n: v.detach() for n, v in zip(names, losses, strict=True)})
    return out


def split_deeplab_params(
    params: Mapping[str, Any], num_classes: int
) -> tuple[DeepLabConfig, LoopConfig, OptimConfig, DeepLabAugment]:
    """Split the ``deeplab`` section into (DeepLabConfig, loop, optim, DeepLabAugment).

    Unknown keys raise a ConfigError naming them.
    """
    p = dict(params)
    # Workflow-level keys: inference settings and where the pseudo labels come from.
    p.pop("test", None)
    p.pop("labels_from", None)
    p.pop("init_from", None)
    augment = dataclass_from(DeepLabAugment, p.pop("augment", {}), "deeplab.augment")
    model = {k: p.pop(k) for k in MODEL_KEYS if k in p}
    model_cfg = dataclass_from(DeepLabConfig, {**model, "num_classes": num_classes}, "deeplab")
    loop, optim, _, rest = split_stage_config(p, "deeplab")
    if rest:
        raise ConfigError(
            f"config section 'deeplab': unknown key(s) {', '.join(sorted(rest))}; expected some "
            f"of {', '.join(MODEL_KEYS)}, the training keys (iterations, batch_size, lr, ...), "
            "augment and test."
        )
    return model_cfg, loop, optim, augment


def train_deeplab(
    *,
    dataset_info: str | os.PathLike[str],
    split_file: str | os.PathLike[str],
    label_dir: str | os.PathLike[str],
    params: Mapping[str, Any],
    out_model: str | os.PathLike[str],
    out_history: str | os.PathLike[str],
    state_dir: str | os.PathLike[str] | None,
    threads: int | None = None,
    init_backbone: str | os.PathLike[str] | None = None,
) -> list[dict[str, float]]:
    """Train DeepLab-v2 on the pseudo labels ``label_dir/<id>.png`` of ``split_file``.

    Args:
        dataset_info: the dataset stage's ``dataset.json`` (root, C, class names).
        split_file: training ids (train_aug).
        label_dir: palette PNGs with values 0..C (255 = ignore), one per id.
        params: the ``deeplab`` config section plus the shared loop keys (device, amp, seed,
            checkpoint_every, log_every); a ``test`` subsection is ignored.
        out_model: written last (its presence means done) by
            :func:`~smaf.models.deeplab.save_deeplab`.
        out_history: per-step losses as CSV.
        state_dir: checkpoint folder outside the rule's outputs (resume after a kill).
        threads: CPU threads of the job (torch threads; threads − 1 loader workers).
        init_backbone: a classifier model file (``deeplab.init_from``: the EPS or SMAF model)
            whose backbone initialises DeepLab's instead of ImageNet weights; see
            :func:`~smaf.models.deeplab.load_classifier_backbone`.

    Returns:
        The per-step history.
    """
    info = read_dataset_info(dataset_info)
    num_classes = int(info["num_classes"])
    model_cfg, loop, optim, augment = split_deeplab_params(params, num_classes)
    loop.num_workers = use_threads(threads)
    dataset = PseudoLabelSet(info["root"], split_file, label_dir, num_classes, augment)
    torch.manual_seed(loop.seed)  # the ASPP initialisation
    net = build_deeplab(model_cfg)
    if init_backbone is not None:
        load_classifier_backbone(net, init_backbone)
    optimizer = build_optimizer(net.param_groups(), optim)
    log.info(
        "deeplab: %d images, %d classes, %s (pretrained: %s), %d iterations of batch %d (%d x %d)",
        len(dataset),
        num_classes,
        model_cfg.backbone,
        init_backbone or model_cfg.pretrained or "no",
        loop.iterations,
        loop.batch_size,
        loop.batch_size // loop.grad_accum,
        loop.grad_accum,
    )
    full_config = {
        "model": asdict(model_cfg),
        "loop": loop_identity(loop),
        "optim": asdict(optim),
        "augment": asdict(augment),
        "split": Path(split_file).name,
        "init_from": file_identity(init_backbone) if init_backbone is not None else None,
        # Regenerated pseudo labels replace the folder (new mtime): old checkpoints don't resume.
        "labels": file_identity(label_dir),
    }
    history = fit(net, optimizer, dataset, deeplab_step, loop, optim, state_dir, full_config)
    if not distributed.is_main():
        return history  # DDP: rank 0 writes the outputs
    write_history(out_history, history)
    meta = {
        "stage": "deeplab",
        "class_names": info["class_names"],
        "iterations": loop.iterations,
        "labels": str(label_dir),
    }
    save_deeplab(out_model, net.cpu(), meta)  # written last: its presence means done
    log.info("wrote %s", out_model)
    return history


# ------------------------------------------------------------------------------ inference


@torch.no_grad()
def infer_logits(
    model: MSC, image: np.ndarray, device: torch.device, flip: bool = False
) -> torch.Tensor:
    """MSC logits of one full image: float32 ``[C+1, ⌈H/8⌉, ⌈W/8⌉]`` on the CPU.

    ``model`` must be in eval mode (MSC then returns the max over scales). With ``flip`` the
    logits of the mirrored image are mirrored back and averaged with the plain ones.
    """
    x = normalize(image)[None].to(device)  # [1, 3, H, W]
    logits = model(x).float()  # [1, K, h, w]
    if flip:
        logits = 0.5 * (logits + model(x.flip(-1)).float().flip(-1))
    return logits[0].cpu()


def upsampled_probs(logits: torch.Tensor | np.ndarray, size: Sequence[int]) -> torch.Tensor:
    """Softmax of logits ``[K, h, w]`` bilinearly upsampled to ``size`` → ``[K, H, W]`` float32."""
    lg = torch.as_tensor(logits, dtype=torch.float32)[None]
    lg = F.interpolate(lg, size=tuple(size), mode="bilinear", align_corners=False)
    return torch.softmax(lg[0], dim=0)


def predict_split(
    model_path: str | os.PathLike[str],
    root: str | os.PathLike[str],
    split_file: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    logits_dir: str | os.PathLike[str] | None = None,
    flip: bool = False,
    device: str = "auto",
    amp: bool = False,
    threads: int | None = None,
    work_dir: str | os.PathLike[str] | None = None,
    log_every: int = 50,
) -> dict[str, Any]:
    """Predict every image of ``split_file`` (no ground truth needed) with a DeepLab model.

    Args:
        model_path: written by :func:`train_deeplab`.
        root: ``VOC2012``-layout folder holding ``JPEGImages/<id>.jpg``.
        split_file: one id per line.
        out_dir: receives ``<id>.png``: uint8 ``[H, W]`` labels 0..C (palette PNG).
        logits_dir: if given, receives ``<id>.npy``: float32 ``[C+1, ⌈H/8⌉, ⌈W/8⌉]`` MSC
            logits, the input of :func:`crf_split`.
        flip: also run the mirrored image and average the logits (not in the paper).
        device: ``auto`` | ``cpu`` | ``cuda[:i]``.
        amp: bf16 autocast on CUDA.
        threads: torch CPU threads.
        work_dir: staging folder (see :mod:`smaf.stages.staging`): images done by a killed
            run are kept there and skipped; published onto the outputs at the end.

    Returns:
        Counts and timing.
    """
    use_threads(threads)
    dev = resolve_device(device)
    ids = read_id_list(split_file)
    if not ids:
        raise DataError(f"split list {split_file} is empty.")
    layout = VOCLayout.from_root(root)
    model, meta = load_deeplab(model_path)
    model.to(dev).eval()
    fingerprint = {
        "model": file_identity(model_path),
        "split": file_identity(split_file),
        "root": str(root),
        "flip": flip,
        "amp": amp,
        "logits": logits_dir is not None,
    }
    work = open_staging(out_dir, work_dir, fingerprint)
    staged = work_dir is not None
    pred_dir = work / "pred" if staged else Path(out_dir)
    lg_dir = (work / "logits" if staged else Path(logits_dir)) if logits_dir is not None else None
    pred_dir.mkdir(parents=True, exist_ok=True)
    if lg_dir is not None:
        lg_dir.mkdir(parents=True, exist_ok=True)

    t0, done = time.perf_counter(), 0
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp and dev.type == "cuda")
    for n, image_id in enumerate(ids, 1):
        png = pred_dir / f"{image_id}.png"
        npy = lg_dir / f"{image_id}.npy" if lg_dir is not None else None
        if png.is_file() and (npy is None or npy.is_file()):
            continue  # done by an interrupted run
        image = load_image(layout.image_path(image_id))  # [H, W, 3]
        with autocast:
            logits = infer_logits(model, image, dev, flip)  # [K, h, w]
        if npy is not None:
            with atomic_write(npy) as tmp:
                np.save(tmp, logits.numpy())
        probs = upsampled_probs(logits, image.shape[:2])  # [K, H, W]
        save_mask(png, probs.argmax(0).numpy().astype(np.uint8))
        done += 1
        if n % log_every == 0 or n == len(ids):
            rate = done / max(time.perf_counter() - t0, 1e-9)
            log.info("predict: %d/%d images (%.2f images/s)", n, len(ids), rate)
    if staged:
        publish(pred_dir, out_dir)
        if lg_dir is not None:
            publish(lg_dir, logits_dir)
        shutil.rmtree(work)
    summary = {
        "images": len(ids),
        "predicted": done,
        "seconds": round(time.perf_counter() - t0, 2),
        "flip": flip,
        "model": str(model_path),
        "iterations": meta.get("iterations"),
    }
    log.info("predict: %s", json.dumps(summary))
    return summary


@dataclass(frozen=True)
class _CRFTask:
    """One image of :func:`crf_split`, picklable for the process pool."""

    image: str  # JPEG path
    logits: str  # .npy of [K, h, w] logits
    out: str  # output PNG


def _crf_one(task: _CRFTask, crf: DenseCRF) -> bool:
    """CRF-refine one image's upsampled softmax and write its PNG; False if already done."""
    if os.path.isfile(task.out):
        return False
    torch.set_num_threads(1)  # one image per process: more threads would oversubscribe
    image = load_image(task.image)  # [H, W, 3] raw RGB, as DeepLab's CRF wants
    try:
        logits = np.load(task.logits, allow_pickle=False)  # [K, h, w]
    except FileNotFoundError:
        raise DataError(f"logits missing: {task.logits}. Rerun the deeplab_predict rule.") from None
    probs = upsampled_probs(logits, image.shape[:2]).numpy()  # [K, H, W]
    refined = crf(image, probs)  # [K, H, W] marginals
    save_mask(task.out, refined.argmax(0).astype(np.uint8))
    return True


def crf_split(
    root: str | os.PathLike[str],
    split_file: str | os.PathLike[str],
    logits_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    crf: DenseCRF | Mapping[str, Any] | None = None,
    processes: int = 1,
    work_dir: str | os.PathLike[str] | None = None,
    log_every: int = 50,
) -> dict[str, Any]:
    """DeepLab's dense-CRF post-processing of :func:`predict_split`'s logits.

    Per image: logits ``[K, h, w]`` → bilinear upsampling to the image → softmax →
    :class:`~smaf.crf.DenseCRF` with the raw image → argmax → ``out_dir/<id>.png`` (0..C).

    Args:
        crf: :class:`~smaf.crf.DenseCRF` or its fields (``pos_w``, ``pos_xy_std``, ``bi_w``,
            ``bi_xy_std``, ``bi_rgb_std``, ``n_iter``); ``None`` = DeepLab's VOC values.
        processes: worker processes (the rule's threads).
        work_dir: staging folder for resuming (see :mod:`smaf.stages.staging`).
    """
    if not isinstance(crf, DenseCRF):
        crf = dataclass_from(DenseCRF, crf, "deeplab.test.crf")
    ids = read_id_list(split_file)
    if not ids:
        raise DataError(f"split list {split_file} is empty.")
    layout = VOCLayout.from_root(root)
    logits_dir = Path(logits_dir)
    fingerprint = {"crf": asdict(crf), "logits": file_identity(logits_dir), "root": str(root)}
    work = open_staging(out_dir, work_dir, fingerprint)
    tasks = [
        _CRFTask(str(layout.image_path(i)), str(logits_dir / f"{i}.npy"), str(work / f"{i}.png"))
        for i in ids
    ]
    t0 = time.perf_counter()
    fn = _CRFWorker(crf)
    results = crf_images_parallel(fn, tasks, max(1, int(processes)), log, log_every=log_every)
    if work_dir is not None:
        publish(work, out_dir)
    summary = {
        "images": len(ids),
        "refined": int(sum(results)),
        "seconds": round(time.perf_counter() - t0, 2),
        "crf": asdict(crf),
    }
    log.info("crf: %s", json.dumps(summary))
    return summary


@dataclass(frozen=True)
class _CRFWorker:
    """``_crf_one`` bound to its CRF settings; a picklable callable for spawned workers."""

    crf: DenseCRF

    def __call__(self, task: _CRFTask) -> bool:
        return _crf_one(task, self.crf)


# ------------------------------------------------------------------------------ submission


def make_submission(
    pred_dir: str | os.PathLike[str],
    split_file: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    out_tar: str | os.PathLike[str],
    num_classes: int | None = None,
) -> int:
    """Lay test predictions out for the VOC evaluation server and pack them as ``.tar.gz``.

    ``out_dir/results/VOC2012/Segmentation/comp6_test_cls/<id>.png`` (palette PNGs, values
    0..C) for every id of ``split_file``; the archive holds exactly those files, under the same
    relative paths, with fixed owner and time stamps (same predictions → same bytes).
    Both outputs are replaced atomically.

    Returns:
        The number of images.

    Raises:
        DataError: a prediction is missing or holds a value outside 0..C (255 is refused:
            the server scores every pixel).
    """
    ids = read_id_list(split_file)
    if not ids:
        raise DataError(f"split list {split_file} is empty.")
    pred_dir, out_dir = Path(pred_dir), Path(out_dir)
    missing = [i for i in ids if not (pred_dir / f"{i}.png").is_file()]
    if missing:
        raise DataError(
            f"{len(missing)} of {len(ids)} test predictions are missing from {pred_dir} "
            f"(first: {missing[0]}.png)."
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        dest = stage / SUBMISSION_SUBDIR
        for image_id in ids:
            mask = load_mask(pred_dir / f"{image_id}.png")
            top = int(mask.max(initial=0))
            if num_classes is not None and top > num_classes:
                raise DataError(
                    f"prediction {pred_dir / image_id}.png holds label {top} > C = {num_classes}."
                )
            save_mask(dest / f"{image_id}.png", mask)  # re-encoded: always a VOC palette PNG
        with atomic_write(out_tar) as tmp, tarfile.open(tmp, "w:gz") as tar:
            for image_id in ids:
                member = f"{SUBMISSION_SUBDIR}/{image_id}.png"
                tar.add(stage / member, arcname=member, filter=_reproducible)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(stage, out_dir)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    log.info("submission: %d images -> %s, %s", len(ids), out_dir, out_tar)
    return len(ids)


def _reproducible(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0
    info.mode = 0o644
    return info

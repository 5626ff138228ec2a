"""Every stage's settings and their defaults, in one place: the dataclasses of the config.

Each config section a stage reads is one :class:`~smaf.config.Settings` dataclass here, its
sub-sections nested dataclasses (``self_train.teacher_cam``, ``deeplab.test.crf``), the keys
that sit flat in the section but go to one part of the code (``lr`` → the optimizer,
``iterations`` → the loop) ``FLAT`` fields. :func:`smaf.config.dataclass_from` builds them
(unknown keys: a ConfigError naming them), :meth:`~smaf.config.Settings.params` writes them
back as a rule's params. The default written on a field is the default of its config key:
``tests/test_settings.py`` holds the schema (``workflow/schemas/config.schema.yaml``) to them.

Pure Python (no torch): the workflow planner (:mod:`smaf.experiments`) builds them when
Snakemake reads the workflow, and light modules (the CRF workers) import them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from smaf.config import FLAT, RuntimeConfig, Settings, is_auto
from smaf.errors import ConfigError
from smaf.sam_settings import SamStageSettings

#: Background score of the offline teacher's preview PNGs (its maps do not depend on it).
PREVIEW_THR = 0.2
#: Interpolations of the random resize (``augment.resize_mode``) and of the CAM scales.
RESIZE_MODES = ("bilinear", "bicubic")
#: Where a crop larger than the resized image puts the padding (``deeplab.augment.pad``).
PAD_MODES = ("random", "bottom_right")
#: Backbones :func:`smaf.models.deeplab.build_deeplab` knows.
BACKBONES = ("resnet101", "resnet101_caffe", "resnet50", "resnet38d")
#: DeepLab backbones with a width multiplier (the others exist only at width 1.0).
WIDTH_BACKBONES = ("resnet38d", "resnet101_caffe")


# ------------------------------------------------------------------ parts of the training stages
@dataclass
class LoopConfig(RuntimeConfig):
    """How long and how to train (shared keys of every training stage).

    The fields inherited from :class:`~smaf.config.RuntimeConfig` (device, cadences, speed
    options, gpus, num_workers) say how the loop runs; the ones below what it computes.
    """

    iterations: int = 20000  # optimizer steps
    batch_size: int = 8  # images per optimizer step (split over grad_accum micro-batches)
    grad_accum: int = 1  # micro-batches per step (DeepLab: batch 10 as 5 × 2)
    # Seeds torch / numpy / python and the sample stream: the run's seed (train.seeds).
    seed: int = field(default=0, metadata={"source": "train.seeds"})
    amp: bool = field(default=True, metadata={"source": "train.amp"})  # bf16 autocast on CUDA

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.iterations < 1 or self.batch_size < 1 or self.grad_accum < 1:
            raise ConfigError("training: iterations, batch_size and grad_accum must be >= 1")
        if self.batch_size % self.grad_accum:
            raise ConfigError(
                f"training: batch_size {self.batch_size} is not divisible by grad_accum {self.grad_accum}"
            )


@dataclass
class OptimConfig:
    """SGD with poly learning-rate decay (PSA/EPS/SMAF's PolyOptimizer, :mod:`smaf.optim`)."""

    lr: float = 0.01  # base learning rate (group multipliers ×1/×2/×10/×20 on top)
    weight_decay: float = 5e-4  # applied to groups with weight_decay_mult 1
    momentum: float = 0.9  # the released EPS/SMAF code effectively uses 5e-4 (a quirk)
    poly_power: float = 0.9  # lr · (1 − step/iterations)^poly_power
    # The lr is recomputed every this many steps and held in between (deeplab-pytorch: 10).
    lr_update_every: int = 1

    def __post_init__(self) -> None:
        if not self.lr > 0 or self.weight_decay < 0 or not 0 <= self.momentum < 1:
            raise ConfigError(
                f"optimizer: need lr > 0, weight_decay >= 0, 0 <= momentum < 1; got {asdict(self)}"
            )
        if not isinstance(self.lr_update_every, int) or self.lr_update_every < 1:
            raise ConfigError(
                f"optimizer: lr_update_every must be an integer >= 1, got {self.lr_update_every!r}"
            )


@dataclass
class AugmentConfig:
    """Augmentation of the classifier's training (``pretrain.augment``, ``self_train.augment``)."""

    crop_size: int = 448  # square training crop (px); EPS/SMAF: 448
    resize_long: tuple[int, int] = (256, 512)  # random long side range (px), inclusive
    hflip: bool = True  # random horizontal flip with probability 0.5
    # brightness, contrast, saturation, hue jitter (torchvision ColorJitter semantics);
    # None disables it (the offline teacher maps never see colour jitter anyway).
    color_jitter: tuple[float, float, float, float] | None = (0.3, 0.3, 0.3, 0.1)
    # Random resize of the image and of the image-like extras (mode 'image': saliency):
    # 'bilinear' (antialiased on the image) | 'bicubic' (antialiased; the released PIL resize).
    resize_mode: str = "bilinear"

    def __post_init__(self) -> None:
        self.resize_long = tuple(self.resize_long)
        if self.color_jitter is not None:
            self.color_jitter = tuple(self.color_jitter)
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(
                f"augment.resize_mode must be one of {', '.join(RESIZE_MODES)}, "
                f"got {self.resize_mode!r}"
            )
        if self.crop_size < 8 or not 8 <= self.resize_long[0] <= self.resize_long[1]:
            raise ValueError(
                f"augment: need crop_size >= 8 and 8 <= resize_long[0] <= resize_long[1], "
                f"got crop_size={self.crop_size}, resize_long={self.resize_long}"
            )


@dataclass
class DeepLabAugment:
    """Training augmentation of DeepLab (config ``deeplab.augment``)."""

    crop_size: int = 321  # square crop (px); padded with mean / 255 when the image is smaller
    scales: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25, 1.5)  # one drawn uniformly per image
    hflip: bool = True  # random horizontal flip with probability 0.5
    # Padding of a side shorter than the crop: 'random' (image at a random offset) |
    # 'bottom_right' (deeplab-pytorch libs/datasets/base.py).
    pad: str = "random"

    def __post_init__(self) -> None:
        self.scales = tuple(float(s) for s in self.scales)
        if self.crop_size < 8 or not self.scales or min(self.scales) <= 0:
            raise ValueError(
                f"need crop_size >= 8 and scales > 0, got {self.crop_size}, {self.scales}"
            )
        if self.pad not in PAD_MODES:
            raise ValueError(
                f"deeplab.augment.pad must be one of {', '.join(PAD_MODES)}, got {self.pad!r}"
            )


@dataclass
class CAMConfig:
    """Multi-scale inference (``seeds.*``, ``self_train.teacher_cam``; :mod:`smaf.cam`)."""

    scales: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0)  # image scales (paper: 0.5/1/1.5/2)
    flip: bool = True  # add the horizontal flip of every scale
    # Image resize for each scale: 'bilinear' (default) or 'bicubic' (+antialias, close to the
    # released code's PIL bicubic resize).
    resize_mode: str = "bilinear"
    eps: float = 0.0  # added to each class max when normalising (released code: 1e-5)

    def __post_init__(self) -> None:
        self.scales = tuple(float(s) for s in self.scales)
        if not self.scales or any(s <= 0 for s in self.scales):
            raise ValueError(f"scales must be positive, got {self.scales}")
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode must be bilinear or bicubic, got {self.resize_mode!r}")


@dataclass
class DeepLabConfig:
    """What to build (config ``deeplab.*`` model keys); stored in the model file."""

    # resnet101 (torchvision) | resnet101_caffe (the DeepLab authors') | resnet50 | resnet38d
    backbone: str = "resnet101"
    width: float = 1.0  # channel multiplier, resnet38d / resnet101_caffe only (others: 1.0)
    # Foreground classes C, from the dataset; the network outputs C+1 (0 = background).
    num_classes: int = field(default=20, metadata={"source": "dataset", "params": False})
    atrous_rates: tuple[int, ...] = (6, 12, 18, 24)  # ASPP dilations (DeepLab-v2 "LargeFOV" ×4)
    msc_scales: tuple[float, ...] = (1.0, 0.75, 0.5)  # MSC input scales; the first sets the size
    freeze_bn: bool = True  # BN in eval mode, no grad (batches of 5 are too small to train BN)
    # Backbone init: torchvision .pth (resnet101/50), ResNet38d .params/.pth, DeepLab COCO init
    # .caffemodel/.pth (resnet101_caffe); None = random init (demo, tests).
    pretrained: str | None = None

    def __post_init__(self) -> None:
        self.atrous_rates = tuple(int(r) for r in self.atrous_rates)
        self.msc_scales = tuple(float(s) for s in self.msc_scales)
        if self.backbone not in BACKBONES:
            raise ConfigError(
                f"deeplab.backbone must be one of {', '.join(BACKBONES)}, got {self.backbone!r}"
            )
        if not self.width > 0 or (self.backbone not in WIDTH_BACKBONES and self.width != 1.0):
            raise ConfigError(
                f"deeplab.width must be > 0 and is only adjustable for "
                f"{' and '.join(WIDTH_BACKBONES)} (got {self.width!r} for {self.backbone})."
            )
        if not isinstance(self.num_classes, int) or self.num_classes < 1:
            raise ConfigError(f"deeplab: num_classes must be an int >= 1, got {self.num_classes!r}")
        if not self.atrous_rates or min(self.atrous_rates) < 1:
            raise ConfigError(f"deeplab.atrous_rates must be >= 1, got {self.atrous_rates}")
        if not self.msc_scales or not all(0 < s <= 4 for s in self.msc_scales):
            raise ConfigError(f"deeplab.msc_scales must be in (0, 4], got {self.msc_scales}")


# ---------------------------------------------------------------------------- the stages
@dataclass
class PretrainSettings(Settings):
    """Stage 2, EPS (or CAM) pretraining: config ``pretrain.*`` (+ ``train.amp``, the seed)."""

    SECTION = "pretrain"

    # 'eps' (classification + saliency loss) | 'cam' (classification only) | 'clip' (no
    # training: the CLIP base, model 'clip', CLIP-ES CAMs of the `clip` settings' weights).
    method: str = "eps"
    tau: float = 0.4  # EPS overlap threshold (the released script's value; argparse default 0.5)
    lam: float = 0.5  # EPS λ: weight of the foreground term of the predicted saliency
    saliency_resize: str = "nearest"  # how EPS resizes the saliency to the CAM size
    # A trained classifier adopted instead of training (the script converts it); None = train.
    init_checkpoint: str | None = None
    # The CLIP base (method clip): `weights` and smaf.clip.ClipCAMConfig's keys, as written
    # (the schema checks them; smaf.experiments.Experiments.clip_settings builds each pass's;
    # smaf.clip imports torch, so they are not typed here). No pretraining param: the rule
    # clip_maps is their stage, and they change no EPS training.
    clip: dict[str, Any] = field(default_factory=dict, metadata={"params": False})
    loop: LoopConfig = field(default_factory=LoopConfig, metadata=FLAT)
    optim: OptimConfig = field(default_factory=OptimConfig, metadata=FLAT)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        if self.method not in ("eps", "cam", "clip"):
            raise ConfigError(
                f"pretrain.method must be 'eps', 'cam' or 'clip', got {self.method!r}"
            )
        self.clip = dict(self.clip or {})
        if not 0 <= self.tau <= 1 or not 0 <= self.lam <= 1:
            raise ConfigError(
                f"pretrain.tau and pretrain.lam must be in [0, 1], got {self.tau}, {self.lam}"
            )


@dataclass
class SelfTrainSettings(Settings):
    """Stage 3, SMAF self-training: config ``self_train.*``; Tables 3–5 are values of these."""

    SECTION = "self_train"

    teacher: str = "offline"  # 'offline' (released: maps precomputed once) | 'online' (paper)
    # Multi-scale inference of the teacher (scales 0.5/1/1.5/2 + flips in the paper).
    teacher_cam: CAMConfig = field(default_factory=CAMConfig)
    # Background score of the reactivation (Eq. 8); 'auto': the held-out sweep's choice
    # (rule thr_auto), resolved to a number by the job before it builds these settings.
    thr: float | str = 0.2
    alpha: float = 100.0  # weight of L_mac (Eq. 1)
    w_cls: float = 0.0  # weight of L_cls (Eq. 1: 1; the released code comments it out: 0)
    reactivation: bool = True  # Eq. 8 on (F') or off (F), Table 5
    target_stride: int = 4  # target size = crop / target_stride (released: 0.25 × 448 = 112)
    # align_corners of the teacher-map and student-logit bilinear resizes (released: True).
    align_corners: bool = False
    loop: LoopConfig = field(default_factory=LoopConfig, metadata=FLAT)
    optim: OptimConfig = field(default_factory=OptimConfig, metadata=FLAT)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        if self.teacher not in ("offline", "online"):
            raise ConfigError(
                f"self_train.teacher must be 'offline' or 'online', got {self.teacher!r}"
            )
        if not is_auto(self.thr) and not self.thr > 0:
            raise ConfigError(f"self_train.thr must be > 0 or auto, got {self.thr}")
        if self.alpha < 0 or self.w_cls < 0 or self.target_stride < 1:
            raise ConfigError("self_train: alpha and w_cls must be >= 0 and target_stride >= 1")


@dataclass(frozen=True)
class DenseCRFConfig:
    """DeepLab's dense CRF on the softmax (``deeplab.test.crf``; deeplab-pytorch's VOC values,
    the DeepLab-v2 paper's); :class:`smaf.crf.DenseCRF` runs it."""

    pos_w: float = 3  # Gaussian (smoothness) kernel weight
    pos_xy_std: float = 1  # Gaussian kernel width, pixels
    bi_w: float = 4  # bilateral (appearance) kernel weight
    bi_xy_std: float = 67  # bilateral spatial width, pixels
    bi_rgb_std: float = 3  # bilateral colour width, RGB levels
    n_iter: int = 10  # mean-field iterations


@dataclass
class DeepLabTest:
    """DeepLab inference on val / test (``deeplab.test``): its rules' settings, not training's."""

    flip: bool = False  # also predict the mirrored image, average the logits (not in the paper)
    submission: bool = True  # build the test archive in `rule all` (VOC: manual.voc2012_test)
    submission_crf: bool = True  # submit the CRF-refined test predictions
    crf: DenseCRFConfig = field(default_factory=DenseCRFConfig)


@dataclass
class DeepLabSettings(Settings):
    """Stage 6, DeepLab-v2: config ``deeplab.*`` (+ ``train.amp``, the run's seed)."""

    SECTION = "deeplab"

    # Whose CRF-refined train_aug seeds are the pseudo labels: smaf, or the base (eps; clip).
    labels_from: str = "smaf"
    # Which refinement of them: crf | sam | sam_crf. It picks the labels folder (the rule's
    # input), so it is no param: the default reruns nothing that was trained before the key.
    pseudo_labels: str = field(default="crf", metadata={"params": False})
    # Initialise the backbone from this classifier's (its model file is the rule's input).
    init_from: str | None = None
    # Evaluation only: a trained DeepLab adopted instead of training; None = train.
    init_checkpoint: str | None = None
    model: DeepLabConfig = field(default_factory=DeepLabConfig, metadata=FLAT)
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(grad_accum=2), metadata=FLAT)
    optim: OptimConfig = field(default_factory=OptimConfig, metadata=FLAT)
    augment: DeepLabAugment = field(default_factory=DeepLabAugment)
    # Inference settings: the predict / CRF rules pass them, so changing them retrains nothing.
    test: DeepLabTest = field(default_factory=DeepLabTest, metadata={"params": False})

    def __post_init__(self) -> None:
        if self.pseudo_labels not in ("crf", "sam", "sam_crf"):
            raise ConfigError(
                f"deeplab.pseudo_labels must be crf, sam or sam_crf, got {self.pseudo_labels!r}"
            )
        labels = ("smaf", "eps", "clip")
        if self.labels_from not in labels or self.init_from not in ("smaf", "eps", None):
            raise ConfigError(
                "deeplab.labels_from must be smaf, eps or clip, deeplab.init_from smaf, eps or "
                f"null; got {self.labels_from!r}, {self.init_from!r}"
            )


@dataclass
class SeedsSettings(Settings):
    """Stage 4, CAM seeds of the EPS and SMAF classifiers: config ``seeds.*``."""

    SECTION = "seeds"

    cam: CAMConfig = field(default_factory=CAMConfig, metadata=FLAT)
    # Background score: seeds = argmax([thr, maps]) (paper: 0.2); 'auto': the held-out
    # sweep's choice (rule thr_auto), resolved to a number by the job before it builds these.
    thr: float | str = 0.2
    amp: bool = False  # bf16 autocast on CUDA (device: train.device); also the teacher pass

    def __post_init__(self) -> None:
        if not is_auto(self.thr) and not 0 < self.thr < 1:
            raise ConfigError(f"seeds.thr must be in (0, 1) or auto, got {self.thr}")


@dataclass(frozen=True)
class LabelCRFParams:
    """The released SMAF CRF on hard seeds (``crf.labels``; its ``gen_pseudo_mask.py``)."""

    gt_prob: float = 0.7  # confidence given to the seed label
    gauss_sxy: float = 3  # Gaussian (smoothness) kernel width, px
    gauss_compat: float = 3  # Gaussian kernel weight
    bi_sxy: float = 50  # bilateral kernel width, px
    bi_srgb: float = 5  # bilateral colour width, RGB levels
    bi_compat: float = 10  # bilateral kernel weight
    n_iter: int = 10  # mean-field iterations


@dataclass(frozen=True)
class ProbCRFParams:
    """The PSA / EPS CRF on soft maps with a background score (``crf.probs``)."""

    gauss_sxy: float = 3  # Gaussian (smoothness) kernel width, px
    gauss_compat: float = 3  # Gaussian kernel weight
    bi_sxy: float = 80  # bilateral kernel width, px
    bi_srgb: float = 13  # bilateral colour width, RGB levels
    bi_compat: float = 10  # bilateral kernel weight
    n_iter: int = 10  # mean-field iterations
    bg: str = "power"  # power: bg = (1 - max_c maps)^bg_power (PSA/EPS) | constant: bg_score
    bg_power: float = 16  # PSA infer_cls.py: 4 (la_crf) / 32 (ha_crf); infer_aff.py: 16
    bg_score: float = 0.2  # background score when bg is constant

    def __post_init__(self) -> None:
        if self.bg not in ("power", "constant"):
            raise ValueError(f"bg must be 'power' or 'constant', got {self.bg!r}")
        if not self.bg_power > 0:
            raise ValueError(f"bg_power must be > 0, got {self.bg_power}")
        if not 0.0 < self.bg_score < 1.0:
            raise ValueError(f"bg_score must be in (0, 1), got {self.bg_score}")


@dataclass
class CRFSettings(Settings):
    """Stage 5, dense-CRF refinement of the seeds: config ``crf.*``."""

    SECTION = "crf"

    method: str = "labels"  # labels: released SMAF, from the hard seeds | probs: PSA/EPS
    labels: LabelCRFParams = field(default_factory=LabelCRFParams)
    probs: ProbCRFParams = field(default_factory=ProbCRFParams)

    def __post_init__(self) -> None:
        if self.method not in ("labels", "probs"):
            raise ConfigError(f"crf.method must be one of labels, probs, got {self.method!r}")

    @property
    def chosen(self) -> LabelCRFParams | ProbCRFParams:
        """The parameters of the chosen method."""
        return self.labels if self.method == "labels" else self.probs

    def params(self) -> dict:
        """The method and its own parameters: the other method's rerun nothing."""
        out = super().params()
        del out["probs" if self.method == "labels" else "labels"]
        return out


#: The settings class of each config section a training stage reads (it gets ``train.amp``
#: and the run's seed too).
TRAINING = {
    "pretrain": PretrainSettings,
    "self_train": SelfTrainSettings,
    "deeplab": DeepLabSettings,
}
#: The settings class of every config section a stage reads.
SECTIONS = {**TRAINING, "seeds": SeedsSettings, "crf": CRFSettings, "sam": SamStageSettings}

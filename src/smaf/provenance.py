"""What each number used: the base whose maps started a result's chain and the supervision
beyond image-level labels that went into it (the ``base`` and ``supervision`` columns of
``results/summary.csv`` and of the report's tables).

The field's tables mix saliency maps, CLIP's image–text pretraining, ImageNet or COCO inits
and published checkpoints silently; :func:`provenance` says it out loud, from the run's
merged config alone (pure Python over plain dicts, unit-tested without Snakemake; the
evaluate rules' meta functions call it through ``Experiments.provenance``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from smaf.errors import ConfigError

#: Bases a chain can start from: ``pretrain.method``.
BASES = ("eps", "cam", "clip")
#: The supervision phrases (one per kind; joined with "; " in a row).
SALIENCY = "saliency maps (EPS)"
CLIP = "CLIP image-text pretraining"
IMAGENET = "ImageNet init"
COCO_INIT = "DeepLab COCO init (COCO masks)"
SAM = "SAM"
#: ``supervision`` of a number made from image-level labels alone.
NONE = "none"
#: DeepLab backbones whose ``deeplab.pretrained`` file is the DeepLab authors' COCO init
#: (init.caffemodel, or deeplab-pytorch's deeplabv1_resnet101-coco.pth: trained with COCO's
#: segmentation masks); the others' files are ImageNet classifiers.
COCO_INIT_BACKBONES = ("resnet101_caffe",)


class Provenance(NamedTuple):
    """What a result used: ``base`` (eps | cam | clip) and ``supervision`` (words)."""

    base: str
    supervision: str


def checkpoint_words(path: str) -> str:
    """A trained model file taken instead of training: ``published checkpoint <file>``."""
    return f"published checkpoint {Path(path).name}"


def classifier_init(model: Mapping[str, Any]) -> list[str]:
    """What the classifier's ``model.pretrained`` file brings (nothing when random init)."""
    pretrained = model.get("pretrained")
    if not pretrained:
        return []
    if str(model.get("backbone", "resnet38d")).startswith("timm/"):
        # timm's weights may be ImageNet-1k, -21k or image-text pretrained: name the file.
        return [f"timm pretrained weights ({Path(pretrained).name})"]
    return [IMAGENET]  # ResNet38d's ImageNet weights (.params / .pth)


def base_of(config: Mapping[str, Any]) -> str:
    """The base of a run: ``pretrain.method`` (default eps), one of :data:`BASES`."""
    method = str((config.get("pretrain") or {}).get("method", "eps"))
    if method not in BASES:
        raise ConfigError(
            f"pretrain.method is {method!r}: the base must be one of {', '.join(BASES)}."
        )
    return method


def _base_model(config: Mapping[str, Any]) -> list[str]:
    """Supervision of the base's own maps (the pretrained classifier's, or CLIP's)."""
    base = base_of(config)
    if base == "clip":
        return [CLIP]  # training-free: no classifier, no init
    pretrain = config.get("pretrain") or {}
    used = [SALIENCY] if base == "eps" else []
    if pretrain.get("init_checkpoint"):
        return [*used, checkpoint_words(pretrain["init_checkpoint"])]
    return [*used, *classifier_init(config.get("model") or {})]


def _classifier(config: Mapping[str, Any], model: str) -> list[str]:
    """Supervision of classifier ``model``'s maps: the base's, and the SMAF student's. The
    student starts from the EPS / CAM model and learns from its maps, so it inherits its
    supervision; on the CLIP base it starts from ``model.pretrained`` instead."""
    used = _base_model(config)
    if model == "smaf" and base_of(config) == "clip":
        used += classifier_init(config.get("model") or {})
    return used


def _deeplab(config: Mapping[str, Any], labels_from: str) -> list[str]:
    """Supervision of DeepLab's numbers: its pseudo labels' and its init's."""
    deeplab = config.get("deeplab") or {}
    if deeplab.get("init_checkpoint"):
        return [checkpoint_words(deeplab["init_checkpoint"])]  # no pseudo labels used
    used = _classifier(config, labels_from)
    if deeplab.get("init_from"):  # the same precedence as the DeepLab stage and deeplab_init
        used += _classifier(config, deeplab["init_from"])
    elif deeplab.get("pretrained"):
        coco = deeplab.get("backbone", "resnet101") in COCO_INIT_BACKBONES
        used.append(COCO_INIT if coco else IMAGENET)
    return used


def join(items: Iterable[str]) -> str:
    """The ``supervision`` cell: the items once each, in order, joined by "; " (or ``none``)."""
    return "; ".join(dict.fromkeys(items)) or NONE


def provenance(
    config: Mapping[str, Any], model: str, stage: str, *, sam: bool = False
) -> Provenance:
    """The base and the supervision behind one evaluation record.

    Args:
        config: the run's merged config (``pretrain``, ``model`` and ``deeplab`` are read).
        model: the record's classifier (``eps``, ``smaf``, ``clip``); for a DeepLab record
            the source of its pseudo labels (``deeplab.labels_from``).
        stage: the record's stage (``eps_seed``, ``smaf_crf``, ``deeplab``, ``deeplab_crf``...);
            a ``deeplab*`` stage adds DeepLab's init.
        sam: the labels were refined with SAM's masks (a ``*_sam*`` stage, or DeepLab trained
            on them: ``deeplab.pseudo_labels`` sam / sam_crf); adds ``SAM``.

    Returns:
        E.g. ``Provenance("eps", "saliency maps (EPS); ImageNet init; DeepLab COCO init (COCO
        masks)")`` for the released preset's DeepLab rows; ``supervision`` is ``none`` when
        only image-level labels were used.
    """
    base = base_of(config)
    used = _deeplab(config, model) if stage.startswith("deeplab") else _classifier(config, model)
    return Provenance(base, join([*used, *([SAM] if sam else [])]))


#: What the weights of each DeepLab backbone's ``pretrained`` file were trained on.
_PRETRAINED_KIND = {
    "resnet101_caffe": "DeepLab-v2 Caffe init",
    "resnet101": "torchvision ImageNet",
    "resnet50": "torchvision ImageNet",
    "resnet38d": "ResNet38d ImageNet",
}


def deeplab_init(deeplab: Mapping[str, Any]) -> str:
    """Where a run's DeepLab weights come from, in words (Table 1's ``init`` column).

    ``deeplab`` is the run's merged ``deeplab:`` section. E.g. ``"resnet101_caffe: DeepLab-v2
    Caffe init (init.caffemodel)"``, ``"resnet38d: smaf classifier's backbone"``,
    ``"checkpoint deeplabv2_resnet101_msc-vocaug-20000.pth (not trained here)"``.
    """
    if deeplab.get("init_checkpoint"):
        name = Path(deeplab["init_checkpoint"]).name
        if name.startswith("train2_iter"):
            # The DeepLab authors' second step (solver2.prototxt): fine-tuned on trainval_aug.
            return f"checkpoint {name} (not trained here; fine-tuned on val: no val score)"
        return f"checkpoint {name} (not trained here)"
    backbone = deeplab.get("backbone", "resnet101")
    if deeplab.get("init_from"):
        return f"{backbone}: {deeplab['init_from']} classifier's backbone"
    if deeplab.get("pretrained"):
        kind = _PRETRAINED_KIND.get(backbone, "weights")
        return f"{backbone}: {kind} ({Path(deeplab['pretrained']).name})"
    return f"{backbone}: random init"

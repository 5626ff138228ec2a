"""The model of ``smaf predict``: a DeepLab or classifier model file with its class names."""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from smaf.errors import ConfigError, SmafError
from smaf.inference import infer_logits
from smaf.models.checkpoint import load_model, read_model_file
from smaf.models.deeplab import MSC, load_deeplab
from smaf.transforms import normalize


@dataclass
class Predictor:
    """A loaded model file: ``kind`` is ``'deeplab'`` or ``'classifier'``."""

    kind: str
    model: torch.nn.Module
    meta: dict[str, Any]
    class_names: list[str]  # C+1 names, background first (label value = position)

    @property
    def num_classes(self) -> int:
        """Foreground classes C."""
        return len(self.class_names) - 1


def read_class_names(path: str | os.PathLike[str]) -> list[str]:
    """Class names from a file: a text file with one name per line, a JSON list, or a JSON
    object with ``class_names`` (a dataset's ``dataset.json``) or ``classes`` (the
    ``classes.json`` that ``smaf predict`` writes)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the class names file {path} ({exc}).") from None
    if path.suffix.lower() != ".json":
        return [line.strip() for line in text.splitlines() if line.strip()]
    try:
        data = json.loads(text)
        if isinstance(data, dict):
            data = data.get("class_names") or [c["name"] for c in data["classes"]]
        names = [str(n) for n in data]
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"{path}: expected a JSON list of class names or an object with 'class_names' "
            f"or 'classes' ({type(exc).__name__}: {exc})."
        ) from None
    return names


def resolve_class_names(
    num_classes: int,
    meta: dict[str, Any],
    given: Sequence[str] | None = None,
    model_path: str | os.PathLike[str] = "the model",
    given_from: str = "the class names",
) -> list[str]:
    """The C+1 names (background first) of a model for C classes.

    ``given`` (from ``--classes``) may list the C foreground classes or C+1 names with the
    background first; otherwise the model file's ``class_names``; otherwise ``class_1..C``.

    Raises:
        SmafError: ``given`` does not fit the model's number of classes.
    """
    if given is not None:
        names = list(given)
        if len(names) == num_classes:
            return ["background", *names]
        if len(names) == num_classes + 1:
            return names
        raise SmafError(
            f"{model_path} was trained for {num_classes} classes but {given_from} names "
            f"{len(names)}; give the class list of the dataset the model was trained on."
        )
    names = list(meta.get("class_names") or [])
    if len(names) == num_classes + 1:
        return names
    return ["background", *(f"class_{c}" for c in range(1, num_classes + 1))]


def load_predictor(
    path: str | os.PathLike[str], classes: str | os.PathLike[str] | None = None
) -> Predictor:
    """Load a DeepLab or classifier model file (on the CPU, eval mode) with its class names.

    Args:
        classes: a class names file (:func:`read_class_names`) overriding the model's own.

    Raises:
        SmafError: not a model file, or ``classes`` does not fit it.
    """
    if Path(path).is_file() and not zipfile.is_zipfile(path):
        # torch.save writes a zip archive; anything else gets torch's long unpickling error.
        raise SmafError(
            f"{path} is not a SMAF model file (not a PyTorch archive); give the model.pt "
            "of a deeplab, self_train or pretrain run."
        )
    state = read_model_file(path, "the training rule that writes it")
    config = state["model_config"]
    if "msc_scales" in config or state.get("meta", {}).get("stage") == "deeplab":
        model, meta = load_deeplab(path)
        kind = "deeplab"
    elif "head" in config:
        model, meta = load_model(path)
        kind = "classifier"
    else:
        raise SmafError(f"{path} is neither a DeepLab nor a classifier model file.")
    given = read_class_names(classes) if classes is not None else None
    names = resolve_class_names(model.num_classes, meta, given, path, str(classes))
    return Predictor(kind, model.eval(), meta, names)


@torch.no_grad()
def batch_logits(
    model: MSC, images: Sequence[np.ndarray], device: torch.device, flip: bool = False
) -> list[torch.Tensor]:
    """MSC logits of same-size images run as one batch: float32 ``[C+1, ⌈H/8⌉, ⌈W/8⌉]`` each.

    One image goes through :func:`~smaf.inference.infer_logits` itself; a batch computes
    the same per image (eval mode: no statistic crosses images), up to float rounding.
    """
    if len(images) == 1:
        return [infer_logits(model, images[0], device, flip)]
    x = torch.stack([normalize(im) for im in images]).to(device)  # [B, 3, H, W]
    logits = model(x).float()  # [B, K, h, w]
    if flip:
        logits = 0.5 * (logits + model(x.flip(-1)).float().flip(-1))
    return list(logits.cpu())
